//! The CPI side of BOSH's external CPI protocol: one JSON request
//! (`method`, `arguments`, `context`) in, one JSON response (`result`,
//! `error: {type, message, ok_to_retry}`, `log`) out, served by any
//! [`Cpi`]. `bosh-local-cpi` is the local CPI behind it, so the director's
//! external path ([`crate::external::ExternalCpi`]) runs end to end.
//!
//! Besides BOSH's methods it answers bosh-rs's lookups by request id
//! (`find_vm_by_request`, `find_disk_by_request`) and `list_vms`; a CPI
//! that does not (any stock BOSH CPI) answers "Method is not known", which
//! the director reads as not supported and falls back.

use std::collections::BTreeMap;
use std::path::PathBuf;

use bosh_api::agent::bosh_env;
use bosh_api::store::Fence;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{Cpi, CpiError, CreateVm, VmNetwork};

/// One request as the director writes it.
#[derive(Debug, Deserialize)]
pub struct Request {
    /// The method.
    pub method: String,
    /// Its positional arguments.
    #[serde(default)]
    pub arguments: Vec<Value>,
    /// `director_uuid`, `request_id`, the CPI config's properties, and
    /// bosh-rs's `fence`.
    #[serde(default)]
    pub context: serde_json::Map<String, Value>,
    /// The CPI API version the director speaks (none: v1, as a director
    /// that has not asked `info` sends none).
    #[serde(default)]
    pub api_version: Option<u32>,
}

/// A malformed argument: BOSH's `InvalidCall`.
fn invalid(message: impl std::fmt::Display) -> Value {
    json!({"type": "InvalidCall", "message": message.to_string(), "ok_to_retry": false})
}

fn arg<T: serde::de::DeserializeOwned>(req: &Request, i: usize, what: &str) -> Result<T, Value> {
    let v = req.arguments.get(i).cloned().unwrap_or(Value::Null);
    serde_json::from_value(v).map_err(|e| invalid(format!("argument {i} ({what}): {e}")))
}

/// A CPI error as BOSH's `Bosh::Clouds` types.
fn cloud_error(e: CpiError) -> Value {
    let (type_, retry) = match &e {
        CpiError::NotFound { what: "vm", .. } => ("Bosh::Clouds::VMNotFound", false),
        CpiError::NotFound { what: "disk", .. } => ("Bosh::Clouds::DiskNotFound", false),
        CpiError::NotFound { .. } => ("Bosh::Clouds::CloudError", false),
        CpiError::NotSupported { .. } => ("Bosh::Clouds::NotImplemented", false),
        CpiError::Transient { .. } => ("Bosh::Clouds::CloudError", true),
        CpiError::Permanent { .. } => ("Bosh::Clouds::CloudError", false),
    };
    json!({"type": type_, "message": e.to_string(), "ok_to_retry": retry})
}

/// The fence the director passed, if any.
fn fence(req: &Request) -> Option<Fence> {
    let f = req.context.get("fence")?;
    Some(Fence { key: f.get("key")?.as_str()?.to_string(), revision: f.get("revision")?.as_i64()? })
}

/// `context.vm.stemcell.api_version`, when the director sent it.
fn stemcell_api_version(req: &Request) -> Option<u32> {
    let v = req.context.get("vm")?.pointer("/stemcell/api_version")?.as_u64()?;
    u32::try_from(v).ok()
}

/// Serves one request with `cpi`; the response to print.
pub async fn serve(cpi: &dyn Cpi, req: &Request) -> Value {
    let result = dispatch(cpi, req).await;
    match result {
        Ok(v) => json!({"result": v, "error": null, "log": ""}),
        Err(e) => json!({"result": null, "error": e, "log": ""}),
    }
}

