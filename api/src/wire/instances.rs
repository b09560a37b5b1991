//! A deployment's instances: the listing with their agents' live state,
//! lifecycle actions (`start`, `stop`, `restart`, `recreate`), and logs.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Object;
use crate::agent::{JobState, ProcessStatus};
use crate::objects::InstanceSpec;

/// An operator action on instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceAction {
    /// Run the jobs (`boshctl start`).
    Start,
    /// Stop the jobs, keep the VM (`boshctl stop`).
    Stop,
    /// Delete the VM, keep the persistent disk (`boshctl stop --hard`).
    StopHard,
    /// Stop the jobs, then start them (`boshctl restart`).
    Restart,
    /// Replace the VM and start the jobs (`boshctl recreate`).
    Recreate,
}

/// Body of `POST /v1/deployments/<name>/instances/actions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionRequest {
    /// What to do.
    pub action: InstanceAction,
    /// `GROUP` (each of its instances), `GROUP/INDEX` or `GROUP/ID`;
    /// absent (or empty), every instance of the deployment.
    #[serde(default)]
    pub target: Option<String>,
}

/// Query of `GET /v1/deployments/<name>/instances`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InstancesQuery {
    /// Ask each instance's agent for its processes (`boshctl instances --ps`).
    #[serde(default)]
    pub ps: bool,
}

/// How an agent is doing, as the director heard it just now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AgentState {
    /// Every process runs.
    Running,
    /// Processes are being started and none has failed.
    Starting,
    /// A process crashed or could not be started; it is being restarted.
    Failing,
    /// Nothing runs, on purpose.
    Stopped,
    /// The agent did not answer in time (5 s).
    #[serde(rename = "unresponsive agent")]
    Unresponsive,
}

impl AgentState {
    /// The word on the wire and in `boshctl`'s tables, e.g. `running`,
    /// `unresponsive agent`.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::Running => "running",
            AgentState::Starting => "starting",
            AgentState::Failing => "failing",
            AgentState::Stopped => "stopped",
            AgentState::Unresponsive => "unresponsive agent",
        }
    }
}

impl From<JobState> for AgentState {
    fn from(s: JobState) -> AgentState {
        match s {
            JobState::Running => AgentState::Running,
            JobState::Starting => AgentState::Starting,
            JobState::Failing => AgentState::Failing,
            JobState::Stopped => AgentState::Stopped,
        }
    }
}

impl std::fmt::Display for AgentState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an instance's agent reported when asked (`?ps=true`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentReport {
    /// The instance's state as a whole.
    pub state: AgentState,
    /// Every supervised process (empty when the agent did not answer).
    #[serde(default)]
    pub processes: Vec<ProcessStatus>,
}

/// One instance in `GET /v1/deployments/<name>/instances`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceEntry {
    /// The Instance object, as stored: its placement (`spec.group`,
    /// `spec.id`, `spec.index`, `spec.az`, `spec.networks`) and what the
    /// controllers observed (`status.phase`, `status.health`,
    /// `status.vmCid`, ...).
    pub instance: Object<InstanceSpec>,
    /// Its agent's live report: only with `ps`, and only for instances
    /// that have a VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentReport>,
}

/// Body of `POST /v1/deployments/<name>/logs`; the answer is a gzipped
/// tarball of the instance's logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogsRequest {
    /// One instance: `GROUP/INDEX` or `GROUP/ID`.
    pub target: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ObjectMeta;
    use crate::agent::ProcessState;
    use crate::objects::InstanceNetwork;
    use crate::wire::testing::round_trip;

    fn instance() -> Object<InstanceSpec> {
        let mut i = Object::new(
            ObjectMeta::scoped("d", "web/4a1b"),
            InstanceSpec {
                group: "web".into(),
                id: "4a1b".into(),
                index: 0,
                az: Some("z1".into()),
                networks: vec![InstanceNetwork {
                    name: "default".into(),
                    ip: "10.0.0.5".into(),
                    ..Default::default()
                }],
                ..Default::default()
            },
        );
        i.status.phase = Some(crate::objects::InstancePhase::Running);
        i.status.vm_cid = Some("vm-1".into());
        i
    }

    /// An entry keeps its shape with and without the agent's report.
    #[test]
    fn instance_entries_round_trip() {
        let obj = serde_json::to_string(&instance()).unwrap();
        round_trip(
            &InstanceEntry { instance: instance(), agent: None },
            &format!(r#"{{"instance":{obj}}}"#),
        );
        round_trip(
            &InstanceEntry {
                instance: instance(),
                agent: Some(AgentReport {
                    state: AgentState::Running,
                    processes: vec![ProcessStatus {
                        name: "nginx".into(),
                        job: "web".into(),
                        state: ProcessState::Running,
                        restarts: 0,
                        pid: Some(42),
                    }],
                }),
            },
            &format!(
                r#"{{"instance":{obj},"agent":{{"state":"running","processes":[{{"name":"nginx","job":"web","state":"running","restarts":0,"pid":42}}]}}}}"#
            ),
        );
        round_trip(
            &AgentReport { state: AgentState::Unresponsive, processes: vec![] },
            r#"{"state":"unresponsive agent","processes":[]}"#,
        );
    }

    /// Requests keep the shape `boshctl` sent; the action names are kebab-case.
    #[test]
    fn requests_round_trip() {
        round_trip(
            &ActionRequest { action: InstanceAction::StopHard, target: Some("web/0".into()) },
            r#"{"action":"stop-hard","target":"web/0"}"#,
        );
        round_trip(
            &ActionRequest { action: InstanceAction::Restart, target: None },
            r#"{"action":"restart","target":null}"#,
        );
        let r: ActionRequest = serde_json::from_str(r#"{"action":"recreate"}"#).unwrap();
        assert_eq!(r.target, None);
        round_trip(&LogsRequest { target: "web/0".into() }, r#"{"target":"web/0"}"#);
    }

    /// Every job and process state an agent reports is shown as the word it has on the wire.
    #[test]
    fn agent_states_are_the_agents_words() {
        for s in [JobState::Running, JobState::Starting, JobState::Failing, JobState::Stopped] {
            let agent = serde_json::to_value(s).unwrap();
            assert_eq!(serde_json::to_value(AgentState::from(s)).unwrap(), agent);
            assert_eq!(AgentState::from(s).as_str(), agent.as_str().unwrap());
        }
        for p in [
            ProcessState::Running,
            ProcessState::Starting,
            ProcessState::Failing,
            ProcessState::Stopped,
        ] {
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
        }
    }
}
