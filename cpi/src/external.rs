//! The `external` CPI: runs any executable that speaks BOSH's external CPI
//! protocol, so existing BOSH CPIs plug in unchanged.
//!
//! One process per call, as the director does it: a scrubbed environment
//! (PATH, TMPDIR, HOME), one JSON request on stdin, one JSON response on
//! stdout; stderr is the CPI's log. Calls have a timeout after which the
//! process is killed. Error types map onto [`CpiError`] the way BOSH's
//! `external_cpi.rb` does: the types BOSH marks retriable (`NoDiskSpace`,
//! `DiskNotAttached`, `VMCreationFailed`) are transient when the CPI says
//! `ok_to_retry`, `VMNotFound`/`DiskNotFound` are not-found,
//! `NotSupported`/`NotImplemented`/"Method is not known" are not-supported,
//! a type BOSH does not know is permanent ("Unknown CPI error"), and so is
//! everything else. A call that times out, or whose process is killed by a
//! signal before it answers, is transient: it may have taken effect, and
//! the caller's retry looks up what it made before making anything again.
//!
//! [`ExternalCpi::connect`] asks the CPI's `info` first, as BOSH's cloud
//! factory does, and speaks the lesser of the CPI's API version and the
//! director's ([`DIRECTOR_API_VERSION`]) from then on: `api_version` in
//! every request, `create_vm` answering `[vm_cid, ...]` under v2 and a plain
//! cid under v1, `attach_disk` answering a disk hint under v2. A CPI whose
//! `info` fails or answers nonsense is spoken to as v1, which is what
//! BOSH does too; one that cannot be run at all is an error.
//!
//! What a call logs (stderr and the response's `log`) is redacted and goes
//! to the task the call was made for (see [`crate::call_log`]).

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use bosh_api::agent::bosh_env;
use bosh_api::store::Fence;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, info, warn};

pub use crate::call_log::CallLog;
use crate::call_log::{CallLogSink, MAX_LOG_BYTES, Redactor, current_task, truncate};

use super::{CpiError, CpiInfo, CpiResult, CreateVm};

/// Largest CPI stdout accepted, so a runaway CPI cannot exhaust memory.
const MAX_OUTPUT: u64 = 16 << 20;

/// Call logs kept for [`ExternalCpi::take_logs`] when no sink takes them
/// (the oldest go first).
const MAX_KEPT_LOGS: usize = 1000;

/// The highest CPI API version this director speaks (BOSH's director
/// prefers 2).
pub const DIRECTOR_API_VERSION: u32 = 2;

/// Why an external CPI cannot be used at all.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The executable is missing or not executable.
    #[error("the CPI executable {path} cannot be run: {reason}")]
    NotExecutable {
        /// The executable.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// What `info` told the director, and the API version spoken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// `info`'s answer (`api_version` 1 when it had none, or failed).
    pub info: CpiInfo,
    /// min(the CPI's, [`DIRECTOR_API_VERSION`]): sent in every request.
    pub api_version: u32,
    /// Why `info` was not used, when it was not.
    pub info_error: Option<String>,
}

/// An external CPI executable.
pub struct ExternalCpi {
    name: String,
    exe: PathBuf,
    /// Properties from the cpi config, passed in every request's context.
    properties: serde_json::Map<String, Value>,
    director_uuid: String,
    timeout: Duration,
    /// Set by [`ExternalCpi::connect`]; until then no `api_version` is
    /// sent and either shape of `create_vm`'s answer is taken.
    negotiated: OnceLock<Negotiated>,
    /// The stemcell API version to pass in `context.vm.stemcell`.
    stemcell_api_version: Option<u32>,
    /// The cpi properties' secrets.
    redactor: Redactor,
    sink: Option<Arc<dyn CallLogSink>>,
    logs: Mutex<Vec<CallLog>>,
}

