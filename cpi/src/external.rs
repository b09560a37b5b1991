//! The `external` CPI: runs any executable that speaks BOSH's external CPI
//! protocol, so existing BOSH CPIs plug in unchanged.
//!
//! One process per call, as the director does it: a scrubbed environment
//! (PATH, TMPDIR, HOME), one JSON request on stdin, one JSON response on
//! stdout; stderr is the CPI's log. Calls have a timeout after which the
//! process is killed. Error types map onto [`CpiError`] the way BOSH's
//! `external_cpi.rb` does: the types BOSH marks retriable (and any error
//! with `ok_to_retry`) are transient, `VMNotFound`/`DiskNotFound` are
//! not-found, `NotSupported`/`NotImplemented`/"Method is not known" are
//! not-supported, and everything else is permanent.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bosh_api::store::Fence;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::debug;

use super::{CpiError, CpiInfo, CpiResult, CreateVm};

/// Largest CPI stdout accepted, so a runaway CPI cannot exhaust memory.
const MAX_OUTPUT: u64 = 16 << 20;

/// What one CPI call left in its log (stderr and the response's `log`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallLog {
    /// The method called.
    pub method: String,
    /// stderr, then the response's `log` field.
    pub text: String,
}

/// An external CPI executable.
pub struct ExternalCpi {
    name: String,
    exe: PathBuf,
    /// Properties from the cpi config, passed in every request's context.
    properties: serde_json::Map<String, Value>,
    director_uuid: String,
    timeout: Duration,
    logs: Mutex<Vec<CallLog>>,
}

#[derive(Deserialize)]
struct Response {
    #[serde(default)]
    result: Value,
    #[serde(default)]
    error: Option<ResponseError>,
    #[serde(default)]
    log: String,
}

#[derive(Deserialize)]
struct ResponseError {
    #[serde(rename = "type", default)]
    type_: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    ok_to_retry: bool,
}

impl ExternalCpi {
    /// A CPI named `name` run from `exe`.
    pub fn new(name: &str, exe: &Path, properties: serde_json::Map<String, Value>) -> ExternalCpi {
        ExternalCpi {
            name: name.to_string(),
            exe: exe.to_path_buf(),
            properties,
            director_uuid: uuid::Uuid::new_v4().to_string(),
            timeout: Duration::from_secs(600),
            logs: Mutex::new(Vec::new()),
        }
    }

    /// Sets the per-call timeout (default 10 minutes).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Takes the logs of the calls made since the last take (a task's
    /// events carry them).
    pub fn take_logs(&self) -> Vec<CallLog> {
        std::mem::take(&mut self.logs.lock().unwrap())
    }

    /// Makes one call (a mutation under `fence`, when it has one) and
    /// decodes its result.
    async fn call(
        &self,
        method: &'static str,
        arguments: Value,
        request_id: Option<&str>,
        fence: Option<&Fence>,
    ) -> CpiResult<Value> {
        let mut context = self.properties.clone();
        context.insert("director_uuid".into(), self.director_uuid.clone().into());
        let rid = request_id
            .map(str::to_string)
            .unwrap_or_else(|| format!("cpi-{}", uuid::Uuid::new_v4()));
        context.insert("request_id".into(), rid.into());
        if let Some(f) = fence {
            // bosh-rs's addition: lets a CPI refuse a deposed leader's call.
            context.insert("fence".into(), json!({"key": f.key, "revision": f.revision}));
        }
        let request = json!({
            "method": method,
            "arguments": arguments,
            "context": context,
            "api_version": 2,
        });
        let mut child = tokio::process::Command::new(&self.exe)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()))
            .env("TMPDIR", std::env::temp_dir())
            .env("HOME", std::env::var_os("HOME").unwrap_or_else(|| "/".into()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                CpiError::permanent(method, format!("cannot run {}: {e}", self.exe.display()))
            })?;
        let mut stdin = child.stdin.take().expect("piped");
        let mut stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let body = serde_json::to_vec(&request).expect("request serializes");
        let run = async {
            let write = async {
                stdin.write_all(&body).await?;
                drop(stdin);
                Ok::<_, std::io::Error>(())
            };
            let mut out = Vec::new();
            let mut err = Vec::new();
            let mut out_limited = (&mut stdout).take(MAX_OUTPUT);
            let mut err_limited = (&mut stderr).take(MAX_OUTPUT);
            let read_out = out_limited.read_to_end(&mut out);
            let read_err = err_limited.read_to_end(&mut err);
            let (w, o, e) = tokio::join!(write, read_out, read_err);
            w?;
            o?;
            e?;
            let status = child.wait().await?;
            Ok::<_, std::io::Error>((status, out, err))
        };
        let (status, out, err) = match tokio::time::timeout(self.timeout, run).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                return Err(CpiError::Transient {
                    method,
                    message: format!("talking to the CPI: {e}"),
                });
            }
            Err(_) => {
                return Err(CpiError::Transient {
                    method,
                    message: format!("timed out after {:?}", self.timeout),
                });
            }
        };
        let stderr_text = String::from_utf8_lossy(&err).into_owned();
        let response: Response = match serde_json::from_slice(&out) {
            Ok(r) => r,
            Err(e) => {
                self.record(method, stderr_text, "");
                return Err(CpiError::permanent(
                    method,
                    format!("invalid CPI response (exit {status}): {e}"),
                ));
            }
        };
        self.record(method, stderr_text, &response.log);
        debug!(cpi = %self.name, method, "CPI call finished");
        match response.error {
            None => Ok(response.result),
            Some(e) => Err(map_error(method, e, &arguments)),
        }
    }

    fn record(&self, method: &str, stderr: String, log: &str) {
        let mut text = stderr;
        text.push_str(log);
        if !text.is_empty() {
            self.logs.lock().unwrap().push(CallLog { method: method.to_string(), text });
        }
    }
}

