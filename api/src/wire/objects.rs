//! The generic object routes: listings, watch events and deletions, for
//! every kind alike, and [`ObjectSummary`], what any object can be read as
//! by a client that does not care about its kind.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::meta::{Condition, ObjectMeta};

/// A consistent listing of one kind (`GET /v1/<plural>`): the objects as
/// they were at one etcd revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct List<O> {
    /// The objects, sorted by name.
    pub items: Vec<O>,
    /// Values under the kind's keys that are not usable objects, left out
    /// of `items` (absent when there are none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quarantined: Vec<Quarantined>,
    /// The etcd revision the listing was read at: a watch from
    /// `revision + 1` misses nothing that changed after it.
    pub revision: i64,
}

/// An object stored under a kind's keys that cannot be used: its spec or
/// status does not decode, or names another apiVersion, kind or key.
///
/// Anyone with etcd access can write anything under `/bosh/` (a GitOps
/// tool, an operator with `etcdctl`, a bug). Such a value cannot carry a
/// status condition (there is no object to put it in), and one bad value
/// must not stop a listing or a watch of everything else; so listings and
/// watches leave it out and report it here, with a warning in the log
/// (watches), and controllers leave it alone: they forget it, and a parent
/// whose children include one stops acting on them until it is fixed or
/// removed (`etcdctl del`). Nothing is ever deleted on its account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Quarantined {
    /// Its key name relative to the kind (`name`, or `deployment/name`).
    pub name: String,
    /// The latest revision of its spec or status key.
    pub revision: i64,
    /// Why it cannot be used.
    pub reason: String,
}

/// Query of `GET /v1/<plural>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ListQuery {
    /// Only objects whose name starts with this (e.g. `cf/` for a
    /// deployment's instances); empty lists every object.
    #[serde(default)]
    pub prefix: String,
}

/// Query of `GET /v1/watch/<plural>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WatchQuery {
    /// Replay changes from this etcd revision on; absent, the watch starts
    /// with a [`WatchEvent::Relisted`] of every object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<i64>,
}

/// One line of a watch stream (`GET /v1/watch/<plural>`, newline-delimited
/// JSON), told apart by its `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "UPPERCASE")]
pub enum WatchEvent<O> {
    /// Every object as of `revision`: at the start of a watch without
    /// `from`, and whenever the director had to list again (after etcd
    /// compacted the history it was following). Objects missing from it
    /// are gone.
    Relisted {
        /// The revision the listing was read at.
        revision: i64,
        /// Every object.
        objects: Vec<O>,
        /// Values that are not usable objects (absent when there are none).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        quarantined: Vec<Quarantined>,
    },
    /// An object was created or changed (its spec or its status).
    Applied {
        /// The object as it is now.
        object: O,
    },
    /// A value under the kind's keys stopped being a usable object (it
    /// was written undecodable); whatever was known of it is gone.
    Quarantined {
        /// What and why.
        object: Quarantined,
    },
    /// An object was deleted.
    Deleted {
        /// Its name.
        name: String,
        /// The revision of the deletion.
        revision: i64,
    },
    /// Nothing happened for a while (boshd sends one every 15 s of
    /// quiet), so a client can tell a quiet director from a gone one.
    Keepalive,
    /// A kind of event this client does not know (from a newer director);
    /// skip it. Never sent.
    #[serde(other, skip_serializing)]
    Unknown,
}

/// Query of `DELETE /v1/configs/<name>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeleteQuery {
    /// Delete only if the object is still at this `metadata.resourceVersion`
    /// (409 otherwise); absent, delete whatever is there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<i64>,
}

/// Answer to deleting an object through the generic route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Deleted {
    /// The object is gone.
    pub deleted: bool,
    /// The object is marked for deletion and goes once the controllers
    /// holding finalizers on it have cleaned up.
    pub finalizing: bool,
}

/// Answer to deleting a release or stemcell version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Removed {
    /// `NAME/VERSION` of what was deleted.
    pub deleted: String,
}

/// What a listing shows of any object, whatever its kind: its metadata and
/// its conditions. A client that shows objects of every kind alike
/// (`boshctl get`, `watch`) reads them as this; it ignores every other
/// field, so each kind's `Object<S>` reads as one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectSummary {
    /// The kind, e.g. `Deployment`.
    #[serde(default)]
    pub kind: String,
    /// Name, generation and the rest of the metadata.
    pub metadata: ObjectMeta,
    /// The status's conditions; empty for kinds that have none.
    #[serde(default)]
    pub status: StatusSummary,
}