#[derive(Deserialize)]
struct Response {
    #[serde(default)]
    result: Value,
    #[serde(default)]
    error: Option<ResponseError>,
    #[serde(default)]
    log: Option<Value>,
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

/// The error types BOSH's director knows (`KNOWN_RPC_ERRORS`); any other
/// is an "Unknown CPI error".
const KNOWN_ERRORS: &[&str] = &[
    "Bosh::Clouds::CpiError",
    "Bosh::Clouds::NotSupported",
    "Bosh::Clouds::NotImplemented",
    "Bosh::Clouds::CloudError",
    "Bosh::Clouds::VMNotFound",
    "Bosh::Clouds::NetworkNotFound",
    "Bosh::Clouds::NoDiskSpace",
    "Bosh::Clouds::DiskNotAttached",
    "Bosh::Clouds::DiskNotFound",
    "Bosh::Clouds::VMCreationFailed",
];

impl ExternalCpi {
    /// A CPI named `name` run from `exe`.
    pub fn new(name: &str, exe: &Path, properties: serde_json::Map<String, Value>) -> ExternalCpi {
        let mut redactor = Redactor::default();
        redactor.add_secrets_of(&Value::Object(properties.clone()));
        ExternalCpi {
            name: name.to_string(),
            exe: exe.to_path_buf(),
            properties,
            director_uuid: uuid::Uuid::new_v4().to_string(),
            timeout: Duration::from_secs(600),
            negotiated: OnceLock::new(),
            stemcell_api_version: None,
            redactor,
            sink: None,
            logs: Mutex::new(Vec::new()),
        }
    }

    /// Sets the per-call timeout (default 10 minutes).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends call logs made during a task to `sink` (instead of keeping
    /// them for [`ExternalCpi::take_logs`]).
    pub fn with_log_sink(mut self, sink: Arc<dyn CallLogSink>) -> Self {
        self.sink = Some(sink);
        self
    }

    /// Passes `context.vm.stemcell.api_version` (BOSH passes the stemcell's
    /// API version when it knows it).
    pub fn with_stemcell_api_version(mut self, version: Option<u32>) -> Self {
        self.stemcell_api_version = version;
        self
    }

    /// Checks the executable can be run and asks its `info`, as BOSH's
    /// director does when it sets a CPI up, then speaks the negotiated API
    /// version. A failing or nonsensical `info` is not fatal (BOSH falls
    /// back to API v1 too); it is reported in [`Negotiated::info_error`].
    pub async fn connect(self) -> Result<(ExternalCpi, Negotiated), ConnectError> {
        check_executable(&self.exe)?;
        let (info, info_error) = match self.call("info", json!([]), None, None).await {
            Ok(v) => match parse_info(&v) {
                Ok(i) => (i, None),
                Err(e) => (CpiInfo { api_version: 1, ..Default::default() }, Some(e)),
            },
            Err(e) => (CpiInfo { api_version: 1, ..Default::default() }, Some(e.to_string())),
        };
        let api_version = info.api_version.clamp(1, DIRECTOR_API_VERSION);
        let n = Negotiated { info, api_version, info_error };
        match &n.info_error {
            None => {
                info!(cpi = %self.name, exe = %self.exe.display(), cpi_api_version = n.info.api_version,
                api_version = n.api_version, stemcell_formats = ?n.info.stemcell_formats, "external CPI ready")
            }
            Some(e) => warn!(cpi = %self.name, exe = %self.exe.display(), error = %e,
                "the CPI's info failed; speaking CPI API v1 to it, as BOSH does"),
        }
        let _ = self.negotiated.set(n.clone());
        Ok((self, n))
    }

    /// The API version spoken, once [`ExternalCpi::connect`] settled it.
    pub fn api_version(&self) -> Option<u32> {
        self.negotiated.get().map(|n| n.api_version)
    }

    /// Takes the logs of the calls made outside any task (or all, without
    /// a sink) since the last take.
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
        self.call_for_stemcell(method, arguments, request_id, fence, None).await
    }

