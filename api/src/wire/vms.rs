//! The VMs the director made, with their agents' state, and commands run
//! on them through their agents (`boshctl vms`, `boshctl exec`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::AgentState;
use crate::agent::Vitals;

/// Query of `GET /v1/vms`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VmQuery {
    /// Only this deployment's VMs; absent, every VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    /// Ask each agent for its vitals (load, CPU, memory, disks).
    #[serde(default)]
    pub vitals: bool,
}

/// One VM in `GET /v1/vms`: an instance's VM or a compilation VM in use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct VmEntry {
    /// The deployment it belongs to.
    pub deployment: String,
    /// `group/id` for an instance, `compilation/<package>` for a compile VM.
    pub instance: String,
    /// The VM's id in the CPI.
    pub vm_cid: String,
    /// Its agent's id (what `exec` takes).
    pub agent_id: String,
    /// Its addresses.
    pub ips: Vec<String>,
    /// Its availability zone (empty for compile VMs).
    pub az: String,
    /// What its agent said when asked just now.
    pub state: AgentState,
    /// Its vitals, when asked for and the agent answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vitals: Option<Vitals>,
}

/// Body of `POST /v1/vms/<agent-id>/exec`; the answer is an
/// [`ExecResult`](crate::agent::ExecResult).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ExecRequest {
    /// The program and its arguments (no shell).
    pub command: Vec<String>,
    /// Seconds before the agent kills it; absent, the agent's default.
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::{CpuVitals, DiskUsage, DiskVitals, ExecResult, MemVitals};
    use crate::wire::testing::round_trip;

    fn vm(vitals: Option<Vitals>) -> VmEntry {
        VmEntry {
            deployment: "d".into(),
            instance: "web/0e6b".into(),
            vm_cid: "vm-1".into(),
            agent_id: "a-1".into(),
            ips: vec!["10.0.0.5".into()],
            az: "z1".into(),
            state: AgentState::Running,
            vitals,
        }
    }

    /// A VM keeps the shape of boshd's `VmEntry`, vitals included.
    #[test]
    fn vms_round_trip() {
        let head = r#""deployment":"d","instance":"web/0e6b","vm_cid":"vm-1","agent_id":"a-1","ips":["10.0.0.5"],"az":"z1","state":"running""#;
        round_trip(&vm(None), &format!("{{{head}}}"));
        let vitals = Vitals {
            load: [0.5, 0.25, 0.0],
            cpu: CpuVitals { user: 1.5, sys: 0.5, wait: 0.0 },
            mem: MemVitals { kb: 1024, percent: 12.5 },
            swap: MemVitals { kb: 0, percent: 0.0 },
            disk: DiskVitals {
                system: DiskUsage { percent: 40.0, inode_percent: 3.0 },
                ephemeral: DiskUsage { percent: 1.0, inode_percent: 0.5 },
                persistent: None,
            },
        };
        let v = r#""vitals":{"load":[0.5,0.25,0.0],"cpu":{"user":1.5,"sys":0.5,"wait":0.0},"mem":{"kb":1024,"percent":12.5},"swap":{"kb":0,"percent":0.0},"disk":{"system":{"percent":40.0,"inode_percent":3.0},"ephemeral":{"percent":1.0,"inode_percent":0.5},"persistent":null}}"#;
        round_trip(&vm(Some(vitals)), &format!("{{{head},{v}}}"));
    }

    /// `exec` keeps the shape `boshctl` sent and the agent answered.
    #[test]
    fn exec_round_trips() {
        round_trip(
            &ExecRequest { command: vec!["true".into()], timeout_secs: None },
            r#"{"command":["true"],"timeout_secs":null}"#,
        );
        let r: ExecRequest = serde_json::from_str(r#"{"command":["true"]}"#).unwrap();
        assert_eq!(r.timeout_secs, None);
        round_trip(
            &ExecResult { exit_code: 0, stdout: "hi\n".into(), stderr: String::new() },
            r#"{"exit_code":0,"stdout":"hi\n","stderr":""}"#,
        );
    }
}
