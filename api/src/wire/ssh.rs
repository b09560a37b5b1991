//! `boshctl ssh` and `boshctl scp`: BOSH's `POST /deployments/<name>/ssh`,
//! which makes (or removes) a short-lived user with the CLI's public key
//! on the targeted instances and answers where to connect.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What the ssh route does on each targeted instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SshCommand {
    /// Create the user with the public key; answer the address and host key.
    Setup,
    /// Remove the users `params.user_regex` names.
    Cleanup,
}

impl SshCommand {
    /// The word on the wire (also the agent's first `ssh` argument).
    pub fn as_str(self) -> &'static str {
        match self {
            SshCommand::Setup => "setup",
            SshCommand::Cleanup => "cleanup",
        }
    }
}

/// Which instances: BOSH's `target`. No `job`: every instance; `job`
/// alone: its instances; with `indexes` or `ids`: those of them (an
/// instance matches if its index is in `indexes` or its id in `ids`, which
/// is why the bosh CLI sends `GROUP/X` as both).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SshTarget {
    /// The instance group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// Instance indexes (as strings, as the bosh CLI sends them).
    #[serde(default)]
    pub indexes: Vec<String>,
    /// Instance ids.
    #[serde(default)]
    pub ids: Vec<String>,
}

/// Body of `POST /v1/deployments/<name>/ssh`, shaped as BOSH's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SshRequest {
    /// `setup` or `cleanup`.
    pub command: SshCommand,
    /// The instances.
    #[serde(default)]
    pub target: SshTarget,
    /// `user` and `public_key` (setup) or `user_regex` (cleanup).
    #[serde(default)]
    pub params: SshRequestParams,
}

/// `params` of an [`SshRequest`]; the agent receives them as they are.
pub type SshRequestParams = crate::agent::SshParams;

/// How an instance's setup or cleanup went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SshStatus {
    /// Done.
    Success,
    /// Not done; `error` says why.
    Failure,
}

/// One instance's answer in `POST /v1/deployments/<name>/ssh`: BOSH's
/// `{status, ip, host_public_key, index, id, job, command}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SshEntry {
    /// `setup` or `cleanup`.
    pub command: SshCommand,
    /// Whether it worked on this instance.
    pub status: SshStatus,
    /// The instance group.
    pub job: String,
    /// The instance's index.
    pub index: u32,
    /// The instance's id.
    pub id: String,
    /// The instance's first network address (setup).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ip: String,
    /// The VM's host key, `<type> <base64>` (setup).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host_public_key: String,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}

pub use crate::agent::{cleanup_prefix, is_ssh_user};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testing::round_trip;

    /// The request reads as the bosh CLI sends it (`deployment_name` and `password` are ignored).
    #[test]
    fn a_bosh_cli_setup_request_parses() {
        let body = r#"{"deployment_name":"d","target":{"job":"web","indexes":["0"],"ids":["0"]},
            "command":"setup","params":{"user":"bosh_abc","password":"","public_key":"ssh-ed25519 AAAA"}}"#;
        let r: SshRequest = serde_json::from_str(body).unwrap();
        assert_eq!(r.command, SshCommand::Setup);
        assert_eq!(r.target.job.as_deref(), Some("web"));
        assert_eq!(r.target.indexes, ["0"]);
        assert_eq!(r.params.user, "bosh_abc");
        assert_eq!(r.params.public_key, "ssh-ed25519 AAAA");
        let bad = serde_json::from_str::<SshRequest>(r#"{"command":"shell"}"#);
        assert!(bad.unwrap_err().to_string().contains("unknown variant"));
    }

    /// An answer entry has BOSH's field names; empty fields are left out.
    #[test]
    fn an_entry_has_boshs_fields() {
        let e = SshEntry {
            command: SshCommand::Setup,
            status: SshStatus::Success,
            job: "web".into(),
            index: 0,
            id: "4f1c".into(),
            ip: "10.0.0.5".into(),
            host_public_key: "ssh-ed25519 AAAA".into(),
            error: String::new(),
        };
        round_trip(
            &e,
            r#"{"command":"setup","status":"success","job":"web","index":0,"id":"4f1c","ip":"10.0.0.5","host_public_key":"ssh-ed25519 AAAA"}"#,
        );
    }

    /// Only `bosh_` names of safe characters are ssh users; cleanup takes `^` and such a prefix.
    #[test]
    fn ssh_users_and_cleanup_prefixes_are_restricted_to_bosh_names() {
        assert!(is_ssh_user("bosh_1f3a9c"));
        for bad in ["root", "vcap", "bosh_", "bosh_A", "bosh_a-b", "bosh_a b", "xbosh_a"] {
            assert!(!is_ssh_user(bad), "{bad}");
        }
        assert!(!is_ssh_user(&format!("bosh_{}", "a".repeat(28))), "longer than 32");
        assert_eq!(cleanup_prefix("^bosh_1f3a"), Some("bosh_1f3a"));
        assert_eq!(cleanup_prefix("^bosh_"), Some("bosh_"));
        for bad in ["bosh_1f3a", "^root", "^bosh_.*", "^vcap|bosh_", "^", ""] {
            assert_eq!(cleanup_prefix(bad), None, "{bad}");
        }
    }
}