    /// [`ExternalCpi::call`], naming the stemcell API version of the VM
    /// the call is for (`create_vm`), over the one set for every call.
    async fn call_for_stemcell(
        &self,
        method: &'static str,
        arguments: Value,
        request_id: Option<&str>,
        fence: Option<&Fence>,
        stemcell_api_version: Option<u32>,
    ) -> CpiResult<Value> {
        let mut context = self.properties.clone();
        context.insert("director_uuid".into(), self.director_uuid.clone().into());
        let rid = request_id
            .map(str::to_string)
            .unwrap_or_else(|| format!("cpi-{}", uuid::Uuid::new_v4()));
        context.insert("request_id".into(), rid.clone().into());
        if let Some(v) = stemcell_api_version.or(self.stemcell_api_version) {
            context.insert("vm".into(), json!({"stemcell": {"api_version": v}}));
        }
        if let Some(f) = fence {
            // bosh-rs's addition: lets a CPI refuse a deposed leader's call.
            context.insert("fence".into(), json!({"key": f.key, "revision": f.revision}));
        }
        let mut request = json!({
            "method": method,
            "arguments": arguments,
            "context": context,
        });
        // As BOSH: no `api_version` until `info` settled it.
        if let Some(v) = self.api_version() {
            request["api_version"] = v.into();
        }
        // The call's own secrets (the agent's NATS password in create_vm's
        // mbus URL, the blobstore password, secret-named cloud properties)
        // are redacted with the CPI's.
        let mut redactor = self.redactor.clone();
        redactor.add_secrets_of(&arguments);
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
                // A CPI that exits without reading its request is not a
                // failure to talk to it: its answer (or lack of one) is.
                match stdin.write_all(&body).await {
                    Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e),
                    _ => {}
                }
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
                    message: format!("talking to the CPI {}: {e}", self.exe.display()),
                });
            }
            Err(_) => {
                let note = format!(
                    "[director] {method} timed out after {:?}; the CPI process was killed\n",
                    self.timeout
                );
                self.record(method, &rid, &redactor, note, "").await;
                return Err(CpiError::Transient {
                    method,
                    message: format!(
                        "timed out after {:?} (CPI request ID: '{rid}')",
                        self.timeout
                    ),
                });
            }
        };
        let stderr_text = String::from_utf8_lossy(&err).into_owned();
        let response: Response = match serde_json::from_slice(&out) {
            Ok(r) => r,
            Err(_) if out.is_empty() && status.signal().is_some() => {
                // Killed before it answered (the OOM killer, an operator, a
                // node going down): nothing says the call was wrong, and it
                // may have taken effect. Like a timeout, a retry is the
                // answer; the retry looks up what the call made (by request
                // id, or through the agent) before making anything again.
                let signal = status.signal().unwrap_or_default();
                let said = last_lines(&redactor.redact(&stderr_text), 512);
                self.record(method, &rid, &redactor, stderr_text, "").await;
                let mut message =
                    format!("the CPI process was killed by signal {signal} before it answered");
                if !said.is_empty() {
                    message.push_str(&format!(" (stderr: {said:?})"));
                }
                message.push_str(&format!(" (CPI request ID: '{rid}')"));
                return Err(CpiError::Transient { method, message });
            }
            Err(e) => {
                let said = last_lines(&redactor.redact(&stderr_text), 512);
                let printed = last_lines(&redactor.redact(&String::from_utf8_lossy(&out)), 256);
                self.record(method, &rid, &redactor, stderr_text, "").await;
                let mut message = format!("Invalid CPI response - {e} (exit {status}");
                if !printed.is_empty() {
                    message.push_str(&format!("; stdout: {printed:?}"));
                }
                if !said.is_empty() {
                    message.push_str(&format!("; stderr: {said:?}"));
                }
                message.push_str(&format!(") (CPI request ID: '{rid}')"));
                return Err(CpiError::permanent(method, message));
            }
        };
        let log = match &response.log {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        };
        self.record(method, &rid, &redactor, stderr_text, &log).await;
        debug!(cpi = %self.name, method, request_id = %rid, "CPI call finished");
        match response.error {
            None => Ok(response.result),
            Some(e) => {
                let e = ResponseError { message: redactor.redact(&e.message), ..e };
                Err(map_error(method, e, &arguments, &rid))
            }
        }
    }

    /// Keeps what a call logged: with its task's log through the sink, or
    /// (outside a task, or without a sink) for [`ExternalCpi::take_logs`].
    async fn record(
        &self,
        method: &str,
        request_id: &str,
        redactor: &Redactor,
        stderr: String,
        log: &str,
    ) {
        let mut text = stderr;
        text.push_str(log);
        if text.is_empty() {
            return;
        }
        let text = truncate(redactor.redact(&text), MAX_LOG_BYTES);
        let entry =
            CallLog { method: method.to_string(), request_id: request_id.to_string(), text };
        if let (Some(sink), Some(task)) = (&self.sink, current_task()) {
            sink.write(task, entry).await;
            return;
        }
        let mut logs = self.logs.lock().unwrap();
        if logs.len() >= MAX_KEPT_LOGS {
            logs.remove(0);
        }
        logs.push(entry);
    }
}

/// The tail of `text`, at most `max` bytes of its last lines, trimmed.
fn last_lines(text: &str, max: usize) -> String {
    let t = text.trim();
    if t.len() <= max {
        return t.to_string();
    }
    let mut start = t.len() - max;
    while !t.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &t[start..])
}

