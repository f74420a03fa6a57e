//! Label and field selectors, as `kubectl -l` and `--field-selector` send them.
use super::objects::{Object, Resource};

/// One label requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelReq {
    /// `k=v`, `k==v`
    Eq(String, String),
    /// `k!=v` (also true when the label is absent)
    NotEq(String, String),
    /// `k in (a,b)`
    In(String, Vec<String>),
    /// `k notin (a,b)` (also true when the label is absent)
    NotIn(String, Vec<String>),
    /// `k`
    Exists(String),
    /// `!k`
    NotExists(String),
}

/// One field requirement: `spec.nodeName=node-1`, `status.phase!=Running`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldReq {
    pub field: String,
    pub value: String,
    pub equal: bool,
}

/// Every requirement of a request's `labelSelector` and `fieldSelector` (all must hold).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    pub labels: Vec<LabelReq>,
    pub fields: Vec<FieldReq>,
}

impl Selector {
    /// Parses both selectors; the error is the API server's message for a bad request.
    pub fn parse(labels: Option<&str>, fields: Option<&str>) -> Result<Selector, String> {
        Ok(Selector {
            labels: labels.map(parse_labels).transpose()?.unwrap_or_default(),
            fields: fields.map(parse_fields).transpose()?.unwrap_or_default(),
        })
    }

    /// A field selector names a field `resource` cannot be selected by.
    pub fn check_fields(&self, resource: Resource) -> Result<(), String> {
        let probe = Object {
            resource,
            namespace: None,
            name: String::new(),
            labels: Default::default(),
            json: serde_json::Value::Null,
        };
        match self.fields.iter().find(|f| probe.field(&f.field).is_none()) {
            Some(f) => Err(format!(
                "field label not supported: {} (for {})",
                f.field,
                resource.plural()
            )),
            None => Ok(()),
        }
    }

    pub fn matches(&self, o: &Object) -> bool {
        self.labels.iter().all(|r| label_matches(r, o))
            && self
                .fields
                .iter()
                .all(|f| o.field(&f.field).is_some_and(|v| (v == f.value) == f.equal))
    }
}

fn label_matches(r: &LabelReq, o: &Object) -> bool {
    let get = |k: &str| o.labels.get(k).map(String::as_str);
    match r {
        LabelReq::Eq(k, v) => get(k) == Some(v),
        LabelReq::NotEq(k, v) => get(k) != Some(v),
        LabelReq::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
        LabelReq::NotIn(k, vs) => !get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
        LabelReq::Exists(k) => get(k).is_some(),
        LabelReq::NotExists(k) => get(k).is_none(),
    }
}

/// Splits on commas outside parentheses.
fn terms(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 316
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
}

fn valid_value(v: &str) -> bool {
    v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

fn parse_labels(s: &str) -> Result<Vec<LabelReq>, String> {
    let bad = |t: &str| format!("unable to parse requirement: {t:?}");
    terms(s)
        .into_iter()
        .map(|t| {
            let req = if let Some(k) = t.strip_prefix('!') {
                LabelReq::NotExists(k.trim().to_string())
            } else if let Some((k, v)) = t.split_once("!=") {
                LabelReq::NotEq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
                LabelReq::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, set)) = set_op(t, " notin ") {
                LabelReq::NotIn(k, set.ok_or_else(|| bad(t))?)
            } else if let Some((k, set)) = set_op(t, " in ") {
                LabelReq::In(k, set.ok_or_else(|| bad(t))?)
            } else {
                LabelReq::Exists(t.to_string())
            };
            let ok = match &req {
                LabelReq::Eq(k, v) | LabelReq::NotEq(k, v) => valid_key(k) && valid_value(v),
                LabelReq::In(k, vs) | LabelReq::NotIn(k, vs) => {
                    valid_key(k) && vs.iter().all(|v| valid_value(v))
                }
                LabelReq::Exists(k) | LabelReq::NotExists(k) => valid_key(k),
            };
            ok.then_some(req).ok_or_else(|| bad(t))
        })
        .collect()
}

