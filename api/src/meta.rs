//! Object metadata and status conditions, shaped like Kubernetes' so that
//! tools and people who know `kubectl get -o yaml` can read them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::objects::condition::{ConditionType, Reason};
use crate::objects::finalizer::Finalizer;

/// Identity and bookkeeping shared by every object.
///
/// `generation`, `resource_version` and `status_revision` are never stored:
/// the store fills them from etcd revisions on every read, so they cannot
/// drift from the truth (a generation is the spec key's `mod_revision`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    /// Unique within the kind (and the deployment, for deployment-scoped
    /// kinds). May contain `/` where BOSH identifies a thing by two parts,
    /// e.g. a release `nginx/1.2.0` or a config `cloud/default`.
    pub name: String,
    /// The deployment a scoped object (Instance, Disk) belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    /// Assigned once at creation; survives updates, differs across
    /// delete-and-recreate of the same name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// Identifying key/value pairs, used for selection.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Non-identifying key/value pairs for tools.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Controllers that must finish clean-up before the object disappears:
    /// boshd's `bosh.io/instances`, `bosh.io/vm` and `bosh.io/stemcell-cpi`
    /// (see `Finalizer`), or another tool's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finalizers: Vec<String>,
    /// Set when deletion was requested while finalizers were pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<DateTime<Utc>>,
    /// When the object was first created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<DateTime<Utc>>,
    /// The spec key's etcd `mod_revision`: bumps on every spec change.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: i64,
    /// Same as `generation`; the precondition for a compare-and-swap of the
    /// spec. Kept separately so clients copying Kubernetes habits find it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub resource_version: i64,
    /// The status key's etcd `mod_revision` (0 when no status was written);
    /// the precondition for a compare-and-swap of the status.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub status_revision: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

impl ObjectMeta {
    /// Metadata for a new object of the given name.
    pub fn named(name: impl Into<String>) -> Self {
        ObjectMeta { name: name.into(), ..Default::default() }
    }

    /// Metadata for a new deployment-scoped object.
    pub fn scoped(deployment: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectMeta { name: name.into(), deployment: Some(deployment.into()), ..Default::default() }
    }

    /// The revision-derived fields, cleared before a value is written so that
    /// etcd stays the only source of them.
    #[cfg(feature = "store")]
    pub(crate) fn strip_revisions(&mut self) {
        self.generation = 0;
        self.resource_version = 0;
        self.status_revision = 0;
    }

    /// Whether deletion was requested.
    pub fn is_deleting(&self) -> bool {
        self.deletion_timestamp.is_some()
    }

    /// Whether `f` is among the finalizers.
    pub fn has_finalizer(&self, f: Finalizer) -> bool {
        self.finalizers.iter().any(|n| n == f.as_str())
    }

    /// Adds `f` unless it is already there.
    pub fn add_finalizer(&mut self, f: Finalizer) {
        if !self.has_finalizer(f) {
            self.finalizers.push(f.as_str().to_string());
        }
    }

    /// Removes `f` (every copy).
    pub fn remove_finalizer(&mut self, f: Finalizer) {
        self.finalizers.retain(|n| n != f.as_str());
    }
}

/// The three-valued status of a condition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// Not yet known.
    #[default]
    Unknown,
}

impl From<bool> for ConditionStatus {
    /// `True` or `False`.
    fn from(holds: bool) -> ConditionStatus {
        if holds { ConditionStatus::True } else { ConditionStatus::False }
    }
}

impl ConditionStatus {
    /// The word as written in objects: `True`, `False` or `Unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }
}

/// One observation about an object, as in Kubernetes `metav1.Condition`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    /// What it is about, e.g. `Ready`, `Invalid`, `Meltdown`.
    #[serde(rename = "type")]
    pub type_: ConditionType,
    /// Whether it holds.
    pub status: ConditionStatus,
    /// CamelCase machine-readable cause, e.g. `UpdateFailed`.
    #[serde(default, skip_serializing_if = "Reason::is_empty")]
    pub reason: Reason,
    /// Free text for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// When `status` last changed (not when the condition was last written).
    pub last_transition_time: DateTime<Utc>,
    /// The spec generation this condition was computed from.
    #[serde(default)]
    pub observed_revision: i64,
}

impl Condition {
    /// A condition observed now, about spec generation `observed_revision`.
    pub fn new(
        type_: ConditionType,
        status: impl Into<ConditionStatus>,
        reason: Reason,
        message: impl Into<String>,
        observed_revision: i64,
    ) -> Condition {
        Condition {
            type_,
            status: status.into(),
            reason,
            message: message.into(),
            last_transition_time: Utc::now(),
            observed_revision,
        }
    }

    /// A `Ready` condition: True when `ready`, else False.
    pub fn ready(
        ready: bool,
        reason: Reason,
        message: impl Into<String>,
        observed_revision: i64,
    ) -> Condition {
        Condition::new(ConditionType::Ready, ready, reason, message, observed_revision)
    }

    /// Whether its status is `True`.
    pub fn is_true(&self) -> bool {
        self.status == ConditionStatus::True
    }
}

/// Sets `cond` in `conditions`, replacing one of the same type. The
/// transition time is kept when the status did not change, so a reconcile
/// that re-asserts the same condition produces an identical status and
/// therefore no etcd write.
pub fn set_condition(conditions: &mut Vec<Condition>, mut cond: Condition) {
    cond.message = bounded_message(cond.message);
    match conditions.iter_mut().find(|c| c.type_ == cond.type_) {
        Some(existing) => {
            if existing.status == cond.status {
                cond.last_transition_time = existing.last_transition_time;
            }
            *existing = cond;
        }
        None => conditions.push(cond),
    }
}

