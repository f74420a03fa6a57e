//! What the tracer needs from the running kernel's BTF: struct field offsets for the programs
//! that read `sk_buff`s through tracepoints, and the names of `enum skb_drop_reason` values.
//! Both differ between kernel versions, so they are read at load time, never compiled in.
use std::{collections::HashMap, path::Path};

use btf_rs::{Btf, Type};
use tracer_common::{KernelOffsets, NeighOffsets, RouteOffsets};

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("kernel BTF not available at {path} ({source}); netpath needs a kernel built with CONFIG_DEBUG_INFO_BTF")]
    Missing { path: String, source: btf_rs::Error },
    #[error("kernel BTF has no struct {0}")]
    NoStruct(String),
    #[error("kernel BTF: struct {strukt} has no field {field}")]
    NoField { strukt: String, field: String },
    #[error("kernel BTF: {0}")]
    Other(#[from] btf_rs::Error),
}

/// The running kernel's BTF and what netpath derives from it.
pub struct KernelBtf {
    btf: Btf,
}

impl KernelBtf {
    pub fn load() -> Result<Self, BtfError> {
        Self::from_file(Path::new(VMLINUX_BTF))
    }

    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let btf = Btf::from_file(path).map_err(|source| BtfError::Missing {
            path: path.display().to_string(),
            source,
        })?;
        Ok(KernelBtf { btf })
    }

    fn find_struct(&self, name: &str) -> Result<btf_rs::Struct, BtfError> {
        for ty in self.btf.resolve_types_by_name(name).unwrap_or_default() {
            if let Type::Struct(s) = ty {
                return Ok(s);
            }
        }
        Err(BtfError::NoStruct(name.into()))
    }

    /// Strips typedefs and qualifiers down to a struct or union.
    fn as_struct(&self, mut ty: Type) -> Option<btf_rs::Struct> {
        for _ in 0..16 {
            match ty {
                Type::Struct(s) | Type::Union(s) => return Some(s),
                Type::Typedef(_)
                | Type::Volatile(_)
                | Type::Const(_)
                | Type::Restrict(_)
                | Type::TypeTag(_) => {
                    let btf_ty = ty.as_btf_type()?;
                    ty = self.btf.resolve_chained_type(btf_ty).ok()?;
                }
                _ => return None,
            }
        }
        None
    }

    /// Byte offset of `field` in `s`, looking through anonymous structs and unions.
    fn field_in(&self, s: &btf_rs::Struct, field: &str, depth: u32) -> Option<(u32, Type)> {
        if depth > 8 {
            return None;
        }
        for m in &s.members {
            let name = self.btf.resolve_name(m).unwrap_or_default();
            let ty = self.btf.resolve_chained_type(m).ok()?;
            if name == field {
                return Some((m.bit_offset() / 8, ty));
            }
            if name.is_empty() {
                if let Some(inner) = self.as_struct(ty) {
                    if let Some((off, t)) = self.field_in(&inner, field, depth + 1) {
                        return Some((m.bit_offset() / 8 + off, t));
                    }
                }
            }
        }
        None
    }

    /// Offset of a dotted field path (`ns.inum`) inside `struct strukt`.
    pub fn offset_of(&self, strukt: &str, path: &str) -> Result<u32, BtfError> {
        let err = || BtfError::NoField {
            strukt: strukt.into(),
            field: path.into(),
        };
        let mut s = self.find_struct(strukt)?;
        let mut total = 0;
        let parts: Vec<&str> = path.split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            let (off, ty) = self.field_in(&s, part, 0).ok_or_else(err)?;
            total += off;
            if i + 1 < parts.len() {
                s = self.as_struct(ty).ok_or_else(err)?;
            }
        }
        Ok(total)
    }

    /// Every offset the tracepoint programs use.
    pub fn kernel_offsets(&self) -> Result<KernelOffsets, BtfError> {
        Ok(KernelOffsets {
            valid: 1,
            skb_head: self.offset_of("sk_buff", "head")?,
            skb_data: self.offset_of("sk_buff", "data")?,
            skb_len: self.offset_of("sk_buff", "len")?,
            skb_tail: self.offset_of("sk_buff", "tail")?,
            skb_mac_header: self.offset_of("sk_buff", "mac_header")?,
            skb_network_header: self.offset_of("sk_buff", "network_header")?,
            skb_protocol: self.offset_of("sk_buff", "protocol")?,
            skb_dev: self.offset_of("sk_buff", "dev")?,
            skb_sk: self.offset_of("sk_buff", "sk")?,
            dev_ifindex: self.offset_of("net_device", "ifindex")?,
            // possible_net_t holds a single `net` pointer.
            dev_nd_net: self.offset_of("net_device", "nd_net")?,
            net_ns_inum: self.offset_of("net", "ns.inum")?,
            sk_net: self.offset_of("sock", "__sk_common.skc_net")?,
            // A non-zero vlan_proto means a tag only where `vlan_all` exists (Linux 6.1+;
            // before, the `vlan_present` bit said so and the protocol could be stale).
            skb_vlan_proto: self
                .offset_of("sk_buff", "vlan_all")
                .and_then(|_| self.offset_of("sk_buff", "vlan_proto"))
                .unwrap_or(0),
            skb_vlan_tci: self
                .offset_of("sk_buff", "vlan_all")
                .and_then(|_| self.offset_of("sk_buff", "vlan_tci"))
                .unwrap_or(0),
        })
    }

    /// Offsets the route-lookup tracepoints read (flowi4/flowi6, fib_nh_common, fib_info,
    /// fib6_result, fib6_table, the IPv6 null entry, device name, task namespace).
    pub fn route_offsets(&self) -> Result<RouteOffsets, BtfError> {
        let o = |s: &str, f: &str| self.offset_of(s, f);
        Ok(RouteOffsets {
            valid: 1,
            fl_oif: o("flowi4", "__fl_common.flowic_oif")?,
            fl_iif: o("flowi4", "__fl_common.flowic_iif")?,
            fl_proto: o("flowi4", "__fl_common.flowic_proto")?,
            fl4_saddr: o("flowi4", "saddr")?,
            fl4_daddr: o("flowi4", "daddr")?,
            fl4_dport: o("flowi4", "uli.ports.dport")?,
            fl4_sport: o("flowi4", "uli.ports.sport")?,
            fl6_saddr: o("flowi6", "saddr")?,
            fl6_daddr: o("flowi6", "daddr")?,
            fl6_dport: o("flowi6", "uli.ports.dport")?,
            fl6_sport: o("flowi6", "uli.ports.sport")?,
            nhc_dev: o("fib_nh_common", "nhc_dev")?,
            nhc_family: o("fib_nh_common", "nhc_family")?,
            nhc_gw_family: o("fib_nh_common", "nhc_gw_family")?,
            nhc_gw: o("fib_nh_common", "nhc_gw")?,
            fib_nh_parent: o("fib_nh", "nh_parent")?,
            fib_info_type: o("fib_info", "fib_type")?,
            fib_info_net: o("fib_info", "fib_net")?,
            f6res_nh: o("fib6_result", "nh")?,
            f6res_f6i: o("fib6_result", "f6i")?,
            f6res_type: o("fib6_result", "fib6_type")?,
            f6table_id: o("fib6_table", "tb6_id")?,
            net_fib6_null_entry: o("net", "ipv6.fib6_null_entry")?,
            dev_name: o("net_device", "name")?,
            task_nsproxy: o("task_struct", "nsproxy")?,
            nsproxy_net_ns: o("nsproxy", "net_ns")?,
        })
    }

    /// Offsets the neighbour tracepoints read.
    pub fn neigh_offsets(&self) -> Result<NeighOffsets, BtfError> {
        let o = |f: &str| self.offset_of("neighbour", f);
        Ok(NeighOffsets {
            valid: 1,
            tbl: o("tbl")?,
            tbl_family: self.offset_of("neigh_table", "family")?,
            nud_state: o("nud_state")?,
            ha: o("ha")?,
            dev: o("dev")?,
            primary_key: o("primary_key")?,
        })
    }

    /// Whether the kernel's BTF has a struct of this name (`tcx_entry`).
    pub fn has_struct(&self, name: &str) -> bool {
        self.find_struct(name).is_ok()
    }

    /// Whether `enum enum_name` has a member `member` (`bpf_attach_type`, `BPF_TCX_INGRESS`).
    pub fn has_enum_member(&self, enum_name: &str, member: &str) -> bool {
        self.btf
            .resolve_types_by_name(enum_name)
            .unwrap_or_default()
            .iter()
            .any(|t| match t {
                Type::Enum(e) => e
                    .members
                    .iter()
                    .any(|m| self.btf.resolve_name(m).is_ok_and(|n| n == member)),
                _ => false,
            })
    }

    /// The arguments a BTF tracepoint (tp_btf) program receives, as C types
    /// (`struct sk_buff *`, `enum skb_drop_reason`, `u32`): the parameters of the kernel's
    /// `btf_trace_NAME` typedef after its context pointer. `None` when there is no such
    /// tracepoint.
    pub fn tracepoint_args(&self, name: &str) -> Option<Vec<String>> {
        let typedef = self
            .btf
            .resolve_types_by_name(&format!("btf_trace_{name}"))
            .ok()?
            .into_iter()
            .find(|t| matches!(t, Type::Typedef(_)))?;
        let ptr = self.btf.resolve_chained_type(typedef.as_btf_type()?).ok()?;
        let Type::FuncProto(proto) = self.btf.resolve_chained_type(ptr.as_btf_type()?).ok()? else {
            return None;
        };
        Some(
            proto
                .parameters
                .iter()
                .skip(1)
                .map(|p| match self.btf.resolve_chained_type(p) {
                    Ok(ty) => self.c_type(ty, 0),
                    Err(_) => "?".into(),
                })
                .collect(),
        )
    }

    /// A type as C spells it, qualifiers and pointers included (typedef names kept).
    fn c_type(&self, ty: Type, depth: u32) -> String {
        let name = |t: &dyn btf_rs::BtfType| self.btf.resolve_name(t).unwrap_or_default();
        let inner = |t: &dyn btf_rs::BtfType| match self.btf.resolve_chained_type(t) {
            Ok(next) if depth < 8 => self.c_type(next, depth + 1),
            _ => "void".to_string(),
        };
        match &ty {
            Type::Void => "void".into(),
            Type::Ptr(p) => format!("{} *", inner(p)),
            Type::Const(c) => format!("const {}", inner(c)),
            Type::Volatile(v) => format!("volatile {}", inner(v)),
            Type::Struct(s) => format!("struct {}", name(s)),
            Type::Union(u) => format!("union {}", name(u)),
            Type::Enum(e) => format!("enum {}", name(e)),
            Type::Enum64(e) => format!("enum {}", name(e)),
            Type::Int(i) => name(i),
            Type::Typedef(t) => name(t),
            Type::FuncProto(_) => "function".into(),
            other => other
                .as_btf_type()
                .map(name)
                .unwrap_or_else(|| other.name().to_string()),
        }
    }

    /// Whether the kernel's BTF describes a function of this name (fentry targets).
    pub fn has_function(&self, name: &str) -> bool {
        self.btf
            .resolve_types_by_name(name)
            .unwrap_or_default()
            .iter()
            .any(|t| matches!(t, Type::Func(_)))
    }

    /// Which argument (0-based) of kernel function `name` is a `struct sk_buff *`, from its BTF
    /// prototype (the first such argument); None when it takes none or BTF does not know it.
    pub fn skb_arg_position(&self, name: &str) -> Option<usize> {
        let func = self
            .btf
            .resolve_types_by_name(name)
            .ok()?
            .into_iter()
            .find_map(|t| match t {
                Type::Func(f) => Some(f),
                _ => None,
            })?;
        let Type::FuncProto(proto) = self.btf.resolve_chained_type(&func).ok()? else {
            return None;
        };
        proto.parameters.iter().position(|p| {
            self.btf
                .resolve_chained_type(p)
                .is_ok_and(|ty| self.c_type(ty, 0) == "struct sk_buff *")
        })
    }

    /// Names of kernel functions in BTF matching a glob (at most `limit`).
    pub fn functions_matching(&self, pattern: &glob::Pattern, limit: usize) -> Vec<String> {
        let mut out = Vec::new();
        for name in super::ksyms::Kallsyms::load().names() {
            if out.len() >= limit {
                break;
            }
            if pattern.matches(name) && !out.iter().any(|n| n == name) && self.has_function(name) {
                out.push(name.to_string());
            }
        }
        out
    }

    /// `enum skb_drop_reason` as value → name without the `SKB_DROP_REASON_` prefix.
    pub fn drop_reasons(&self) -> DropReasons {
        let mut names = HashMap::new();
        for ty in self
            .btf
            .resolve_types_by_name("skb_drop_reason")
            .unwrap_or_default()
        {
            if let Type::Enum(e) = ty {
                for m in &e.members {
                    if let Ok(name) = self.btf.resolve_name(m) {
                        names.insert(m.val(), name);
                    }
                }
            }
        }
        DropReasons::from_enum(names)
    }
}