/// `k in (a, b)` -> (k, Some([a, b])); `None` in the set when the parentheses are wrong.
fn set_op(t: &str, op: &str) -> Option<(String, Option<Vec<String>>)> {
    let (k, rest) = t.split_once(op)?;
    let set = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .map(|inner| {
            inner
                .split(',')
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .collect()
        });
    Some((k.trim().to_string(), set))
}

fn parse_fields(s: &str) -> Result<Vec<FieldReq>, String> {
    terms(s)
        .into_iter()
        .map(|t| {
            let (field, value, equal) = if let Some((k, v)) = t.split_once("!=") {
                (k, v, false)
            } else if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
                (k, v, true)
            } else {
                return Err(format!("invalid selector: {t:?}; can't understand {t:?}"));
            };
            Ok(FieldReq {
                field: field.trim().into(),
                value: value.trim().into(),
                equal,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(labels: &[(&str, &str)], node: &str) -> Object {
        Object {
            resource: Resource::Pods,
            namespace: Some("default".into()),
            name: "p".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            json: serde_json::json!({"metadata": {"name": "p", "namespace": "default"},
                "spec": {"nodeName": node, "hostNetwork": true}}),
        }
    }

    #[test]
    fn label_selectors_parse_like_kubectl_sends_them() {
        let s = Selector::parse(
            Some(
                "app.kubernetes.io/name=netpath-agent,tier!=db, env in (a, b),x notin (c),k,!gone",
            ),
            None,
        )
        .unwrap();
        assert_eq!(
            s.labels,
            [
                LabelReq::Eq("app.kubernetes.io/name".into(), "netpath-agent".into()),
                LabelReq::NotEq("tier".into(), "db".into()),
                LabelReq::In("env".into(), vec!["a".into(), "b".into()]),
                LabelReq::NotIn("x".into(), vec!["c".into()]),
                LabelReq::Exists("k".into()),
                LabelReq::NotExists("gone".into()),
            ]
        );
        assert_eq!(
            Selector::parse(Some("a==b"), None).unwrap().labels,
            [LabelReq::Eq("a".into(), "b".into())]
        );
        for bad in ["a=b c", "k in a", "a=(", "=x"] {
            assert!(Selector::parse(Some(bad), None).is_err(), "{bad}");
        }
        assert_eq!(
            Selector::parse(Some(""), None).unwrap(),
            Selector::default()
        );
    }

    #[test]
    fn selectors_match_labels_and_fields() {
        let o = obj(&[("app", "web"), ("env", "a")], "node-1");
        let yes = |l: &str, f: &str| Selector::parse(Some(l), Some(f)).unwrap().matches(&o);
        assert!(yes("app=web", ""));
        assert!(!yes("app=db", ""));
        assert!(yes("tier!=db", ""));
        assert!(yes("env in (a,b),!tier", ""));
        assert!(!yes("env notin (a)", ""));
        assert!(yes("", "spec.nodeName=node-1"));
        assert!(!yes("", "spec.nodeName=node-2"));
        assert!(yes(
            "app",
            "spec.nodeName!=node-2,metadata.namespace=default"
        ));
        assert!(yes("", "spec.hostNetwork=true"));
        assert!(yes("", "status.phase="), "an unset field is empty");
    }

    #[test]
    fn unsupported_fields_are_a_bad_request() {
        let s = Selector::parse(None, Some("spec.nodeName=n")).unwrap();
        assert!(s.check_fields(Resource::Pods).is_ok());
        let e = s.check_fields(Resource::Services).unwrap_err();
        assert!(
            e.contains("field label not supported: spec.nodeName"),
            "{e}"
        );
        assert!(Selector::parse(None, Some("nonsense")).is_err());
    }
}