/// Refuses an executable that cannot be run (BOSH: `NonExecutable`).
fn check_executable(exe: &Path) -> Result<(), ConnectError> {
    use std::os::unix::fs::PermissionsExt;
    let fail = |reason: String| ConnectError::NotExecutable { path: exe.to_path_buf(), reason };
    let meta = std::fs::metadata(exe).map_err(|e| fail(e.to_string()))?;
    if !meta.is_file() {
        return Err(fail("not a file".into()));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(fail("not executable".into()));
    }
    Ok(())
}

/// `info`'s result: an object with `stemcell_formats` (a list of strings)
/// and `api_version` (a positive integer; none means 1).
fn parse_info(v: &Value) -> Result<CpiInfo, String> {
    let Some(o) = v.as_object() else {
        return Err(format!("info answered {v}, not an object"));
    };
    let api_version = match o.get("api_version") {
        None | Some(Value::Null) => 1,
        Some(n) => match n.as_u64() {
            Some(n @ 1..=1000) => n as u32,
            _ => return Err(format!("info's api_version is {n}, not a positive integer")),
        },
    };
    let stemcell_formats = match o.get("stemcell_formats") {
        None | Some(Value::Null) => Vec::new(),
        Some(f) => serde_json::from_value(f.clone())
            .map_err(|e| format!("info's stemcell_formats {f}: {e}"))?,
    };
    Ok(CpiInfo { stemcell_formats, api_version })
}

/// Maps a CPI error the way BOSH's director does; the message is BOSH's
/// (`CPI error 'T' with message 'M' ... (CPI request ID: 'R')`), the
/// method named by [`CpiError`]'s own text.
fn map_error(method: &'static str, e: ResponseError, args: &Value, rid: &str) -> CpiError {
    let first_arg = args.get(0).and_then(Value::as_str).unwrap_or_default().to_string();
    let said =
        format!("CPI error '{}' with message '{}' (CPI request ID: '{rid}')", e.type_, e.message);
    let not_known = (e.type_ == "InvalidCall" && e.message.starts_with("Method is not known"))
        || (e.type_ == "Bosh::Clouds::CloudError" && e.message.starts_with("Invalid Method:"));
    if not_known {
        return CpiError::NotSupported { method };
    }
    if !KNOWN_ERRORS.contains(&e.type_.as_str()) {
        let message = format!(
            "Unknown CPI error '{}' with message '{}' (CPI request ID: '{rid}')",
            e.type_, e.message
        );
        return CpiError::Permanent { method, message };
    }
    let short = e.type_.rsplit("::").next().unwrap_or(&e.type_);
    match short {
        "VMNotFound" => CpiError::NotFound { what: "vm", cid: first_arg },
        "DiskNotFound" => CpiError::NotFound { what: "disk", cid: first_arg },
        "NotSupported" | "NotImplemented" => CpiError::NotSupported { method },
        // BOSH's retriable errors carry whether a retry may help.
        "NoDiskSpace" | "DiskNotAttached" | "VMCreationFailed" if e.ok_to_retry => {
            CpiError::Transient { method, message: said }
        }
        // So may the others (BOSH ignores it there; retrying is ours).
        _ if e.ok_to_retry => CpiError::Transient { method, message: said },
        _ => CpiError::Permanent { method, message: said },
    }
}

/// `create_vm`'s cid: a plain cid under API v1, `[vm_cid, networks, ...]`
/// under v2; either before `info` settled the version.
fn vm_cid(api_version: Option<u32>, v: Value) -> CpiResult<String> {
    let m = "create_vm";
    match (api_version, v) {
        (Some(1) | None, Value::String(s)) => Ok(s),
        (Some(2..) | None, Value::Array(a)) => match a.into_iter().next() {
            Some(Value::String(s)) => Ok(s),
            first => Err(CpiError::permanent(
                m,
                format!("CPI API v2 create_vm answered [{first:?}, ...]: no vm cid first"),
            )),
        },
        (Some(v), other) => Err(CpiError::permanent(
            m,
            format!(
                "create_vm answered {other}, expected {} under CPI API v{v}",
                if v >= 2 { "[vm_cid, networks]" } else { "a vm cid string" }
            ),
        )),
        (None, other) => {
            Err(CpiError::permanent(m, format!("expected a vm cid string, got {other}")))
        }
    }
}

