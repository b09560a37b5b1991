//! The typed etcd store: the only code in bosh-rs that writes to etcd.
//!
//! Every object is two keys: `<root>/<plural>/spec/<name>` holds the
//! metadata and spec (written by users, GitOps tools and parent
//! controllers), `<root>/<plural>/status/<name>` holds the status (written
//! by controllers). Both sit under one per-kind prefix so that a single
//! etcd watch delivers a transaction's spec and status changes in one
//! response, and no cache ever shows half of a write. Each side is updated by compare-and-swap on its own
//! `mod_revision`, so a status write can never clobber a spec change and
//! vice versa, and a lost race is reported as [`Error::Conflict`] instead of
//! overwriting anything.
//!
//! A store may carry a [`Fence`] (see [`Store::with_fence`]): every write it
//! makes then also requires that the fence's leader key still exists with
//! the same create revision. A controller that lost its lease while paused
//! therefore cannot write anything when it resumes ([`Error::Fenced`]).
//!
//! # Layout
//!
//! - this file: [`Store`], its errors, reads and writes.
//! - [`watch`]: watches that resume after reconnects and relist after
//!   compaction.
//! - [`lease`]: leases, leader keys and fences.
//! - [`config`]: how to reach etcd ([`StoreConfig`]: endpoints, client
//!   certificate, secrets key); the certificates etcd requires
//!   ([`EtcdPki`]) are made by [`crate::pki`].
//! - `secrets`: generated credentials, kept outside every object and
//!   encrypted with a [`SecretsKey`] held outside etcd.
//! - `counters`: sequence numbers for tasks and events.
//! - [`endpoints`]: keeps requests off etcd members that do not answer.
//! - [`failpoints`]: lost replies and dropped or broken watches, for fault
//!   tests (feature `failpoints`).
//! - [`stats`]: counts of the read requests sent to etcd.

use std::fmt;

use chrono::Utc;
use etcd_client::{
    Client, Compare, CompareOp, GetOptions, KeyValue, KvClient, PutOptions, Txn, TxnOpResponse,
    WatchClient,
};
use serde::{Deserialize, Serialize};

use crate::meta::ObjectMeta;
use crate::objects::{InvalidName, Kind, Object, key_name, validate_name};

pub mod config;
mod counters;
pub mod endpoints;
pub mod failpoints;
pub mod lease;
mod secrets;
pub mod stats;
pub mod watch;

pub use crate::pki::{EtcdPki, TlsFiles};
/// An object stored under a kind's keys that cannot be used (see
/// [`crate::wire::objects::Quarantined`]).
pub use crate::wire::objects::Quarantined;
pub use config::StoreConfig;
pub use lease::{Fence, LeaseId};
pub use secrets::SecretsKey;
pub use stats::StoreStats;
pub use watch::{RelistHandle, WatchEvent, WatchStats, Watcher};

/// Objects per page when listing. A page of large values is halved until
/// it fits [`MAX_RANGE_RESPONSE_BYTES`], so this suits the common small
/// objects without failing on a run of large ones.
const LIST_PAGE: i64 = 500;

/// The largest range (list) response the store decodes. tonic's default is
/// 4 MiB, which three values near etcd's 1.5 MiB request limit exceed: a
/// list (and every relist of a watch) of such a kind failed for good and
/// its controllers stalled (fault matrix F2). Pages that are still too
/// large are halved ([`Store::range_all`]).
const MAX_RANGE_RESPONSE_BYTES: usize = 64 << 20;

/// The largest watch response the store decodes: etcd batches up to 1,000
/// revisions into one response for a watcher that is catching up, and a
/// watch that cannot decode a response resumes at the same revision and
/// fails again, forever (F2). So the limit is etcd's own largest gRPC
/// message (2 GiB); a transient memory spike is better than a stalled
/// controller.
const MAX_WATCH_RESPONSE_BYTES: usize = i32::MAX as usize;

/// The most bytes one object write may put into etcd: etcd's default
/// `--max-request-bytes` (1.5 MiB). etcd refuses a larger request with a
/// gRPC error that names neither the object nor the limit, so the store
/// checks first and answers [`Error::TooLarge`]. Raise it with
/// [`Store::with_max_write_bytes`] (boshd `--max-object-bytes`) only
/// together with etcd's own flag.
pub const DEFAULT_MAX_WRITE_BYTES: usize = 1536 * 1024;

/// What a write request carries besides its keys and values (the
/// transaction's compares, the fence, protobuf framing): kept free under
/// the limit so that a write the check lets through also fits etcd's.
const WRITE_OVERHEAD_BYTES: usize = 4 * 1024;