/// The longest message a condition, task result or event keeps, in bytes.
/// Objects live in etcd, whose values are capped (1.5 MiB by default): an
/// error listing 100,000 instances once made a task impossible to finish.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;

/// `message`, cut at [`MAX_MESSAGE_BYTES`] (on a character boundary) with a
/// note of how much was left out.
pub fn bounded_message(message: String) -> String {
    if message.len() <= MAX_MESSAGE_BYTES {
        return message;
    }
    let mut cut = MAX_MESSAGE_BYTES;
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}… ({} more bytes)", &message[..cut], message.len() - cut)
}

/// The first `max` of `items` joined by `sep`, then "and N more" when
/// there are more: one line per failed instance must not become 100,000.
pub fn join_bounded(items: &[String], sep: &str, max: usize) -> String {
    let mut out = items.iter().take(max).cloned().collect::<Vec<_>>().join(sep);
    if items.len() > max {
        out.push_str(&format!("{sep}and {} more", items.len() - max));
    }
    out
}

/// Finds a condition by type.
pub fn find_condition(conditions: &[Condition], type_: ConditionType) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Long messages are cut on a character boundary and say how much is
    /// missing; lists keep their first items and count the rest.
    #[test]
    fn messages_and_lists_are_bounded() {
        let long = "é".repeat(MAX_MESSAGE_BYTES);
        let cut = bounded_message(long.clone());
        assert!(cut.len() < MAX_MESSAGE_BYTES + 40, "{}", cut.len());
        assert!(cut.ends_with(&format!("({} more bytes)", long.len() - MAX_MESSAGE_BYTES)));
        assert_eq!(bounded_message("short".into()), "short");
        let items: Vec<String> = (0..100_000).map(|i| format!("web/{i}: failed")).collect();
        assert_eq!(join_bounded(&items, "; ", 2), "web/0: failed; web/1: failed; and 99998 more");
        assert_eq!(join_bounded(&items[..2], "; ", 2), "web/0: failed; web/1: failed");
        let mut conds = Vec::new();
        set_condition(
            &mut conds,
            Condition::ready(false, Reason::UpdateFailed, items.join("\n"), 1),
        );
        assert!(conds[0].message.len() < MAX_MESSAGE_BYTES + 40);
    }

    fn cond(status: ConditionStatus, at: i64) -> Condition {
        Condition {
            last_transition_time: DateTime::from_timestamp(at, 0).unwrap(),
            ..Condition::new(ConditionType::Ready, status, Reason::Converged, "", at)
        }
    }

    /// Re-asserting a condition keeps its transition time so the status is unchanged.
    #[test]
    fn set_condition_keeps_transition_time_when_status_is_unchanged() {
        let mut cs = vec![cond(ConditionStatus::True, 10)];
        set_condition(&mut cs, cond(ConditionStatus::True, 20));
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0].last_transition_time.timestamp(), 10);
        assert_eq!(cs[0].observed_revision, 20);
        set_condition(&mut cs, cond(ConditionStatus::False, 30));
        assert_eq!(cs[0].last_transition_time.timestamp(), 30);
    }

    /// A condition reads and writes its type and reason as the strings
    /// they always were; one from a newer director (unknown type or
    /// reason) or without a reason reads and writes back unchanged.
    #[test]
    fn conditions_keep_their_stored_form() {
        let c = Condition::new(ConditionType::Ready, false, Reason::UpdateFailed, "m", 3);
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(
            (v["type"].as_str(), v["reason"].as_str()),
            (Some("Ready"), Some("UpdateFailed"))
        );
        assert_eq!(serde_json::from_value::<Condition>(v).unwrap(), c);
        for stored in [
            serde_json::json!({"type": "Degraded", "status": "True", "reason": "CanaryFailed",
                "message": "m", "lastTransitionTime": "2026-01-01T00:00:00Z", "observedRevision": 2}),
            serde_json::json!({"type": "Ready", "status": "Unknown",
                "lastTransitionTime": "2026-01-01T00:00:00Z", "observedRevision": 0}),
        ] {
            let read: Condition = serde_json::from_value(stored.clone()).unwrap();
            assert_eq!(serde_json::to_value(&read).unwrap(), stored);
        }
    }

    /// Finalizers are added once, found, and removed, by name.
    #[test]
    fn finalizers_by_name() {
        let mut m = ObjectMeta::named("a");
        m.finalizers.push("example.com/other".into());
        m.add_finalizer(Finalizer::Vm);
        m.add_finalizer(Finalizer::Vm);
        assert_eq!(m.finalizers, ["example.com/other", "bosh.io/vm"]);
        assert!(m.has_finalizer(Finalizer::Vm) && !m.has_finalizer(Finalizer::Instances));
        m.remove_finalizer(Finalizer::Vm);
        assert_eq!(m.finalizers, ["example.com/other"]);
    }

    /// Revision fields are never serialized when zero and are stripped before writes.
    #[cfg(feature = "store")]
    #[test]
    fn revisions_are_not_persisted() {
        let mut m = ObjectMeta::named("a");
        m.generation = 5;
        m.resource_version = 5;
        m.status_revision = 7;
        m.strip_revisions();
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, r#"{"name":"a"}"#);
    }
}
