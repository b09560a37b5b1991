//! The local CPI's audit log: one JSON line per mutating call, appended to
//! `audit.log` in the CPI's directory, for tests and tools (the invariant
//! checker, `controllers/src/testing/invariants.rs`, reads it).
//!
//! A line says what was called (method, request id, agent id, cids), under
//! which fencing token (the call's `fence` argument), at which etcd revision when
//! the CPI was given a store to read it from ([`super::LocalCpi::with_audit_store`]),
//! and how it ended. Its sequence number and time are taken when the call
//! is admitted (after the fence check, before any effect), so sorting by
//! them gives the order in which calls were let through, even when a
//! slow call's line is written after a later one's. Sequence numbers are
//! per process (starting past the highest already in the file); several
//! processes sharing one directory are ordered by `at`.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The file name under the CPI directory.
pub const FILE: &str = "audit.log";

/// A fencing token as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditFence {
    /// The election's leader key.
    pub key: String,
    /// The token (the leader key's create revision).
    pub revision: i64,
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditResult {
    /// It succeeded.
    Ok,
    /// It failed (including a refusal by the fence check).
    Error,
}

/// One mutating call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AuditEntry {
    /// Order of admission within the writing process.
    pub seq: u64,
    /// The writing process.
    pub pid: u32,
    /// When the call was admitted.
    pub at: Option<DateTime<Utc>>,
    /// The CPI method (`create_vm`, `attach_disk`, ...).
    pub method: String,
    /// The create request id (`create_vm`, `create_disk`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The agent id (`create_vm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// The VM acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_cid: Option<String>,
    /// The disk acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_cid: Option<String>,
    /// The stemcell acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stemcell_cid: Option<String>,
    /// The snapshot acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_cid: Option<String>,
    /// The fencing token the call was made under (none outside a reconcile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<AuditFence>,
    /// The etcd revision read just before the call was admitted: every
    /// write committed before the call is at or below it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_revision: Option<i64>,
    /// How it ended.
    pub result: Option<AuditResult>,
    /// It was refused at admission (its fencing token was stale): it had
    /// no effect, and there was nothing for its intent to precede.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub refused: bool,
    /// The error, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The cid a create returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cid: Option<String>,
}

impl AuditEntry {
    /// An entry for `method`, to be filled in.
    pub fn call(method: &str) -> AuditEntry {
        AuditEntry { method: method.to_string(), ..AuditEntry::default() }
    }

    /// With a request id.
    pub fn request(mut self, id: &str) -> Self {
        self.request_id = Some(id.to_string());
        self
    }

    /// With an agent id.
    pub fn agent(mut self, id: &str) -> Self {
        self.agent_id = Some(id.to_string());
        self
    }

    /// With a VM cid.
    pub fn vm(mut self, cid: &str) -> Self {
        self.vm_cid = Some(cid.to_string());
        self
    }

    /// With a disk cid.
    pub fn disk(mut self, cid: &str) -> Self {
        self.disk_cid = Some(cid.to_string());
        self
    }

    /// With a stemcell cid.
    pub fn stemcell(mut self, cid: &str) -> Self {
        self.stemcell_cid = Some(cid.to_string());
        self
    }

    /// With a snapshot cid.
    pub fn snapshot(mut self, cid: &str) -> Self {
        self.snapshot_cid = Some(cid.to_string());
        self
    }

    /// Whether the call succeeded.
    pub fn ok(&self) -> bool {
        self.result == Some(AuditResult::Ok)
    }
}

/// What a call returned, as the log records it.
pub trait Outcome {
    /// The cid it created, if any.
    fn created(&self) -> Option<String>;
}

impl Outcome for String {
    fn created(&self) -> Option<String> {
        Some(self.clone())
    }
}

impl Outcome for () {
    fn created(&self) -> Option<String> {
        None
    }
}

/// The writer side, one per [`super::LocalCpi`].
pub(super) struct AuditLog {
    path: PathBuf,
    /// The next sequence number; also serializes admission in this process.
    pub(super) next: std::sync::Mutex<u64>,
}

impl AuditLog {
    /// The log of CPI directory `root`, continuing its numbering.
    pub(super) fn open(root: &Path) -> std::io::Result<AuditLog> {
        let path = root.join(FILE);
        let next = read_file(&path)?.iter().map(|e| e.seq + 1).max().unwrap_or(1);
        Ok(AuditLog { path, next: std::sync::Mutex::new(next) })
    }

    /// Appends one line (one `write`, so lines of concurrent writers,
    /// processes included, never interleave).
    pub(super) fn append(&self, entry: &AuditEntry) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?;
        f.write_all(&line)
    }
}

fn read_file(path: &Path) -> std::io::Result<Vec<AuditEntry>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    // Each line is appended whole, newline included, but a reader racing
    // a writer can see the first part of one: a last line without its
    // newline is still being written, not a record yet.
    let complete = text.rfind('\n').map_or("", |end| &text[..=end]);
    complete
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).map_err(|e| {
                std::io::Error::other(format!("{}: bad line {l:?}: {e}", path.display()))
            })
        })
        .collect()
}

/// Every entry of the audit log of CPI directory `root`, in order of
/// admission (by time, then process, then sequence number).
pub fn read(root: &Path) -> std::io::Result<Vec<AuditEntry>> {
    let mut all = read_file(&std::path::absolute(root)?.join(FILE))?;
    all.sort_by_key(|e| (e.at, e.pid, e.seq));
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line still being appended (no newline yet) is not read as a
    /// record, nor as a damaged one.
    #[test]
    fn a_line_being_written_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        log.append(&AuditEntry { seq: 1, ..AuditEntry::call("create_disk") }).unwrap();
        let mut f = std::fs::OpenOptions::new().append(true).open(dir.path().join(FILE)).unwrap();
        f.write_all(br#"{"seq":2,"pid":1,"at":"2026-"#).unwrap();
        let read = read(dir.path()).unwrap();
        assert_eq!(read.iter().map(|e| e.seq).collect::<Vec<_>>(), [1]);
    }
}