/// Store errors. Each names the object it concerns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object does not exist.
    #[error("{kind} {name:?} not found")]
    NotFound {
        /// Kind name.
        kind: &'static str,
        /// Object key name.
        name: String,
    },
    /// Create-if-absent found the object already there.
    #[error("{kind} {name:?} already exists")]
    AlreadyExists {
        /// Kind name.
        kind: &'static str,
        /// Object key name.
        name: String,
    },
    /// The object changed since it was read: re-read and retry.
    #[error("{kind} {name:?} was modified concurrently (expected revision {expected})")]
    Conflict {
        /// Kind name.
        kind: &'static str,
        /// Object key name.
        name: String,
        /// The revision the write was conditioned on.
        expected: i64,
    },
    /// The write carried a fencing token that is no longer current: this
    /// process is no longer the leader of `fence`.
    #[error("write refused: leadership {fence} is no longer held")]
    Fenced {
        /// The stale fence.
        fence: Fence,
    },
    /// The name cannot be used as a key.
    #[error(transparent)]
    InvalidName(#[from] InvalidName),
    /// A stored value did not decode: someone wrote bad JSON under our keys.
    #[error("cannot decode {key}: {source}")]
    Decode {
        /// The etcd key.
        key: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A stored value decoded, but is not this kind's object at this key
    /// (another apiVersion or kind, or metadata naming another key).
    #[error("malformed object at {key}: {reason}")]
    Malformed {
        /// The etcd key.
        key: String,
        /// What does not match.
        reason: String,
    },
    /// The encoded object is larger than one etcd write may be; nothing
    /// was written.
    #[error(
        "{kind} {name:?} is too large to store: {size} bytes encoded, more than the limit of \
         {limit} bytes per etcd write (set with boshd --max-object-bytes, which must not \
         exceed etcd's --max-request-bytes)"
    )]
    TooLarge {
        /// Kind name.
        kind: &'static str,
        /// Object key name.
        name: String,
        /// Bytes the write would carry (keys and values).
        size: usize,
        /// The limit it exceeds.
        limit: usize,
    },
    /// A secret could not be decrypted. Names the key id, never the value.
    #[error("cannot decrypt secret {name:?} (encrypted with key {key_id}): {reason}")]
    Decrypt {
        /// The secret's name.
        name: String,
        /// The id of the key the value names.
        key_id: String,
        /// What is wrong (no key, another key, altered data).
        reason: String,
    },
    /// A file of the store's configuration (certificates, the secrets key)
    /// could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// etcd could not be reached or refused the call.
    #[error("etcd {op} failed: {source}")]
    Etcd {
        /// The operation.
        op: &'static str,
        /// Why.
        #[source]
        source: etcd_client::Error,
    },
}

impl Error {
    /// Whether retrying after a re-read may succeed.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict { .. })
    }

    /// Whether a stored value cannot be used as an object ([`Error::Decode`],
    /// [`Error::Malformed`]): listings and watches quarantine it.
    pub fn is_undecodable(&self) -> bool {
        matches!(self, Error::Decode { .. } | Error::Malformed { .. })
    }

    /// Whether a write that failed this way may have committed all the
    /// same: the request may have reached etcd and only its reply was lost
    /// (a reset connection, a timeout, an unavailable member).
    pub fn is_ambiguous(&self) -> bool {
        use etcd_client::Error as E;
        use tonic::Code;
        match self {
            Error::Etcd { source, .. } => match source {
                E::IoError(_) | E::TransportError(_) => true,
                E::GRpcStatus(s) => matches!(
                    s.code(),
                    Code::Unavailable | Code::Unknown | Code::DeadlineExceeded | Code::Cancelled
                ),
                _ => false,
            },
            _ => false,
        }
    }

    fn etcd(op: &'static str) -> impl FnOnce(etcd_client::Error) -> Error {
        move |source| Error::Etcd { op, source }
    }
}

/// Result alias for store operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The stored form of a spec key: everything but the status.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SpecRecordRef<'a, S> {
    api_version: &'a str,
    kind: &'a str,
    metadata: &'a ObjectMeta,
    spec: &'a S,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecRecord<S> {
    api_version: String,
    kind: String,
    metadata: ObjectMeta,
    spec: S,
}