/// Drop reason numbers of the running kernel and their names.
#[derive(Debug, Clone, Default)]
pub struct DropReasons {
    names: HashMap<u32, String>,
    pub not_dropped_yet: Option<u32>,
    pub consumed: Option<u32>,
}

impl DropReasons {
    /// Builds the table from the raw enum members (`SKB_DROP_REASON_NO_SOCKET` → `NO_SOCKET`).
    pub fn from_enum(raw: HashMap<u32, String>) -> Self {
        let mut out = DropReasons::default();
        for (val, name) in raw {
            match name.as_str() {
                "SKB_NOT_DROPPED_YET" => out.not_dropped_yet = Some(val),
                "SKB_CONSUMED" => out.consumed = Some(val),
                _ => {}
            }
            let short = name
                .strip_prefix("SKB_DROP_REASON_")
                .unwrap_or(&name)
                .to_string();
            out.names.insert(val, short);
        }
        out
    }

    /// The reason's name, or `reason#N` for a value this kernel does not name.
    pub fn name(&self, value: u32) -> String {
        self.names
            .get(&value)
            .cloned()
            .unwrap_or_else(|| format!("reason#{value}"))
    }

    /// How many values the kernel's enum has (0: no `enum skb_drop_reason` in its BTF).
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn value(&self, name: &str) -> Option<u32> {
        self.names
            .iter()
            .find(|(_, n)| n.as_str() == name)
            .map(|(v, _)| *v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_reason_names_lose_their_prefix_and_special_values_are_found() {
        let raw = HashMap::from([
            (0, "SKB_NOT_DROPPED_YET".to_string()),
            (1, "SKB_CONSUMED".to_string()),
            (5, "SKB_DROP_REASON_NO_SOCKET".to_string()),
        ]);
        let r = DropReasons::from_enum(raw);
        assert_eq!(r.name(5), "NO_SOCKET");
        assert_eq!(r.name(99), "reason#99");
        assert_eq!(r.not_dropped_yet, Some(0));
        assert_eq!(r.consumed, Some(1));
        assert_eq!(r.value("NO_SOCKET"), Some(5));
    }

    #[test]
    fn offsets_resolve_on_the_running_kernel() {
        // netpath needs kernel BTF everywhere it runs; a machine without it fails here.
        let btf = KernelBtf::load().unwrap_or_else(|e| panic!("{VMLINUX_BTF}: {e}"));
        let o = btf.kernel_offsets().expect("offsets");
        assert_eq!(o.valid, 1);
        // sk_buff starts with the next/prev pointers; these fields come after them.
        assert!(
            o.skb_head > 16 && o.skb_len > 16 && o.skb_dev >= 16,
            "{o:?}"
        );
        assert_ne!(o.skb_mac_header, o.skb_network_header);
        let r = btf.route_offsets().expect("route offsets");
        assert!(
            r.fl4_daddr > r.fl4_saddr && r.fl6_saddr > r.fl6_daddr,
            "{r:?}"
        );
        assert_eq!(
            r.fl4_sport,
            r.fl4_dport + 2,
            "flowi_uli.ports is dport, sport"
        );
        let n = btf.neigh_offsets().expect("neigh offsets");
        assert!(n.primary_key > n.dev, "{n:?}");
        assert!(btf.has_function("ip_rcv"));
        let reasons = btf.drop_reasons();
        assert!(reasons.value("NO_SOCKET").is_some());
        assert!(reasons.value("IP_INNOROUTES").is_some());
    }
}