/// The part of any status a listing shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusSummary {
    /// What the controllers observed, e.g. `Ready=True`, `Invalid=False`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The spec generation the status describes (0: not yet observed, or a
    /// kind without one).
    #[serde(default)]
    pub observed_revision: i64,
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::objects::{
        ConditionType, ConfigSpec, ConfigType, EventSpec, EventStatus, Reason, TaskSpec,
    };
    use crate::wire::testing::round_trip;
    use crate::{ConditionStatus, Object};

    fn config() -> Object<ConfigSpec> {
        let mut meta = ObjectMeta::named("cloud/a");
        meta.generation = 7;
        meta.resource_version = 7;
        let mut o = Object::new(
            meta,
            ConfigSpec { type_: ConfigType::Cloud, content: serde_json::json!({"azs": []}) },
        );
        o.status.conditions.push(Condition {
            type_: ConditionType::Invalid,
            status: ConditionStatus::False,
            reason: Reason::default(),
            message: String::new(),
            last_transition_time: chrono::Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(),
            observed_revision: 7,
        });
        o.status.observed_revision = 7;
        o
    }

    /// A listing and each watch event keep the shape boshd answered with `json!`.
    #[test]
    fn listings_and_watch_events_round_trip() {
        let o = config();
        let obj = serde_json::to_string(&o).unwrap();
        round_trip(
            &List { items: vec![o.clone()], quarantined: vec![], revision: 9 },
            &format!(r#"{{"items":[{obj}],"revision":9}}"#),
        );
        round_trip(
            &WatchEvent::Relisted { revision: 9, objects: vec![o.clone()], quarantined: vec![] },
            &format!(r#"{{"type":"RELISTED","revision":9,"objects":[{obj}]}}"#),
        );
        round_trip(
            &WatchEvent::Applied { object: o.clone() },
            &format!(r#"{{"type":"APPLIED","object":{obj}}}"#),
        );
        round_trip(
            &WatchEvent::<Object<ConfigSpec>>::Deleted { name: "cloud/a".into(), revision: 10 },
            r#"{"type":"DELETED","name":"cloud/a","revision":10}"#,
        );
        round_trip(&WatchEvent::<Object<ConfigSpec>>::Keepalive, r#"{"type":"KEEPALIVE"}"#);
        round_trip(
            &Deleted { deleted: false, finalizing: true },
            r#"{"deleted":false,"finalizing":true}"#,
        );
        round_trip(&Removed { deleted: "nginx/1.0".into() }, r#"{"deleted":"nginx/1.0"}"#);
    }

    /// An event type this client does not know is read as `Unknown`, not an error.
    #[test]
    fn unknown_watch_events_are_skippable() {
        let e: WatchEvent<ObjectSummary> =
            serde_json::from_str(r#"{"type":"BOOKMARK","revision":3}"#).unwrap();
        assert_eq!(e, WatchEvent::Unknown);
        assert!(serde_json::to_string(&e).is_err(), "never sent");
    }

    /// Any kind's object reads as a summary: with conditions, or (tasks, events) without.
    #[test]
    fn every_kind_reads_as_a_summary() {
        let s: ObjectSummary =
            serde_json::from_value(serde_json::to_value(config()).unwrap()).unwrap();
        assert_eq!((s.kind.as_str(), s.metadata.name.as_str()), ("Config", "cloud/a"));
        assert_eq!((s.metadata.generation, s.status.observed_revision), (7, 7));
        assert_eq!(s.status.conditions[0].status, ConditionStatus::False);

        let task = Object::new(ObjectMeta::named("0000000001"), TaskSpec::default());
        let s: ObjectSummary = serde_json::from_value(serde_json::to_value(task).unwrap()).unwrap();
        assert!(s.status.conditions.is_empty());
        let event: Object<EventSpec> = Object {
            status: EventStatus {},
            ..Object::new(ObjectMeta::named("0000000001/0000000001"), EventSpec::default())
        };
        let line = serde_json::to_string(&WatchEvent::Applied { object: event }).unwrap();
        let e: WatchEvent<ObjectSummary> = serde_json::from_str(&line).unwrap();
        assert!(matches!(e, WatchEvent::Applied { object } if object.kind == "Event"));
    }

    /// Watch lines as boshd sent them before these types existed (the first
    /// three are `boshctl`'s test fixtures) still parse, as objects and as summaries.
    #[test]
    fn watch_lines_from_before_the_types_parse() {
        let lines = [
            r#"{"type":"RELISTED","revision":1,"objects":[]}"#,
            r#"{"type":"KEEPALIVE"}"#,
            r#"{"type":"DELETED","name":"after-the-quiet","revision":9}"#,
            r#"{"type":"APPLIED","object":{"apiVersion":"bosh.io/v1alpha1","kind":"Config","metadata":{"name":"cloud/b","uid":"3c0b","creationTimestamp":"2026-01-02T03:04:05Z","generation":12,"resourceVersion":12},"spec":{"type":"cloud","content":{"azs":[{"name":"z1"}]}},"status":{}}}"#,
        ];
        for line in lines {
            let e: WatchEvent<Object<ConfigSpec>> = serde_json::from_str(line).unwrap();
            assert_ne!(e, WatchEvent::Unknown, "{line}");
            let s: WatchEvent<ObjectSummary> = serde_json::from_str(line).unwrap();
            assert_ne!(s, WatchEvent::Unknown, "{line}");
        }
    }
}
