//! The agent's bootstrap settings in the shape BOSH's director sends them
//! through a CPI, and back.
//!
//! BOSH's director never hands a CPI the agent's settings. It calls
//! `create_vm(agent_id, stemcell_cid, cloud_properties, networks,
//! disk_cids, env)` and puts what the agent needs from the director into
//! `env.bosh`: `mbus.urls` (NATS, credentials in the URL), `blobstores`
//! (`[{provider, options}]`), and `group`, `groups`, `tags`. The CPI builds
//! the agent's settings from those. [`director_env`] is the director's half
//! (what boshd's external CPI client sends), [`settings_from_create_vm`] the
//! CPI's half (what `bosh-local-cpi` makes of a request), so that a CPI
//! written for BOSH receives from boshd exactly what BOSH would send it, and
//! our CPI works under a BOSH director.
//!
//! boshd's blobstore is offered as BOSH's `dav` provider: `endpoint` is its
//! URL, `user` is [`DAV_USER`], `password` is the blobstore token (boshd's
//! blobstore takes it as HTTP Basic as well as a bearer token). `mirrors`,
//! the other replicas' addresses, is an option of ours that a dav client
//! ignores. The rest our agent needs rides as extra `env.bosh` keys, as
//! BOSH's director passes every key of its `agent.env.bosh` on:
//! `heartbeat_interval_secs`.

use std::collections::BTreeMap;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde_json::{Map, Value, json};

use super::settings::{BlobstoreSettings, MbusSettings, NetworkSettings, Settings};

/// The blobstore provider boshd's blobstore is offered as.
pub const DAV_PROVIDER: &str = "dav";

/// The user name in the `dav` options (BOSH's conventional agent user;
/// boshd's blobstore checks only the password, the token).
pub const DAV_USER: &str = "agent";

/// Where a VM belongs: BOSH's `env.bosh.group`, `groups` and `tags`, which
/// CPIs turn into IaaS tags and security groups.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VmGroup {
    /// The director's name.
    pub director: String,
    /// The deployment.
    pub deployment: String,
    /// The instance group (`compilation-<id>` for a compile VM, as BOSH).
    pub instance_group: String,
    /// The manifest's top-level `tags`.
    pub tags: Map<String, Value>,
}

impl VmGroup {
    /// `<director>-<deployment>-<instance group>`.
    pub fn group(&self) -> String {
        format!("{}-{}-{}", self.director, self.deployment, self.instance_group)
    }

    /// Every combination BOSH lists, in BOSH's order.
    pub fn groups(&self) -> Vec<String> {
        let (d, dep, g) = (&self.director, &self.deployment, &self.instance_group);
        vec![
            d.clone(),
            dep.clone(),
            g.clone(),
            format!("{d}-{dep}"),
            format!("{dep}-{g}"),
            self.group(),
        ]
    }
}

/// A field of a `create_vm` request (or of the director's settings) that
/// is missing or malformed, named by its path. The reason never quotes the
/// value: it may hold a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct FieldError {
    /// e.g. `env.bosh.mbus.urls[0]`.
    pub path: String,
    /// What is wrong with it.
    pub reason: String,
}

fn field(path: &str, reason: impl Into<String>) -> FieldError {
    FieldError { path: path.to_string(), reason: reason.into() }
}