/// Maps a CPI error the way BOSH's director does.
fn map_error(method: &'static str, e: ResponseError, args: &Value) -> CpiError {
    let short = e.type_.rsplit("::").next().unwrap_or(&e.type_).to_string();
    let first_arg = args.get(0).and_then(Value::as_str).unwrap_or_default().to_string();
    match short.as_str() {
        "VMNotFound" => CpiError::NotFound { what: "vm", cid: first_arg },
        "DiskNotFound" => CpiError::NotFound { what: "disk", cid: first_arg },
        "NotSupported" | "NotImplemented" => CpiError::NotSupported { method },
        "InvalidCall" if e.message.contains("Method is not known") => {
            CpiError::NotSupported { method }
        }
        "NoDiskSpace" | "DiskNotAttached" | "VMCreationFailed" | "NetworkNotFound" => {
            CpiError::Transient { method, message: format!("{}: {}", e.type_, e.message) }
        }
        _ if e.ok_to_retry => {
            CpiError::Transient { method, message: format!("{}: {}", e.type_, e.message) }
        }
        _ => CpiError::Permanent { method, message: format!("{}: {}", e.type_, e.message) },
    }
}

fn as_string(method: &'static str, v: Value) -> CpiResult<String> {
    match v {
        Value::String(s) => Ok(s),
        // API v2 create_vm returns [vm_cid, networks].
        Value::Array(mut a) if !a.is_empty() => as_string(method, a.swap_remove(0)),
        other => Err(CpiError::permanent(method, format!("expected a cid string, got {other}"))),
    }
}

fn as_bool(method: &'static str, v: Value) -> CpiResult<bool> {
    v.as_bool().ok_or_else(|| CpiError::permanent(method, format!("expected a boolean, got {v}")))
}

#[async_trait]
impl super::Cpi for ExternalCpi {
    fn name(&self) -> &str {
        &self.name
    }

    async fn info(&self) -> CpiResult<CpiInfo> {
        let v = self.call("info", json!([]), None, None).await?;
        serde_json::from_value(v).map_err(|e| CpiError::permanent("info", e))
    }

    async fn create_stemcell(
        &self,
        fence: Option<&Fence>,
        image_path: &Path,
        cloud_properties: &Value,
    ) -> CpiResult<String> {
        let v = self
            .call(
                "create_stemcell",
                json!([image_path.to_string_lossy(), cloud_properties]),
                None,
                fence,
            )
            .await?;
        as_string("create_stemcell", v)
    }

    async fn delete_stemcell(&self, fence: Option<&Fence>, cid: &str) -> CpiResult<()> {
        self.call("delete_stemcell", json!([cid]), None, fence).await.map(drop)
    }

    async fn create_vm(&self, fence: Option<&Fence>, req: &CreateVm) -> CpiResult<String> {
        // BOSH passes the agent's settings in env["bosh"]; the request id
        // rides in the context so the CPI can tag what it creates.
        let mut env = req.env.clone();
        if !env.is_object() {
            env = json!({});
        }
        env["bosh"]["settings"] = serde_json::to_value(&req.settings).expect("settings serialize");
        env["bosh"]["request_id"] = req.request_id.clone().into();
        let args = json!([
            req.agent_id,
            req.stemcell_cid,
            req.cloud_properties,
            req.networks,
            req.disk_cids,
            env,
        ]);
        let v = self.call("create_vm", args, Some(&req.request_id), fence).await?;
        as_string("create_vm", v)
    }

    async fn delete_vm(&self, fence: Option<&Fence>, cid: &str) -> CpiResult<()> {
        self.call("delete_vm", json!([cid]), None, fence).await.map(drop)
    }

    async fn has_vm(&self, cid: &str) -> CpiResult<bool> {
        as_bool("has_vm", self.call("has_vm", json!([cid]), None, None).await?)
    }

    async fn reboot_vm(&self, fence: Option<&Fence>, cid: &str) -> CpiResult<()> {
        self.call("reboot_vm", json!([cid]), None, fence).await.map(drop)
    }

    async fn set_vm_metadata(
        &self,
        fence: Option<&Fence>,
        cid: &str,
        metadata: &BTreeMap<String, String>,
    ) -> CpiResult<()> {
        self.call("set_vm_metadata", json!([cid, metadata]), None, fence).await.map(drop)
    }