/// A consistent listing of one kind at one etcd revision.
#[derive(Debug, Clone)]
pub struct List<S: Kind> {
    /// The objects, sorted by key.
    pub items: Vec<Object<S>>,
    /// Objects under the listed prefix that cannot be used (see
    /// [`Quarantined`]), sorted by key; left out of `items`.
    pub quarantined: Vec<Quarantined>,
    /// The revision the listing was read at; watch from `revision + 1`.
    pub revision: i64,
}

/// What [`Store::probe`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The revision a linearizable read returned.
    pub revision: i64,
    /// The alarms raised on any member (`NOSPACE`, `CORRUPT`), each once.
    pub alarms: Vec<String>,
}

/// Typed access to bosh-rs objects in etcd.
#[derive(Clone)]
pub struct Store {
    client: Client,
    /// `client`'s KV service, decoding up to [`MAX_RANGE_RESPONSE_BYTES`].
    kv: KvClient,
    /// `client`'s watch service, decoding up to [`MAX_WATCH_RESPONSE_BYTES`].
    watches: WatchClient,
    root: String,
    fence: Option<Fence>,
    /// The most bytes one object write may carry ([`DEFAULT_MAX_WRITE_BYTES`]).
    max_write_bytes: usize,
    /// Encrypts secrets at rest; `None` stores them as plaintext.
    secrets_key: Option<SecretsKey>,
    /// Keeps requests off members that do not answer (several endpoints
    /// only); stops with the last clone.
    _endpoints: Option<std::sync::Arc<endpoints::EndpointKeeper>>,
    /// Read requests sent, shared by every clone.
    stats: std::sync::Arc<StoreStats>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("root", &self.root).field("fence", &self.fence).finish()
    }
}

impl Store {
    /// Connects to etcd as `config` says, keeping every key under `root`
    /// (normally `/bosh`; tests may share one etcd by using different roots).
    /// With several endpoints, members that stop answering are left out
    /// of the balance until they answer again ([`endpoints`]).
    pub async fn connect(config: &StoreConfig, root: &str) -> Result<Store> {
        let client = config.client().await?;
        let endpoints = endpoints::keep(config, client.clone()).await?;
        Ok(Store {
            kv: client.kv_client().max_decoding_message_size(MAX_RANGE_RESPONSE_BYTES),
            watches: client.watch_client().max_decoding_message_size(MAX_WATCH_RESPONSE_BYTES),
            client,
            root: root.trim_end_matches('/').to_string(),
            fence: None,
            max_write_bytes: DEFAULT_MAX_WRITE_BYTES,
            secrets_key: config.secrets_key.clone(),
            _endpoints: endpoints,
            stats: Default::default(),
        })
    }

    /// The read requests this store (and every clone of it) sent so far.
    pub fn stats(&self) -> &StoreStats {
        &self.stats
    }

    /// Counts one read request.
    pub(crate) fn count_read(&self) {
        self.stats.read();
    }

    /// A copy of this store whose every write also requires `fence` to be
    /// current. Controllers hand this to reconcilers so that no
    /// side-effecting write escapes leader election.
    pub fn with_fence(&self, fence: Fence) -> Store {
        Store { fence: Some(fence), ..self.clone() }
    }

    /// A copy of this store that refuses object writes larger than `bytes`
    /// ([`Error::TooLarge`]) instead of [`DEFAULT_MAX_WRITE_BYTES`]: for an
    /// etcd run with a different `--max-request-bytes`.
    pub fn with_max_write_bytes(&self, bytes: usize) -> Store {
        Store { max_write_bytes: bytes, ..self.clone() }
    }

    /// The most bytes one object write may carry.
    pub fn max_write_bytes(&self) -> usize {
        self.max_write_bytes
    }

    /// Checks, writing nothing, that `obj` (spec and status) fits in one
    /// etcd write: the API calls it before it records anything for a
    /// change (a Task), so a change that cannot be stored changes nothing.
    pub fn check_fits<S: Kind>(&self, obj: &Object<S>) -> Result<()> {
        let name = obj.key_name();
        let spec_key = self.key::<S>(Side::Spec, &name);
        let status_key = self.key::<S>(Side::Status, &name);
        let spec = encode_spec(obj);
        let status = encode_status::<S>(&obj.status);
        self.check_size::<S>(&name, &[(&spec_key, &spec), (&status_key, &status)])
    }

    /// [`Error::TooLarge`] when `puts` (key, value) exceed what one etcd
    /// write may carry.
    fn check_size<S: Kind>(&self, name: &str, puts: &[(&str, &[u8])]) -> Result<()> {
        let size = puts.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        if size + WRITE_OVERHEAD_BYTES > self.max_write_bytes {
            return Err(Error::TooLarge {
                kind: S::KIND,
                name: name.to_string(),
                size,
                limit: self.max_write_bytes,
            });
        }
        Ok(())
    }