fn as_string(method: &'static str, v: Value) -> CpiResult<String> {
    match v {
        Value::String(s) => Ok(s),
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
        parse_info(&v).map_err(|e| CpiError::permanent("info", e))
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
        // As BOSH's director: what the agent needs from the director goes
        // in env.bosh (mbus URL with its credentials, blobstores, groups),
        // and the CPI builds the agent's settings; the request id rides in
        // the context so the CPI can tag what it creates.
        let env = bosh_env::director_env(&req.settings, &req.env, req.group.as_ref())
            .map_err(|e| CpiError::permanent("create_vm", e))?;
        let args = json!([
            req.agent_id,
            req.stemcell_cid,
            req.cloud_properties,
            req.networks,
            req.disk_cids,
            env,
        ]);
        let rid = Some(req.request_id.as_str());
        let v =
            self.call_for_stemcell("create_vm", args, rid, fence, req.stemcell_api_version).await?;
        vm_cid(self.api_version(), v)
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
        let hint = self.call("attach_disk", json!([vm_cid, disk_cid]), None, fence).await?;
        // API v2 answers the disk hint (BOSH: "No disk_hint" without one);
        // v1's answer means nothing.
        if self.api_version().is_some_and(|v| v >= 2) {
            let empty = match &hint {
                Value::Null => true,
                Value::String(s) => s.is_empty(),
                Value::Object(o) => o.is_empty(),
                Value::Array(a) => a.is_empty(),
                _ => false,
            };
            if empty {
                return Err(CpiError::permanent("attach_disk", "No disk_hint (CPI API v2)"));
            }
            debug!(cpi = %self.name, vm_cid, disk_cid, %hint, "disk attached");
        }
        Ok(())
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

    fn map(t: &str, msg: &str, retry: bool) -> CpiError {
        map_error("create_vm", err(t, msg, retry), &json!(["vm-1"]), "cpi-1")
    }

    /// BOSH's error types map to the caller's choices as the director maps them.
    #[test]
    fn error_types_map_like_the_director() {
        assert!(
            matches!(map("Bosh::Clouds::VMNotFound", "", false), CpiError::NotFound { what: "vm", ref cid } if cid == "vm-1")
        );
        assert!(map("Bosh::Clouds::VMCreationFailed", "x", true).is_retryable());
        assert!(!map("Bosh::Clouds::VMCreationFailed", "x", false).is_retryable());
        assert!(map("Bosh::Clouds::CloudError", "x", true).is_retryable());
        assert!(!map("Bosh::Clouds::CloudError", "x", false).is_retryable());
        assert!(matches!(
            map("Bosh::Clouds::NotImplemented", "", false),
            CpiError::NotSupported { .. }
        ));
        assert!(matches!(
            map("InvalidCall", "Method is not known, got 'x'", false),
            CpiError::NotSupported { .. }
        ));
        let unknown = map("Acme::Exploded", "boom", true);
        assert!(!unknown.is_retryable());
        let text = unknown.to_string();
        assert!(text.contains("create_vm") && text.contains("Unknown CPI error 'Acme::Exploded'"));
        assert!(text.contains("'boom'") && text.contains("cpi-1"), "{text}");
    }

    /// `info`: a missing api_version is v1; nonsense is refused.
    #[test]
    fn info_is_parsed_like_the_director() {
        let i = parse_info(&json!({"stemcell_formats": ["x-raw"]})).unwrap();
        assert_eq!(i, CpiInfo { stemcell_formats: vec!["x-raw".into()], api_version: 1 });
        assert_eq!(parse_info(&json!({"api_version": 2})).unwrap().api_version, 2);
        assert!(parse_info(&json!("v2")).is_err());
        assert!(parse_info(&json!({"api_version": "two"})).is_err());
        assert!(parse_info(&json!({"stemcell_formats": "x"})).is_err());
    }

    /// create_vm's answer shape follows the API version spoken.
    #[test]
    fn create_vm_answers_follow_the_api_version() {
        assert_eq!(vm_cid(Some(1), json!("vm-1")).unwrap(), "vm-1");
        assert_eq!(vm_cid(Some(2), json!(["vm-2", {"net": {}}])).unwrap(), "vm-2");
        assert!(vm_cid(Some(1), json!(["vm-2", {}])).is_err());
        assert!(vm_cid(Some(2), json!("vm-1")).is_err());
        assert!(vm_cid(Some(2), json!([])).is_err());
        assert_eq!(vm_cid(None, json!("vm-1")).unwrap(), "vm-1");
        assert_eq!(vm_cid(None, json!(["vm-2"])).unwrap(), "vm-2");
    }
}
