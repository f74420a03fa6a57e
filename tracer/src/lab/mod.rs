//! The built-in lab: dual-stack multi-node "clusters" made of network namespaces, in the shape
//! of a real CNI (flannel, Calico, kube-router), healthy or reproducing a seed incident.
//!
//! [`topology::plan`] turns a scenario into pure data; [`apply`] executes it with `ip -batch`,
//! `bridge -batch`, sysctl writes and `nft -f`, after recording every namespace it is about to
//! create, so [`down`] also cleans up after a half-failed `up`. Everything the lab makes lives
//! inside its own namespaces: deleting them removes every link, route and rule.
mod addresses;
pub mod agents;
pub mod api;
pub mod cli;
pub mod cluster;
pub mod cri;
mod exec;
pub mod scenarios;
pub mod state;
pub mod topology;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

pub use scenarios::{Fault, Scenario, SCENARIOS};
pub use state::{
    Expectation, Family, Flavour, LabNode, LabPod, LabService, LabState, LabUnderlay, Outcome,
};
pub use topology::{plan, NsPlan, Plan, PlanContext};

/// Namespace prefix of the default lab.
pub const DEFAULT_PREFIX: &str = "np";

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("unknown scenario {name:?}; known: {}", known.join(", "))]
    UnknownScenario {
        name: String,
        known: Vec<&'static str>,
    },
    #[error("scenario {scenario} needs {min}..={max} nodes, not {got}")]
    Nodes {
        scenario: String,
        min: usize,
        max: usize,
        got: usize,
    },
    #[error("lab prefix {0:?} must be 1-16 lowercase letters or digits")]
    Prefix(String),
    #[error("a lab ({scenario}) is already recorded in {}; run `netpath lab down` first", path.display())]
    AlreadyUp { scenario: String, path: PathBuf },
    #[error("network namespace {0} already exists and the lab did not make it; remove it (`ip netns del {0}`) or use another prefix")]
    NamespaceExists(String),
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error("lab state {}: {source}", path.display())]
    State {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("lab state {} is not valid: {source}", path.display())]
    StateParse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("setting {path} in {netns}: {source}")]
    Sysctl {
        netns: String,
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Netns(#[from] crate::node::netns::NetnsError),
}

/// Where the lab keeps its state and how it names its namespaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabOptions {
    pub state_dir: PathBuf,
    pub prefix: String,
}

impl LabOptions {
    /// `state_dir`, else `$NETPATH_STATE`, else /run/netpath; prefix `np`.
    pub fn new(state_dir: Option<PathBuf>) -> Self {
        let state_dir = state_dir
            .or_else(|| {
                std::env::var_os(state::STATE_ENV)
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
            })
            .unwrap_or_else(|| PathBuf::from(state::DEFAULT_STATE_DIR));
        LabOptions {
            state_dir,
            prefix: DEFAULT_PREFIX.into(),
        }
    }
}

impl Default for LabOptions {
    fn default() -> Self {
        Self::new(None)
    }
}

#[derive(Debug, Clone)]
pub struct UpReport {
    pub state: LabState,
    pub elapsed: Duration,
}

#[derive(Debug, Clone)]
pub struct DownReport {
    /// Scenario that was up, `None` when no lab was recorded.
    pub scenario: Option<String>,
    /// Namespaces that existed and were deleted.
    pub removed: Vec<String>,
    pub elapsed: Duration,
}

#[derive(Debug, Clone)]
pub struct LabStatus {
    pub state: LabState,
    /// Namespaces the state lists that do not exist (someone deleted them, or `up` failed).
    pub missing: Vec<String>,
}

/// The scenario of that name, checked against `nodes` and the options' prefix: what `up`
/// refuses before it touches anything.
pub fn check(
    opts: &LabOptions,
    scenario: &str,
    nodes: usize,
) -> Result<&'static Scenario, LabError> {
    let sc = scenarios::find(scenario).ok_or_else(|| LabError::UnknownScenario {
        name: scenario.into(),
        known: scenarios::names(),
    })?;
    topology::plan(
        sc,
        &PlanContext {
            prefix: opts.prefix.clone(),
            nodes,
            run: 1,
        },
    )?;
    Ok(sc)
}

