//! What boshd and the agent say to each other: the bootstrap settings a new
//! VM reads (the registry's role) and the NATS message protocol.

pub mod bosh_env;
mod protocol;
mod settings;

pub use protocol::{
    Alert, ApplySpec, BlobRef, CompilePackage, CpuVitals, DiskUsage, DiskVitals, ErrandResult,
    Exception, ExecCommand, ExecResult, Heartbeat, JobRef, JobState, MAX_MESSAGE_BYTES, MemVitals,
    Method, PROTOCOL_VERSION, PackageRef, ProcessState, ProcessStatus, Reply, Request,
    RunScriptResult, SshParams, SshResult, StateReport, TaskHandle, Vitals, cleanup_prefix,
    is_ssh_user,
};
pub use settings::{BlobstoreSettings, DiskSettings, MbusSettings, NetworkSettings, Settings};

/// NATS subject an agent serves requests on.
pub fn request_subject(agent_id: &str) -> String {
    format!("agent.{agent_id}")
}

/// NATS subject an agent publishes heartbeats on.
pub fn heartbeat_subject(agent_id: &str) -> String {
    format!("hm.agent.heartbeat.{agent_id}")
}

/// NATS subject an agent publishes alerts on.
pub fn alert_subject(agent_id: &str) -> String {
    format!("hm.agent.alert.{agent_id}")
}