    async fn calculate_vm_cloud_properties(&self, resources: &Value) -> CpiResult<Value> {
        self.call("calculate_vm_cloud_properties", json!([resources]), None, None).await
    }

    async fn find_vm_by_request(&self, request_id: &str) -> CpiResult<Option<String>> {
        // bosh-rs's extension of the protocol (`bosh-local-cpi` answers
        // it); a stock BOSH CPI answers "Method is not known", which is
        // NotSupported, and callers fall back.
        let v = self.call("find_vm_by_request", json!([request_id]), None, None).await?;
        as_optional_string("find_vm_by_request", v)
    }

    async fn create_disk(
        &self,
        fence: Option<&Fence>,
        request_id: &str,
        size_mb: u64,
        cloud_properties: &Value,
        vm_hint: Option<&str>,
    ) -> CpiResult<String> {
        let v = self
            .call(
                "create_disk",
                json!([size_mb, cloud_properties, vm_hint]),
                Some(request_id),
                fence,
            )
            .await?;
        as_string("create_disk", v)
    }

    async fn delete_disk(&self, fence: Option<&Fence>, cid: &str) -> CpiResult<()> {
        self.call("delete_disk", json!([cid]), None, fence).await.map(drop)
    }

    async fn has_disk(&self, cid: &str) -> CpiResult<bool> {
        as_bool("has_disk", self.call("has_disk", json!([cid]), None, None).await?)
    }

    async fn attach_disk(
        &self,
        fence: Option<&Fence>,
        vm_cid: &str,
        disk_cid: &str,
    ) -> CpiResult<()> {
        self.call("attach_disk", json!([vm_cid, disk_cid]), None, fence).await.map(drop)
    }

    async fn detach_disk(
        &self,
        fence: Option<&Fence>,
        vm_cid: &str,
        disk_cid: &str,
    ) -> CpiResult<()> {
        self.call("detach_disk", json!([vm_cid, disk_cid]), None, fence).await.map(drop)
    }

    async fn get_disks(&self, vm_cid: &str) -> CpiResult<Vec<String>> {
        let v = self.call("get_disks", json!([vm_cid]), None, None).await?;
        serde_json::from_value(v).map_err(|e| CpiError::permanent("get_disks", e))
    }

    async fn resize_disk(&self, fence: Option<&Fence>, cid: &str, size_mb: u64) -> CpiResult<()> {
        self.call("resize_disk", json!([cid, size_mb]), None, fence).await.map(drop)
    }

    async fn snapshot_disk(
        &self,
        fence: Option<&Fence>,
        cid: &str,
        metadata: &BTreeMap<String, String>,
    ) -> CpiResult<String> {
        let v = self.call("snapshot_disk", json!([cid, metadata]), None, fence).await?;
        as_string("snapshot_disk", v)
    }

    async fn delete_snapshot(&self, fence: Option<&Fence>, snapshot_cid: &str) -> CpiResult<()> {
        self.call("delete_snapshot", json!([snapshot_cid]), None, fence).await.map(drop)
    }

    async fn find_disk_by_request(&self, request_id: &str) -> CpiResult<Option<String>> {
        let v = self.call("find_disk_by_request", json!([request_id]), None, None).await?;
        as_optional_string("find_disk_by_request", v)
    }

    async fn list_vms(&self) -> CpiResult<Vec<super::ListedVm>> {
        let v = self.call("list_vms", json!([]), None, None).await?;
        serde_json::from_value(v).map_err(|e| CpiError::permanent("list_vms", e))
    }
}

fn as_optional_string(method: &'static str, v: Value) -> CpiResult<Option<String>> {
    match v {
        Value::Null => Ok(None),
        v => as_string(method, v).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(t: &str, msg: &str, retry: bool) -> ResponseError {
        ResponseError { type_: t.into(), message: msg.into(), ok_to_retry: retry }
    }

    /// BOSH's error types map to the caller's choices as the director maps them.
    #[test]
    fn error_types_map_like_the_director() {
        let args = json!(["vm-1"]);
        assert!(
            matches!(map_error("has_vm", err("Bosh::Clouds::VMNotFound", "", false), &args), CpiError::NotFound { what: "vm", ref cid } if cid == "vm-1")
        );
        assert!(
            map_error("m", err("Bosh::Clouds::VMCreationFailed", "x", false), &args).is_retryable()
        );
        assert!(map_error("m", err("Bosh::Clouds::CloudError", "x", true), &args).is_retryable());
        assert!(!map_error("m", err("Bosh::Clouds::CloudError", "x", false), &args).is_retryable());
        assert!(matches!(
            map_error("m", err("Bosh::Clouds::NotImplemented", "", false), &args),
            CpiError::NotSupported { .. }
        ));
        assert!(matches!(
            map_error("m", err("InvalidCall", "Method is not known, got 'x'", false), &args),
            CpiError::NotSupported { .. }
        ));
    }
}