async fn dispatch(cpi: &dyn Cpi, req: &Request) -> Result<Value, Value> {
    // `disabled_methods` (a property): answer as a CPI without them does,
    // so the director's fallbacks for stock BOSH CPIs are exercised.
    let disabled = req.context.get("disabled_methods").and_then(Value::as_array);
    let is_disabled = |m: &str| disabled.is_some_and(|d| d.iter().any(|x| x.as_str() == Some(m)));
    if is_disabled(&req.method) {
        return Err(invalid(format!("Method is not known, got '{}'", req.method)));
    }
    // Without the lookups it is a stock CPI, which knows nothing of
    // request ids: every create is a new VM or disk, even a retried one.
    let stock = is_disabled("find_vm_by_request");
    let fresh = || format!("stock-{}", uuid::Uuid::new_v4());
    let f = fence(req);
    let f = f.as_ref();
    let v2 = req.api_version.is_some_and(|v| v >= 2);
    let rid = req.context.get("request_id").and_then(Value::as_str).unwrap_or_default();
    let s = |i: usize, what: &str| arg::<String>(req, i, what);
    let done = |r: Result<(), CpiError>| r.map(|()| Value::Null).map_err(cloud_error);
    let value = |r: Result<Value, CpiError>| r.map_err(cloud_error);
    match req.method.as_str() {
        "info" => {
            let info = cpi.info().await.map_err(cloud_error)?;
            Ok(json!({"stemcell_formats": info.stemcell_formats, "api_version": 2}))
        }
        "create_stemcell" => {
            let path: PathBuf = arg(req, 0, "image_path")?;
            let props: Value = arg(req, 1, "cloud_properties")?;
            value(cpi.create_stemcell(f, &path, &props).await.map(Value::from))
        }
        "delete_stemcell" => done(cpi.delete_stemcell(f, &s(0, "stemcell_cid")?).await),
        "create_vm" => {
            // As a BOSH CPI: the agent's settings are built from the
            // request (agent id, networks, env.bosh's mbus URL and
            // blobstores); the request id comes in the context.
            let agent_id = s(0, "agent_id")?;
            let networks = arg::<BTreeMap<String, VmNetwork>>(req, 3, "networks")?;
            let env: Value = arg(req, 5, "env")?;
            let agent_networks = networks.iter().map(|(n, v)| (n.clone(), v.agent_settings()));
            let settings =
                bosh_env::settings_from_create_vm(&agent_id, agent_networks.collect(), &env)
                    .map_err(invalid)?;
            let request_id = if stock { fresh() } else { rid.to_string() };
            let req = CreateVm {
                request_id,
                agent_id,
                stemcell_cid: s(1, "stemcell_cid")?,
                cloud_properties: arg(req, 2, "cloud_properties")?,
                networks,
                disk_cids: arg::<Option<Vec<String>>>(req, 4, "disk_cids")?.unwrap_or_default(),
                settings,
                env,
                group: None,
                stemcell_api_version: stemcell_api_version(req),
            };
            // API v2: [vm_cid, networks]; v1: the cid.
            let cid = cpi.create_vm(f, &req).await.map_err(cloud_error)?;
            Ok(if v2 { json!([cid, req.networks]) } else { Value::from(cid) })
        }
        "delete_vm" => done(cpi.delete_vm(f, &s(0, "vm_cid")?).await),
        "has_vm" => value(cpi.has_vm(&s(0, "vm_cid")?).await.map(Value::from)),
        "reboot_vm" => done(cpi.reboot_vm(f, &s(0, "vm_cid")?).await),
        "set_vm_metadata" => {
            let m: BTreeMap<String, String> = arg(req, 1, "metadata")?;
            done(cpi.set_vm_metadata(f, &s(0, "vm_cid")?, &m).await)
        }
        "calculate_vm_cloud_properties" => {
            value(cpi.calculate_vm_cloud_properties(&arg(req, 0, "vm_resources")?).await)
        }
        "create_disk" => {
            let size: u64 = arg(req, 0, "size")?;
            let props: Value = arg(req, 1, "cloud_properties")?;
            let vm: Option<String> = arg(req, 2, "vm_locality")?;
            let request = if stock { fresh() } else { rid.to_string() };
            let cid = cpi.create_disk(f, &request, size, &props, vm.as_deref()).await;
            value(cid.map(Value::from))
        }
        "delete_disk" => done(cpi.delete_disk(f, &s(0, "disk_cid")?).await),
        "has_disk" => value(cpi.has_disk(&s(0, "disk_cid")?).await.map(Value::from)),
        "attach_disk" => {
            let (vm, disk) = (s(0, "vm_cid")?, s(1, "disk_cid")?);
            cpi.attach_disk(f, &vm, &disk).await.map_err(cloud_error)?;
            // API v2: the disk hint (the local CPI mounts by cid).
            Ok(if v2 { Value::from(disk) } else { Value::Null })
        }
        "detach_disk" => done(cpi.detach_disk(f, &s(0, "vm_cid")?, &s(1, "disk_cid")?).await),
        "get_disks" => value(cpi.get_disks(&s(0, "vm_cid")?).await.map(|d| json!(d))),
        "resize_disk" => {
            let size: u64 = arg(req, 1, "new_size")?;
            done(cpi.resize_disk(f, &s(0, "disk_cid")?, size).await)
        }
        "snapshot_disk" => {
            let m: BTreeMap<String, String> = arg(req, 1, "metadata")?;
            value(cpi.snapshot_disk(f, &s(0, "disk_cid")?, &m).await.map(Value::from))
        }
        "delete_snapshot" => done(cpi.delete_snapshot(f, &s(0, "snapshot_cid")?).await),
        "find_vm_by_request" => {
            value(cpi.find_vm_by_request(&s(0, "request_id")?).await.map(|c| json!(c)))
        }
        "find_disk_by_request" => {
            value(cpi.find_disk_by_request(&s(0, "request_id")?).await.map(|c| json!(c)))
        }
        "list_vms" => value(cpi.list_vms().await.map(|v| json!(v))),
        other => Err(invalid(format!("Method is not known, got '{other}'"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create_vm(env: Value) -> Request {
        serde_json::from_value(json!({
            "method": "create_vm",
            "arguments": ["agent-1", "sc-1", {}, {"default": {"type": "manual", "ip": "10.0.0.9"}},
                          [], env],
            "context": {"request_id": "req-1", "director_uuid": "d-1"},
            "api_version": 2,
        }))
        .unwrap()
    }

    /// A BOSH-shaped `create_vm` whose env the agent's settings cannot be
    /// built from is BOSH's `InvalidCall`, naming the field and not its
    /// value; nothing reaches the CPI (no stemcell `sc-1` exists, which
    /// would be a `CloudError`).
    #[tokio::test]
    async fn a_malformed_env_is_an_invalid_call_naming_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let cpi = crate::local::LocalCpi::open(dir.path()).unwrap();
        let cases = [
            (
                json!({"bosh": {"mbus": {"urls": ["nats://agent-1@h:4222"]}}}),
                "env.bosh.mbus.urls[0]",
            ),
            (
                json!({"bosh": {"mbus": {"urls": ["https://u:pw-secret@h"]}}}),
                "env.bosh.mbus.urls[0]",
            ),
            (
                json!({"bosh": {"blobstores": [{"provider": "s3", "options": {"secret": "pw-secret"}}]}}),
                "env.bosh.blobstores[0].provider",
            ),
        ];
        for (env, path) in cases {
            let response = serve(&cpi, &create_vm(env.clone())).await;
            let e = &response["error"];
            assert_eq!(e["type"], "InvalidCall", "{env}: {response}");
            let message = e["message"].as_str().unwrap();
            assert!(message.starts_with(&format!("{path}: ")), "{env}: {message}");
            assert!(!message.contains("pw-secret"), "{message}");
        }
        // Well formed, it reaches the CPI, which has no such stemcell.
        let env = json!({"bosh": {"mbus": {"urls": ["nats://agent-1:pw@h:4222"]}}});
        let response = serve(&cpi, &create_vm(env)).await;
        assert_eq!(response["error"]["type"], "Bosh::Clouds::CloudError", "{response}");
    }
}