/// The director's half: `create_vm`'s `env` for an agent with `settings`,
/// made of the manifest's `env`. As BOSH's director does it: the
/// director's agent env (`blobstores`, and our `heartbeat_interval_secs`)
/// under the manifest's `env.bosh` (whose keys win), then `mbus.urls`,
/// `group`, `groups` and `tags` (when there are any) set over it. Empty
/// mbus or blobstore URLs (a test's settings) send no `mbus` or
/// `blobstores`.
pub fn director_env(
    settings: &Settings,
    env: &Value,
    group: Option<&VmGroup>,
) -> Result<Value, FieldError> {
    let mut env = match env {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    let manifest_bosh = match env.remove("bosh") {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    let mut bosh = Map::new();
    if !settings.blobstore.url.is_empty() {
        bosh.insert("blobstores".into(), json!([dav_blobstore(&settings.blobstore)]));
    }
    bosh.insert("heartbeat_interval_secs".into(), settings.heartbeat_interval_secs.into());
    bosh.extend(manifest_bosh);
    if !settings.mbus.url.is_empty() {
        let url = mbus_url(&settings.mbus)?;
        let mbus = bosh.entry("mbus").or_insert_with(|| json!({}));
        if !mbus.is_object() {
            *mbus = json!({});
        }
        mbus["urls"] = json!([url]);
    }
    if let Some(g) = group {
        bosh.insert("group".into(), g.group().into());
        bosh.insert("groups".into(), json!(g.groups()));
        if !g.tags.is_empty() {
            bosh.insert("tags".into(), Value::Object(g.tags.clone()));
        }
    }
    env.insert("bosh".into(), Value::Object(bosh));
    Ok(Value::Object(env))
}

/// boshd's blobstore as one entry of BOSH's `env.bosh.blobstores`.
pub fn dav_blobstore(b: &BlobstoreSettings) -> Value {
    let mut options = json!({"endpoint": b.url, "user": DAV_USER, "password": b.token});
    if !b.mirrors.is_empty() {
        options["mirrors"] = json!(b.mirrors);
    }
    json!({"provider": DAV_PROVIDER, "options": options})
}

/// What userinfo keeps unencoded: RFC 3986's unreserved characters. `%`
/// is encoded too, which `url` alone would leave as an escape.
const USERINFO: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// `nats://<user>:<password>@host:port`, user and password percent-encoded.
pub fn mbus_url(m: &MbusSettings) -> Result<String, FieldError> {
    let bad = |reason: String| field("mbus.url", reason);
    let mut u = url::Url::parse(&m.url).map_err(|e| bad(format!("not a URL ({e})")))?;
    let user = utf8_percent_encode(&m.user, USERINFO).to_string();
    let password = utf8_percent_encode(&m.password, USERINFO).to_string();
    u.set_username(&user).map_err(|()| bad("cannot carry a user".into()))?;
    u.set_password(Some(&password)).map_err(|()| bad("cannot carry a password".into()))?;
    Ok(u.into())
}

/// The CPI's half: our agent's settings from a `create_vm` request's
/// `agent_id`, networks (without their cloud properties) and `env`. `env`
/// goes into the settings whole, as BOSH's CPIs pass it. Without
/// `env.bosh.mbus` or `env.bosh.blobstores` the settings have none (a
/// BOSH CPI would fall back on its own config; the agent cannot connect);
/// a malformed one is an error naming the field.
pub fn settings_from_create_vm(
    agent_id: &str,
    networks: BTreeMap<String, NetworkSettings>,
    env: &Value,
) -> Result<Settings, FieldError> {
    if agent_id.is_empty() {
        return Err(field("agent_id", "empty"));
    }
    let bosh = match env {
        Value::Null => None,
        Value::Object(m) => match m.get("bosh") {
            None | Some(Value::Null) => None,
            Some(Value::Object(b)) => Some(b),
            Some(_) => return Err(field("env.bosh", "not an object")),
        },
        _ => return Err(field("env", "not an object")),
    };
    let get = |k: &str| bosh.and_then(|b| b.get(k)).filter(|v| !v.is_null());
    let mbus = get("mbus").map(parse_mbus).transpose()?.unwrap_or_default();
    let blobstore = get("blobstores").map(parse_blobstores).transpose()?.unwrap_or_default();
    let heartbeat_interval_secs = match get("heartbeat_interval_secs") {
        None => super::settings::default_heartbeat(),
        Some(v) => v.as_u64().ok_or_else(|| {
            field("env.bosh.heartbeat_interval_secs", "not a whole number of seconds")
        })?,
    };
    Ok(Settings {
        agent_id: agent_id.to_string(),
        mbus,
        blobstore,
        networks,
        env: if env.is_null() { json!({}) } else { env.clone() },
        heartbeat_interval_secs,
        ..Default::default()
    })
}

fn parse_mbus(m: &Value) -> Result<MbusSettings, FieldError> {
    let urls = m.as_object().ok_or_else(|| field("env.bosh.mbus", "not an object"))?;
    let first = match urls.get("urls") {
        None | Some(Value::Null) => return Err(field("env.bosh.mbus.urls", "missing")),
        Some(Value::Array(a)) => a.first().ok_or_else(|| field("env.bosh.mbus.urls", "empty"))?,
        Some(_) => return Err(field("env.bosh.mbus.urls", "not a list")),
    };
    let url = first.as_str().ok_or_else(|| field("env.bosh.mbus.urls[0]", "not a string"))?;
    parse_mbus_url(url).map_err(|reason| field("env.bosh.mbus.urls[0]", reason))
}

/// `nats://user:password@host:port` taken apart; the reason never quotes
/// the URL.
fn parse_mbus_url(s: &str) -> Result<MbusSettings, String> {
    let mut u = url::Url::parse(s).map_err(|e| format!("not a URL ({e})"))?;
    if u.scheme() != "nats" {
        return Err(format!("scheme {:?} is not nats", u.scheme()));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err("no host".into());
    }
    let decode = |part: &str, what: &str| {
        percent_decode_str(part)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| format!("the {what} is not UTF-8 once percent-decoded"))
    };
    let user = decode(u.username(), "user")?;
    let password = decode(u.password().unwrap_or_default(), "password")?;
    if user.is_empty() {
        return Err("no user (the agent's NATS credentials go in the URL)".into());
    }
    if password.is_empty() {
        return Err("no password (the agent's NATS credentials go in the URL)".into());
    }
    // Cannot fail: the URL has a host.
    let _ = u.set_password(None);
    let _ = u.set_username("");
    Ok(MbusSettings { url: u.into(), user, password })
}

fn parse_blobstores(v: &Value) -> Result<BlobstoreSettings, FieldError> {
    let first = match v {
        Value::Array(a) => a.first().ok_or_else(|| field("env.bosh.blobstores", "empty"))?,
        _ => return Err(field("env.bosh.blobstores", "not a list")),
    };
    let p = "env.bosh.blobstores[0]";
    let b = first.as_object().ok_or_else(|| field(p, "not an object"))?;
    match b.get("provider").and_then(Value::as_str) {
        Some(DAV_PROVIDER) => {}
        Some(other) => {
            return Err(field(
                &format!("{p}.provider"),
                format!("{other:?}: the bosh-rs agent speaks {DAV_PROVIDER} only"),
            ));
        }
        None => return Err(field(&format!("{p}.provider"), "missing")),
    }
    let options = b
        .get("options")
        .and_then(Value::as_object)
        .ok_or_else(|| field(&format!("{p}.options"), "missing or not an object"))?;
    let string = |k: &str| match options.get(k) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err(field(&format!("{p}.options.{k}"), "empty")),
        Some(_) => Err(field(&format!("{p}.options.{k}"), "not a string")),
        None => Err(field(&format!("{p}.options.{k}"), "missing")),
    };
    let mirrors = match options.get("mirrors") {
        None | Some(Value::Null) => Vec::new(),
        Some(m) => serde_json::from_value(m.clone())
            .map_err(|_| field(&format!("{p}.options.mirrors"), "not a list of URLs"))?,
    };
    Ok(BlobstoreSettings { url: string("endpoint")?, token: string("password")?, mirrors })
}

#[cfg(test)]
mod tests;