/// Brings `scenario` up with `nodes` nodes. Nothing is touched unless the scenario, the node
/// count and the prefix are valid and no lab is recorded.
pub fn up(opts: &LabOptions, scenario: &str, nodes: usize) -> Result<UpReport, LabError> {
    let sc = check(opts, scenario, nodes)?;
    if let Some(st) = state::load(&opts.state_dir)? {
        return Err(LabError::AlreadyUp {
            scenario: st.scenario,
            path: state::state_file(&opts.state_dir),
        });
    }
    // Only the flip scenario depends on the run number; the counter survives `down`.
    let run = if sc.fault == Some(Fault::ServiceFamilyFlip) {
        state::next_run(&opts.state_dir, sc.name)?
    } else {
        1
    };
    let plan = topology::plan(
        sc,
        &PlanContext {
            prefix: opts.prefix.clone(),
            nodes,
            run,
        },
    )?;
    apply(opts, &plan)
}

/// Executes a plan. The state (listing every namespace) is written before anything is made;
/// on failure it stays with `complete: false` and [`down`] removes whatever exists.
pub fn apply(opts: &LabOptions, plan: &Plan) -> Result<UpReport, LabError> {
    let start = Instant::now();
    if let Some(st) = state::load(&opts.state_dir)? {
        return Err(LabError::AlreadyUp {
            scenario: st.scenario,
            path: state::state_file(&opts.state_dir),
        });
    }
    if let Some(taken) = plan
        .state
        .namespaces
        .iter()
        .find(|n| crate::node::netns::by_name(n).is_ok())
    {
        return Err(LabError::NamespaceExists(taken.clone()));
    }
    let mut st = plan.state.clone();
    st.complete = false;
    st.made = Some(Vec::new());
    state::save(&opts.state_dir, &st)?;
    let added = exec::add_namespaces(plan);
    // What it made is recorded before anything goes into it (after a failed add too: none of
    // the names existed before, checked above): `down` removes those, and only those.
    st.made = Some(cookies(&st.namespaces));
    state::save(&opts.state_dir, &st)?;
    added?;
    exec::apply(plan)?;
    st.complete = true;
    state::save(&opts.state_dir, &st)?;
    Ok(UpReport {
        state: st,
        elapsed: start.elapsed(),
    })
}

/// Deletes every namespace the recorded lab lists (complete or not) and forgets the lab.
pub fn down(opts: &LabOptions) -> Result<DownReport, LabError> {
    let start = Instant::now();
    // The lab's Kubernetes API server first (also one left without a state); a failure to
    // stop it is reported once the namespaces are gone.
    let api = api::stop(&opts.state_dir);
    let cri = cri::stop(&opts.state_dir);
    let recorded = state::load(&opts.state_dir);
    let agents = agents::stop(
        &opts.state_dir,
        recorded.as_ref().ok().and_then(Option::as_ref),
    );
    let Some(st) = recorded? else {
        api?;
        cri?;
        agents?;
        return Ok(DownReport {
            scenario: None,
            removed: Vec::new(),
            elapsed: start.elapsed(),
        });
    };
    let removed = exec::delete_namespaces(&ours(&st))?;
    state::remove(&opts.state_dir)?;
    api?;
    cri?;
    agents?;
    Ok(DownReport {
        scenario: Some(st.scenario),
        removed,
        elapsed: start.elapsed(),
    })
}

/// The cookies of those of `names` that exist.
fn cookies(names: &[String]) -> Vec<u64> {
    names
        .iter()
        .filter_map(|n| crate::node::netns::NetnsRef::parse(n).ok()?.cookie().ok())
        .collect()
}

/// Those of the state's namespaces that the lab made: named `PREFIX-...` by its own prefix,
/// and (in a state that records them) with a cookie `up` recorded. Anything else a state
/// file lists (edited, or written by someone else) is left alone.
fn ours(st: &LabState) -> Vec<String> {
    let named = |n: &&String| {
        topology::valid_prefix(&st.prefix)
            && n.strip_prefix(&st.prefix)
                .is_some_and(|rest| rest.len() > 1 && rest.starts_with('-'))
    };
    let named: Vec<String> = st.namespaces.iter().filter(named).cloned().collect();
    let Some(made) = &st.made else {
        return named;
    };
    named
        .into_iter()
        .filter(|n| {
            crate::node::netns::NetnsRef::parse(n)
                .and_then(|r| r.cookie())
                .is_ok_and(|c| made.contains(&c))
        })
        .collect()
}

/// The recorded lab, `None` when none is up.
pub fn status(opts: &LabOptions) -> Result<Option<LabStatus>, LabError> {
    Ok(state::load(&opts.state_dir)?.map(|state| {
        let missing = state
            .namespaces
            .iter()
            .filter(|n| crate::node::netns::by_name(n).is_err())
            .cloned()
            .collect();
        LabStatus { state, missing }
    }))
}