    /// The fence this store's writes carry, if any.
    pub fn fence(&self) -> Option<&Fence> {
        self.fence.as_ref()
    }

    /// The key root, e.g. `/bosh`.
    pub fn root(&self) -> &str {
        &self.root
    }

    pub(crate) fn client(&self) -> Client {
        self.client.clone()
    }

    /// The watch service, with a decoding limit fit for large values.
    pub(crate) fn watch_client(&self) -> WatchClient {
        self.watches.clone()
    }

    /// `<root>/<plural>/`: both halves of every object of a kind, so that
    /// one watch sees a transaction's spec and status changes together.
    pub(crate) fn kind_root<S: Kind>(&self) -> String {
        format!("{}/{}/", self.root, S::PLURAL)
    }

    /// `<root>/<plural>/spec/` (or `status/`).
    pub(crate) fn kind_prefix<S: Kind>(&self, side: Side) -> String {
        format!("{}{}/", self.kind_root::<S>(), side.as_str())
    }

    fn key<S: Kind>(&self, side: Side, name: &str) -> String {
        format!("{}{name}", self.kind_prefix::<S>(side))
    }

    /// The current etcd revision.
    pub async fn revision(&self) -> Result<i64> {
        self.count_read();
        let resp = self
            .client
            .clone()
            .get(format!("{}/", self.root), Some(GetOptions::new().with_count_only()))
            .await
            .map_err(Error::etcd("get"))?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or_default())
    }

    /// Asks etcd whether it can serve us: a linearizable read (which needs
    /// a leader and a quorum) and the list of raised alarms (`NOSPACE`:
    /// the database reached its quota and etcd refuses every write until
    /// an operator compacts, defragments and disarms it). For health
    /// checks; an error means etcd could not be reached or has no quorum.
    pub async fn probe(&self) -> Result<Probe> {
        let revision = self.revision().await?;
        let resp = self
            .client
            .clone()
            .alarm(etcd_client::AlarmAction::Get, etcd_client::AlarmType::None, None)
            .await
            .map_err(Error::etcd("alarm list"))?;
        let mut alarms: Vec<String> =
            resp.alarms().iter().map(|a| a.alarm().as_str_name().to_string()).collect();
        alarms.sort();
        alarms.dedup();
        Ok(Probe { revision, alarms })
    }

    /// Reads one object (spec and status at one revision).
    pub async fn get<S: Kind>(&self, deployment: Option<&str>, name: &str) -> Result<Object<S>> {
        let name = key_name::<S>(deployment, name);
        validate_name(&name)?;
        let (spec_key, status_key) =
            (self.key::<S>(Side::Spec, &name), self.key::<S>(Side::Status, &name));
        let txn = Txn::new().and_then([
            etcd_client::TxnOp::get(spec_key.clone(), None),
            etcd_client::TxnOp::get(status_key, None),
        ]);
        self.count_read();
        let resp = self.client.clone().txn(txn).await.map_err(Error::etcd("get"))?;
        let mut gets = resp.op_responses().into_iter().map(|r| match r {
            TxnOpResponse::Get(g) => g.kvs().first().cloned(),
            _ => None,
        });
        let spec = gets.next().flatten();
        let status = gets.next().flatten();
        match spec {
            Some(spec) => decode_object::<S>(&name, &spec, status.as_ref()),
            None => Err(Error::NotFound { kind: S::KIND, name }),
        }
    }

    /// Reads one object, or `None` when it does not exist.
    pub async fn try_get<S: Kind>(
        &self,
        deployment: Option<&str>,
        name: &str,
    ) -> Result<Option<Object<S>>> {
        match self.get::<S>(deployment, name).await {
            Ok(o) => Ok(Some(o)),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Lists every object of a kind whose key name starts with `prefix`
    /// (e.g. a deployment's instances: `"cf/"`), consistently at one
    /// revision, paging so that large kinds never exceed a gRPC message.
    /// Objects that cannot be used are left out and named in
    /// [`List::quarantined`].
    pub async fn list<S: Kind>(&self, prefix: &str) -> Result<List<S>> {
        self.list_at_revision(prefix, None).await
    }

    /// Like [`Store::list`], but as the kind was at etcd revision
    /// `revision` (history, for checkers: fails once compacted away).
    pub async fn list_at<S: Kind>(&self, prefix: &str, revision: i64) -> Result<List<S>> {
        self.list_at_revision(prefix, Some(revision.max(1))).await
    }

    async fn list_at_revision<S: Kind>(
        &self,
        prefix: &str,
        revision: Option<i64>,
    ) -> Result<List<S>> {
        self.stats.listed(S::PLURAL, prefix.is_empty());
        let kind_spec = self.kind_prefix::<S>(Side::Spec);
        let spec_prefix = format!("{kind_spec}{prefix}");
        let status_prefix = format!("{}{prefix}", self.kind_prefix::<S>(Side::Status));
        let (specs, revision) = self.range_all(&spec_prefix, revision).await?;
        let (statuses, _) = self.range_all(&status_prefix, Some(revision)).await?;
        let mut statuses: std::collections::HashMap<Vec<u8>, KeyValue> =
            statuses.into_iter().map(|kv| (kv.key()[status_prefix.len()..].to_vec(), kv)).collect();
        let mut items = Vec::with_capacity(specs.len());
        let mut quarantined = Vec::new();
        for kv in &specs {
            let status = statuses.remove(&kv.key()[spec_prefix.len()..]);
            let name = String::from_utf8_lossy(&kv.key()[kind_spec.len()..]).into_owned();
            match decode_object::<S>(&name, kv, status.as_ref()) {
                Ok(o) => items.push(o),
                Err(e) if e.is_undecodable() => {
                    let revision = kv.mod_revision().max(status.map_or(0, |s| s.mod_revision()));
                    quarantined.push(Quarantined { name, revision, reason: e.to_string() });
                }
                Err(e) => return Err(e),
            }
        }
        Ok(List { items, quarantined, revision })
    }

    /// All key-values under `prefix`, at `revision` (or the current one),
    /// returning the revision read at.
    pub(crate) async fn range_all(
        &self,
        prefix: &str,
        revision: Option<i64>,
    ) -> Result<(Vec<KeyValue>, i64)> {
        let end = prefix_end(prefix.as_bytes());
        let mut out = Vec::new();
        let mut start = prefix.as_bytes().to_vec();
        let mut rev = revision.unwrap_or(0);
        let mut page = LIST_PAGE;
        loop {
            let mut opts = GetOptions::new().with_range(end.clone()).with_limit(page);
            if rev > 0 {
                opts = opts.with_revision(rev);
            }
            self.count_read();
            let mut resp = match self.kv.clone().get(start.clone(), Some(opts)).await {
                Ok(r) => r,
                // A page of large values over the response limit: the same
                // page, halved (one value always fits: etcd refuses writes
                // over 1.5 MiB).
                Err(etcd_client::Error::GRpcStatus(s))
                    if s.code() as i32 == OUT_OF_RANGE && page > 1 =>
                {
                    page /= 2;
                    continue;
                }
                Err(e) => return Err(Error::etcd("list")(e)),
            };
            if rev == 0 {
                rev = resp.header().map(|h| h.revision()).unwrap_or_default();
            }
            let more = resp.more();
            let kvs = resp.take_kvs();
            if let Some(last) = kvs.last() {
                start = last.key().to_vec();
                start.push(0);
            }
            out.extend(kvs);
            if !more {
                return Ok((out, rev));
            }
        }
    }

    /// Creates an object if no object of that name exists. Assigns a uid
    /// and creation timestamp when missing. A non-default status is written
    /// in the same transaction.
    pub async fn create<S: Kind>(&self, obj: &Object<S>) -> Result<Object<S>> {
        self.create_inner(obj, None).await
    }

    /// Like [`Store::create`], but both keys are bound to `lease` and vanish
    /// when it expires (events age out this way).
    pub async fn create_with_lease<S: Kind>(
        &self,
        obj: &Object<S>,
        lease: LeaseId,
    ) -> Result<Object<S>> {
        self.create_inner(obj, Some(lease)).await
    }

    async fn create_inner<S: Kind>(
        &self,
        obj: &Object<S>,
        lease: Option<LeaseId>,
    ) -> Result<Object<S>> {
        let mut obj = obj.clone();
        let name = obj.key_name();
        validate_name(&name)?;
        if S::SCOPED && obj.metadata.deployment.is_none() {
            return Err(
                InvalidName { name, reason: "a scoped kind needs metadata.deployment" }.into()
            );
        }
        if obj.metadata.uid.is_empty() {
            obj.metadata.uid = uuid::Uuid::new_v4().to_string();
        }
        obj.metadata.creation_timestamp.get_or_insert_with(Utc::now);
        obj.metadata.deletion_timestamp = None;
        let spec_key = self.key::<S>(Side::Spec, &name);
        let status_key = self.key::<S>(Side::Status, &name);
        let spec = encode_spec(&obj);
        let spec_bytes = spec.clone();
        let with_status = obj.status != S::Status::default();
        let status = if with_status { encode_status::<S>(&obj.status) } else { Vec::new() };
        self.check_size::<S>(&name, &[(&spec_key, &spec), (&status_key, &status)])?;
        let put_opts = lease.map(|l| PutOptions::new().with_lease(l.0));
        let mut ops = vec![etcd_client::TxnOp::put(spec_key.clone(), spec, put_opts.clone())];
        if with_status {
            ops.push(etcd_client::TxnOp::put(status_key, status, put_opts));
        }
        let cmp = vec![Compare::create_revision(spec_key.clone(), CompareOp::Equal, 0)];
        let written = self
            .write(cmp, ops, || Error::AlreadyExists { kind: S::KIND, name: name.clone() })
            .await
            .and_then(|rev| failpoints::reply_lost(S::PLURAL, "create").map(|()| rev));
        let rev = self.settle(written, &spec_key, Some(&spec_bytes), 0).await?;
        set_revisions(&mut obj.metadata, rev, if with_status { rev } else { 0 });
        Ok(obj)
    }

    /// Replaces the metadata and spec if the spec is still at
    /// `obj.metadata.resource_version`. Status is not touched. Removing the
    /// last finalizer of an object being deleted deletes it.
    pub async fn update_spec<S: Kind>(&self, obj: &Object<S>) -> Result<Object<S>> {
        let mut obj = obj.clone();
        let name = obj.key_name();
        validate_name(&name)?;
        let expected = obj.metadata.resource_version;
        if obj.metadata.is_deleting() && obj.metadata.finalizers.is_empty() {
            self.delete_keys::<S>(&name, expected).await?;
            return Ok(obj);
        }
        let spec_key = self.key::<S>(Side::Spec, &name);
        let spec = encode_spec(&obj);
        self.check_size::<S>(&name, &[(&spec_key, &spec)])?;
        let cmp = vec![Compare::mod_revision(spec_key.clone(), CompareOp::Equal, expected)];
        let ops = vec![etcd_client::TxnOp::put(spec_key.clone(), spec.clone(), None)];
        let written = self
            .write(cmp, ops, || Error::Conflict { kind: S::KIND, name: name.clone(), expected })
            .await
            .and_then(|rev| failpoints::reply_lost(S::PLURAL, "spec").map(|()| rev));
        let rev = self.settle(written, &spec_key, Some(&spec), expected).await?;
        let status_rev = obj.metadata.status_revision;
        set_revisions(&mut obj.metadata, rev, status_rev);
        Ok(obj)
    }

    /// Replaces the status if it is still at `obj.metadata.status_revision`
    /// (0: no status yet) and the object still exists.
    pub async fn update_status<S: Kind>(&self, obj: &Object<S>) -> Result<Object<S>> {
        let mut obj = obj.clone();
        let name = obj.key_name();
        validate_name(&name)?;
        let expected = obj.metadata.status_revision;
        let spec_key = self.key::<S>(Side::Spec, &name);
        let status_key = self.key::<S>(Side::Status, &name);
        let status = encode_status::<S>(&obj.status);
        self.check_size::<S>(&name, &[(&status_key, &status)])?;
        let cmp = vec![
            Compare::create_revision(spec_key, CompareOp::Greater, 0),
            Compare::mod_revision(status_key.clone(), CompareOp::Equal, expected),
        ];
        let ops = vec![etcd_client::TxnOp::put(status_key.clone(), status.clone(), None)];
        let written = self
            .write(cmp, ops, || Error::Conflict { kind: S::KIND, name: name.clone(), expected })
            .await
            .and_then(|rev| failpoints::reply_lost(S::PLURAL, "status").map(|()| rev));
        let rev = self.settle(written, &status_key, Some(&status), expected).await?;
        let spec_rev = obj.metadata.resource_version;
        set_revisions(&mut obj.metadata, spec_rev, rev);
        Ok(obj)
    }

    /// Deletes an object whose spec is still at `resource_version` (`None`:
    /// whatever it is). With finalizers pending it only sets
    /// `deletionTimestamp`, and the controllers owning the finalizers finish
    /// the job. Returns whether the object is gone.
    pub async fn delete<S: Kind>(
        &self,
        deployment: Option<&str>,
        name: &str,
        resource_version: Option<i64>,
    ) -> Result<bool> {
        let mut obj = self.get::<S>(deployment, name).await?;
        if let Some(rv) = resource_version
            && rv != obj.metadata.resource_version
        {
            return Err(Error::Conflict { kind: S::KIND, name: obj.key_name(), expected: rv });
        }
        if obj.metadata.finalizers.is_empty() {
            self.delete_keys::<S>(&obj.key_name(), obj.metadata.resource_version).await?;
            return Ok(true);
        }
        if !obj.metadata.is_deleting() {
            obj.metadata.deletion_timestamp = Some(Utc::now());
            self.update_spec(&obj).await?;
        }
        Ok(false)
    }

    async fn delete_keys<S: Kind>(&self, name: &str, expected: i64) -> Result<()> {
        let spec_key = self.key::<S>(Side::Spec, name);
        let cmp = vec![Compare::mod_revision(spec_key.clone(), CompareOp::Equal, expected)];
        let ops = vec![
            etcd_client::TxnOp::delete(spec_key.clone(), None),
            etcd_client::TxnOp::delete(self.key::<S>(Side::Status, name), None),
        ];
        let written = self
            .write(cmp, ops, || Error::Conflict { kind: S::KIND, name: name.to_string(), expected })
            .await
            .and_then(|rev| failpoints::reply_lost(S::PLURAL, "delete").map(|()| rev));
        self.settle(written, &spec_key, None, expected).await.map(drop)
    }

    /// The outcome of a write whose reply may have been lost: an ambiguous
    /// error ([`Error::is_ambiguous`]) is settled by reading `key` back, so
    /// that a caller does not take a committed write for a failed one and
    /// act twice (FAULT-MATRIX B5: re-read before deciding). The write
    /// counts as done when `key` now holds exactly `value`, written after
    /// revision `before` (`None`: when `key` is gone). Returns the revision
    /// it committed at (0 for a deletion), else the original error.
    async fn settle(
        &self,
        written: Result<i64>,
        key: &str,
        value: Option<&[u8]>,
        before: i64,
    ) -> Result<i64> {
        let e = match written {
            Ok(rev) => return Ok(rev),
            Err(e) if e.is_ambiguous() => e,
            Err(e) => return Err(e),
        };
        let Ok(resp) = self.client.clone().get(key, None).await else { return Err(e) };
        let kv = resp.kvs().first();
        let landed = match (kv, value) {
            (None, None) => Some(0),
            (Some(kv), Some(v)) if kv.value() == v && kv.mod_revision() > before => {
                Some(kv.mod_revision())
            }
            _ => None,
        };
        match landed {
            Some(rev) => {
                tracing::debug!(key, revision = rev, error = %e, "a write's reply was lost; read back, it committed");
                Ok(rev)
            }
            None => Err(e),
        }
    }

    /// Checks, writing nothing, that this store's fence (if any) still
    /// holds: a controller calls it right before a side effect outside etcd
    /// (a CPI call), so a replica that lost its lease while paused does not
    /// act on the world when it resumes. [`Error::Fenced`] otherwise.
    pub async fn check_fence(&self) -> Result<()> {
        let Some(f) = &self.fence else { return Ok(()) };
        let fence = f.clone();
        self.write(Vec::new(), Vec::new(), || Error::Fenced { fence }).await.map(drop)
    }

    /// Runs a write transaction: `compares` (plus the fence, if any) guard
    /// `ops`. On failure, tells a stale fence apart from a failed
    /// precondition (`otherwise`). Returns the revision of the write.
    pub(crate) async fn write(
        &self,
        mut compares: Vec<Compare>,
        ops: Vec<etcd_client::TxnOp>,
        otherwise: impl FnOnce() -> Error,
    ) -> Result<i64> {
        let mut or_else = Vec::new();
        if let Some(f) = &self.fence {
            compares.push(Compare::create_revision(f.key.clone(), CompareOp::Equal, f.revision));
            or_else.push(etcd_client::TxnOp::get(f.key.clone(), None));
        }
        let writes = !ops.is_empty();
        let txn = Txn::new().when(compares).and_then(ops).or_else(or_else);
        let resp = self.client.clone().txn(txn).await.map_err(Error::etcd("txn"))?;
        if resp.succeeded() {
            let revision = resp.header().map(|h| h.revision()).unwrap_or_default();
            // Every write etcd accepted (not a fence check, which writes
            // nothing), with the fence it carried: what the test of a
            // deposed leader (FAULT-MATRIX A3) reads from a replica's log
            // (`bosh_api::store=debug`) to show that none was accepted
            // under an old term after a newer one began.
            match &self.fence {
                Some(f) if writes => tracing::debug!(revision, fence = %f, "write committed"),
                None if writes => tracing::debug!(revision, "write committed"),
                _ => {}
            }
            return Ok(revision);
        }
        if let Some(f) = &self.fence {
            let current = resp.op_responses().into_iter().find_map(|r| match r {
                TxnOpResponse::Get(g) => Some(g.kvs().first().map(|kv| kv.create_revision())),
                _ => None,
            });
            if current.flatten() != Some(f.revision) {
                return Err(Error::Fenced { fence: f.clone() });
            }
        }
        Err(otherwise())
    }

    /// Compacts etcd's history up to `revision` (an admin operation; tests
    /// use it to force watchers to relist).
    pub async fn compact(&self, revision: i64) -> Result<()> {
        self.client
            .clone()
            .compact(revision, Some(etcd_client::CompactionOptions::new().with_physical()))
            .await
            .map_err(Error::etcd("compact"))?;
        Ok(())
    }
}

/// Which half of an object a key holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Spec,
    Status,
}

impl Side {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Side::Spec => "spec",
            Side::Status => "status",
        }
    }
}

/// The smallest key greater than every key starting with `prefix`.
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn set_revisions(meta: &mut ObjectMeta, spec_rev: i64, status_rev: i64) {
    meta.generation = spec_rev;
    meta.resource_version = spec_rev;
    meta.status_revision = status_rev;
}

fn encode_spec<S: Kind>(obj: &Object<S>) -> Vec<u8> {
    let mut meta = obj.metadata.clone();
    meta.strip_revisions();
    let rec = SpecRecordRef {
        api_version: crate::objects::API_VERSION,
        kind: S::KIND,
        metadata: &meta,
        spec: &obj.spec,
    };
    serde_json::to_vec(&rec).expect("objects always serialize")
}

fn encode_status<S: Kind>(status: &S::Status) -> Vec<u8> {
    serde_json::to_vec(status).expect("statuses always serialize")
}

/// gRPC's `OUT_OF_RANGE`, which tonic answers a response over its
/// decoding limit with.
const OUT_OF_RANGE: i32 = 11;

/// Builds the object stored under key name `name` from its spec key-value
/// and optional status key-value. A record of another apiVersion or kind,
/// or whose metadata names another key, is [`Error::Malformed`]: acting on
/// it would write its status under a key nobody watches, or treat one kind
/// as another.
pub(crate) fn decode_object<S: Kind>(
    name: &str,
    spec: &KeyValue,
    status: Option<&KeyValue>,
) -> Result<Object<S>> {
    let key = || String::from_utf8_lossy(spec.key()).into_owned();
    let rec: SpecRecord<S> = serde_json::from_slice(spec.value())
        .map_err(|source| Error::Decode { key: key(), source })?;
    let malformed = |reason: String| Error::Malformed { key: key(), reason };
    if rec.api_version != crate::objects::API_VERSION {
        return Err(malformed(format!(
            "apiVersion {:?}, expected {:?}",
            rec.api_version,
            crate::objects::API_VERSION
        )));
    }
    if rec.kind != S::KIND {
        return Err(malformed(format!("kind {:?}, expected {:?}", rec.kind, S::KIND)));
    }
    let named = key_name::<S>(rec.metadata.deployment.as_deref(), &rec.metadata.name);
    if named != name {
        return Err(malformed(format!("its metadata names {named:?}, not {name:?}")));
    }
    validate_name(name).map_err(|e| malformed(e.to_string()))?;
    let status_value = match status {
        Some(kv) => serde_json::from_slice(kv.value()).map_err(|source| Error::Decode {
            key: String::from_utf8_lossy(kv.key()).into_owned(),
            source,
        })?,
        None => S::Status::default(),
    };
    let mut metadata = rec.metadata;
    set_revisions(
        &mut metadata,
        spec.mod_revision(),
        status.map(|s| s.mod_revision()).unwrap_or(0),
    );
    Ok(Object {
        api_version: rec.api_version,
        kind: rec.kind,
        metadata,
        spec: rec.spec,
        status: status_value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The range end of a prefix covers exactly the keys under it.
    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_end(b"/bosh/a/"), b"/bosh/a0".to_vec());
        assert_eq!(prefix_end(&[b'a', 0xff]), b"b".to_vec());
        assert_eq!(prefix_end(&[0xff]), vec![0]);
    }
}
