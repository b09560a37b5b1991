//! The `gcs` release blobstore provider, with the options bosh-cli hands
//! to bosh-gcscli: `bucket_name`, `credentials_source` (`static` with
//! `json_key`, `none`, or Application Default Credentials when empty or
//! `application_default`), `storage_class` and `encryption_key`.
//!
//! Objects go through Google Cloud Storage's JSON API: a media download
//! (`GET /storage/v1/b/<bucket>/o/<id>?alt=media`) and a media upload
//! (`POST /upload/storage/v1/b/<bucket>/o?uploadType=media&name=<id>`, or
//! `uploadType=multipart` to carry a `storage_class`). Requests carry an
//! OAuth2 bearer token ([`auth`]), none with `credentials_source: none`,
//! which reads public objects anonymously and refuses to upload.
//!
//! `STORAGE_EMULATOR_HOST` (`host:port` or a URL) sends every request to
//! an emulator instead of `https://storage.googleapis.com`, without a
//! token, as Google's client libraries do with it set.
//!
//! Requests go through [`crate::fetch::send`]'s hyper client (rustls, the
//! system's roots); digests are checked by the caller, as for every provider.

use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use bosh_api::release::blobs::{Blobstore, BlobstoreError};
use indexmap::IndexMap;
use serde_json::Value;

use super::remote::{self, BadOption, FINAL_YML, PRIVATE_YML, opt_str};
use crate::fetch;

mod auth;

use auth::Credentials;

/// Google's endpoint for both APIs.
const GOOGLE_STORAGE: &str = "https://storage.googleapis.com";

/// The variable Google's client libraries read for an emulator's address.
pub(crate) const EMULATOR_ENV: &str = "STORAGE_EMULATOR_HOST";

/// Storage classes GCS knows (current and legacy names).
const STORAGE_CLASSES: &[&str] = &[
    "STANDARD",
    "NEARLINE",
    "COLDLINE",
    "ARCHIVE",
    "MULTI_REGIONAL",
    "REGIONAL",
    "DURABLE_REDUCED_AVAILABILITY",
];

/// Why the gcs blobstore could not be used.
#[derive(Debug, thiserror::Error)]
pub enum GcsError {
    /// An option is missing or wrong.
    #[error(transparent)]
    Option(#[from] BadOption),
    /// No access token could be had.
    #[error(transparent)]
    Token(#[from] auth::TokenError),
    /// The server could not be reached or stopped answering.
    #[error("gcs bucket '{bucket}': {op} object '{id}' at {endpoint}: {message}")]
    Request {
        /// The bucket.
        bucket: String,
        /// `GET` or `POST` (upload).
        op: &'static str,
        /// The object id.
        id: String,
        /// Scheme, host and port.
        endpoint: String,
        /// What went wrong.
        message: String,
    },
    /// The server refused the request.
    #[error("gcs bucket '{bucket}': {op} object '{id}': HTTP {status}{detail}{hint}")]
    Status {
        /// The bucket.
        bucket: String,
        /// `GET` or `POST` (upload).
        op: &'static str,
        /// The object id.
        id: String,
        /// The HTTP status.
        status: u16,
        /// ` (reason: message)` from the JSON API's error, if any.
        detail: String,
        /// What to check, for statuses that usually mean the configuration.
        hint: String,
    },
    /// `STORAGE_EMULATOR_HOST` is not an address.
    #[error("{EMULATOR_ENV}='{0}': expected host:port or an http(s) URL")]
    Emulator(String),
    /// A local file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// The `gcs` provider of one release directory.
pub struct GcsBlobstore {
    bucket: String,
    /// `https://storage.googleapis.com`, or the emulator's origin.
    base: reqwest::Url,
    /// Talking to an emulator: no token is sent.
    emulator: bool,
    credentials: Credentials,
    /// The token in use, renewed shortly before it expires. A tokio mutex:
    /// build threads block on the one runtime, and a waiter must keep
    /// driving it while another fetches the token.
    token: tokio::sync::Mutex<Option<auth::Token>>,
    storage_class: Option<String>,
    /// A customer-supplied AES-256 key (`encryption_key`), sent with every request.
    encryption_key: Option<[u8; 32]>,
    tls: tokio_rustls::TlsConnector,
    rt: tokio::runtime::Runtime,
}

impl GcsBlobstore {
    /// The provider from the blobstore options (`private.yml`'s merged over
    /// `final.yml`'s); reads `STORAGE_EMULATOR_HOST` and, for Application
    /// Default Credentials, `GOOGLE_APPLICATION_CREDENTIALS`.
    pub fn new(options: &IndexMap<String, Value>) -> Result<GcsBlobstore, GcsError> {
        let bucket = opt_str(options, "bucket_name").ok_or_else(|| {
            BadOption::new(FINAL_YML, "bucket_name", "is required for provider gcs")
        })?;
        check_bucket_name(&bucket)?;
        let credentials = credentials(options)?;
        let storage_class = match opt_str(options, "storage_class") {
            None => None,
            Some(c) if STORAGE_CLASSES.contains(&c.to_ascii_uppercase().as_str()) => {
                Some(c.to_ascii_uppercase())
            }
            Some(c) => {
                return Err(BadOption::new(
                    FINAL_YML,
                    "storage_class",
                    format!("'{c}' is not one of {}", STORAGE_CLASSES.join(", ")),
                )
                .into());
            }
        };
        let encryption_key = encryption_key(options)?;
        let (base, emulator) = match std::env::var(EMULATOR_ENV).ok().filter(|v| !v.is_empty()) {
            Some(host) => (emulator_url(&host)?, true),
            None => (reqwest::Url::parse(GOOGLE_STORAGE).expect("a valid URL"), false),
        };
        if emulator {
            tracing::info!(endpoint = %base, "gcs: {EMULATOR_ENV} is set: requests go to the emulator, without a token");
        }
        let tls = fetch::tls(None).map_err(|e| GcsError::Io {
            path: "TLS roots".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let rt = remote::runtime()
            .map_err(|source| GcsError::Io { path: "tokio runtime".into(), source })?;
        Ok(GcsBlobstore {
            bucket,
            base,
            emulator,
            credentials,
            token: tokio::sync::Mutex::new(None),
            storage_class,
            encryption_key,
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
            rt,
        })
    }

    /// `GET` URL of an object's bytes.
    fn download_url(&self, id: &str) -> reqwest::Url {
        let mut u = self.base.clone();
        u.path_segments_mut().expect("an http(s) base").clear().extend([
            "storage",
            "v1",
            "b",
            &self.bucket,
            "o",
            id,
        ]);
        u.set_query(Some("alt=media"));
        u
    }

    /// Upload URL of a new object.
    fn upload_url(&self, id: &str) -> reqwest::Url {
        let mut u = self.base.clone();
        u.path_segments_mut().expect("an http(s) base").clear().extend([
            "upload",
            "storage",
            "v1",
            "b",
            &self.bucket,
            "o",
        ]);
        let kind = if self.storage_class.is_some() { "multipart" } else { "media" };
        u.query_pairs_mut().append_pair("uploadType", kind).append_pair("name", id);
        u
    }

    /// The headers every request carries: the bearer token (unless
    /// anonymous or emulated) and the customer-supplied key's.
    async fn request(
        &self,
        method: hyper::Method,
    ) -> Result<hyper::http::request::Builder, GcsError> {
        let mut b = hyper::Request::builder().method(method);
        if !self.emulator && !matches!(self.credentials, Credentials::Anonymous) {
            let mut slot = self.token.lock().await;
            if !slot.as_ref().is_some_and(auth::Token::fresh) {
                *slot = Some(auth::fetch_token(&self.credentials, &self.tls).await?);
            }
            let token = &slot.as_ref().expect("set above").secret;
            b = b.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if let Some(key) = &self.encryption_key {
            use sha2::Digest as _;
            let b64 = |k: &[u8]| base64::engine::general_purpose::STANDARD.encode(k);
            b = b
                .header("x-goog-encryption-algorithm", "AES256")
                .header("x-goog-encryption-key", b64(key))
                .header("x-goog-encryption-key-sha256", b64(&sha2::Sha256::digest(key)));
        }
        Ok(b)
    }

    fn request_error(&self, op: &'static str, id: &str, message: String) -> GcsError {
        GcsError::Request {
            bucket: self.bucket.clone(),
            op,
            id: id.to_string(),
            endpoint: remote::origin(&self.base),
            message,
        }
    }

    /// An error answer, with the JSON API's reason and message if it sent them.
    fn status_error(&self, op: &'static str, id: &str, status: u16, body: &str) -> GcsError {
        let detail = json_error(body).map(|d| format!(" ({d})")).unwrap_or_default();
        let hint = match (status, &self.credentials) {
            (401 | 403, Credentials::Anonymous) => {
                "; no credentials were used (credentials_source: \
                 none, or no Application Default Credentials found): set credentials_source: \
                 static and json_key in config/private.yml"
                    .to_string()
            }
            (401 | 403, c) => {
                format!(
                    "; check that {} may {} objects in the bucket",
                    c.who(),
                    if op == "GET" { "read" } else { "create" }
                )
            }
            _ => String::new(),
        };
        GcsError::Status {
            bucket: self.bucket.clone(),
            op,
            id: id.to_string(),
            status,
            detail,
            hint,
        }
    }

    /// GET the object into `dest`; `false` if the bucket has no such object.
    async fn get(&self, id: &str, dest: &Path) -> Result<bool, GcsError> {
        let url = self.download_url(id);
        let req = self.request(hyper::Method::GET).await?;
        let resp = fetch::send(&self.tls, &url, req, fetch::empty(), fetch::READ_TIMEOUT)
            .await
            .map_err(|m| self.request_error("GET", id, m))?;
        let status = resp.status().as_u16();
        if !resp.status().is_success() {
            let body = remote::error_body(resp).await;
            if status == 404 && !names_a_missing_bucket(&body) {
                return Ok(false);
            }
            return Err(self.status_error("GET", id, status, &body));
        }
        let bytes = remote::save_body(resp, dest).await.map_err(|e| match e {
            remote::BodyError::Network(m) => self.request_error("GET", id, m),
            remote::BodyError::Io(source) => {
                GcsError::Io { path: dest.display().to_string(), source }
            }
        })?;
        tracing::debug!(bytes, "downloaded");
        Ok(true)
    }

    /// Uploads `src` under a fresh object id; returns the id once the
    /// server has stored all of it (the size it reports must match).
    async fn put(&self, src: &Path) -> Result<String, GcsError> {
        if matches!(self.credentials, Credentials::Anonymous) {
            return Err(BadOption::new(
                FINAL_YML,
                "credentials_source",
                "is none (anonymous, read-only): uploading to gcs needs credentials: set \
                 credentials_source: static with blobstore.options.json_key in \
                 config/private.yml (or use Application Default Credentials)",
            )
            .into());
        }
        let id = uuid::Uuid::new_v4().to_string();
        tracing::Span::current().record("id", id.as_str());
        let io = |source| GcsError::Io { path: src.display().to_string(), source };
        let file_len = std::fs::metadata(src).map_err(io)?.len();
        let mut req = self.request(hyper::Method::POST).await?;
        let (head, tail) = match &self.storage_class {
            None => {
                req = req.header(hyper::header::CONTENT_TYPE, "application/octet-stream");
                (Vec::new(), Vec::new())
            }
            Some(class) => {
                let boundary = format!("bosh-{}", uuid::Uuid::new_v4().simple());
                req = req.header(
                    hyper::header::CONTENT_TYPE,
                    format!("multipart/related; boundary={boundary}"),
                );
                multipart_frame(&boundary, &serde_json::json!({"name": id, "storageClass": class}))
            }
        };
        let (body, len) = remote::file_body(src, head, tail).await.map_err(io)?;
        let req = req.header(hyper::header::CONTENT_LENGTH, len);
        let url = self.upload_url(&id);
        let resp = fetch::send(&self.tls, &url, req, body, remote::upload_within(len))
            .await
            .map_err(|m| self.request_error("POST", &id, m))?;
        let status = resp.status().as_u16();
        let text = remote::error_body(resp).await;
        if !(200..300).contains(&status) {
            return Err(self.status_error("POST", &id, status, &text));
        }
        // The object resource it answers with: the stored size must be ours.
        let stored: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let size = stored.get("size").and_then(|s| match s {
            Value::String(s) => s.parse::<u64>().ok(),
            other => other.as_u64(),
        });
        if size != Some(file_len) {
            return Err(self.request_error(
                "POST",
                &id,
                format!("the server stored {size:?} bytes of {file_len}; not recorded"),
            ));
        }
        tracing::debug!(bytes = file_len, "uploaded");
        Ok(id)
    }
}

impl Blobstore for GcsBlobstore {
    fn download(&self, id: &str, dest: &Path) -> Result<bool, BlobstoreError> {
        use tracing::Instrument as _;
        let span = tracing::info_span!("gcs_get", bucket = %self.bucket, id);
        Ok(self.rt.block_on(self.get(id, dest).instrument(span))?)
    }

    fn upload(&self, src: &Path) -> Result<String, BlobstoreError> {
        use tracing::Instrument as _;
        let span =
            tracing::info_span!("gcs_put", bucket = %self.bucket, id = tracing::field::Empty);
        Ok(self.rt.block_on(self.put(src).instrument(span))?)
    }
}

/// The first part (JSON metadata) and the closing of a `multipart/related`
/// upload whose second part is the file.
fn multipart_frame(boundary: &str, metadata: &Value) -> (Vec<u8>, Vec<u8>) {
    let head = format!(
        "--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{metadata}\r\n\
         --{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n"
    );
    (head.into_bytes(), format!("\r\n--{boundary}--\r\n").into_bytes())
}

/// A 404 about the bucket (a configuration mistake, reported as such)
/// rather than the object (which the caller reports as not in the store).
fn names_a_missing_bucket(body: &str) -> bool {
    json_error(body).is_some_and(|m| m.contains("bucket does not exist"))
}

/// `reason: message` of a JSON API error document.
fn json_error(body: &str) -> Option<String> {
    let v: Value = serde_json::from_str(body).ok()?;
    let e = v.get("error")?;
    let message = e.get("message").and_then(Value::as_str);
    let reason = e.pointer("/errors/0/reason").and_then(Value::as_str);
    match (reason, message) {
        (Some(r), Some(m)) => Some(format!("{r}: {m}")),
        (None, Some(m)) => Some(m.to_string()),
        (Some(r), None) => Some(r.to_string()),
        _ => None,
    }
}

/// GCS's naming rules, so a typo is named here rather than as a 400 later:
/// 3–63 characters (222 with dots, 63 per part) of lowercase letters,
/// digits, `-`, `_` and `.`, starting and ending with a letter or digit.
fn check_bucket_name(b: &str) -> Result<(), BadOption> {
    let ok_chars = b.bytes().all(|c| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.'));
    let ends = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let max = if b.contains('.') { 222 } else { 63 };
    if ok_chars
        && (3..=max).contains(&b.len())
        && ends(b.chars().next())
        && ends(b.chars().last())
        && b.split('.').all(|p| !p.is_empty() && p.len() <= 63)
    {
        return Ok(());
    }
    Err(BadOption::new(
        FINAL_YML,
        "bucket_name",
        format!(
            "'{b}' is not a GCS bucket name (expected 3-63 lowercase letters, digits, '-', '_' \
             or '.', starting and ending with a letter or digit)"
        ),
    ))
}

/// `STORAGE_EMULATOR_HOST`: `host:port`, or a URL (`http://host:port`).
fn emulator_url(host: &str) -> Result<reqwest::Url, GcsError> {
    let with_scheme =
        if host.contains("://") { host.to_string() } else { format!("http://{host}") };
    match reqwest::Url::parse(&with_scheme) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Ok(u),
        _ => Err(GcsError::Emulator(host.to_string())),
    }
}

/// `encryption_key`: bosh-gcscli's customer-supplied key, base64 of 32 bytes.
fn encryption_key(o: &IndexMap<String, Value>) -> Result<Option<[u8; 32]>, BadOption> {
    let Some(text) = opt_str(o, "encryption_key") else { return Ok(None) };
    let bad = |m: &str| BadOption::new(PRIVATE_YML, "encryption_key", m.to_string());
    let bytes = base64::engine::general_purpose::STANDARD.decode(text.trim()).map_err(|_| {
        bad("expected base64 of a 32-byte AES-256 key, got text that is not base64")
    })?;
    let key: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
        BadOption::new(
            PRIVATE_YML,
            "encryption_key",
            format!("expected base64 of a 32-byte AES-256 key, got {} bytes", b.len()),
        )
    })?;
    Ok(Some(key))
}

/// `json_key` as JSON: the key's text (as `config/private.yml` usually has
/// it, a block string), or the key written as a YAML mapping.
fn json_key(o: &IndexMap<String, Value>) -> Result<Option<Value>, BadOption> {
    // bosh-cli's name; newer bosh-gcscli names the same field `service_account_file`.
    let (key, v) = match (o.get("json_key"), o.get("service_account_file")) {
        (Some(v), _) if !v.is_null() => ("json_key", v),
        (_, Some(v)) if !v.is_null() => ("service_account_file", v),
        _ => return Ok(None),
    };
    let bad = |m: String| BadOption::new(PRIVATE_YML, key, m);
    match v {
        Value::Object(_) => Ok(Some(v.clone())),
        Value::String(s) if s.trim().is_empty() => Ok(None),
        Value::String(s) => serde_json::from_str(s)
            .map(Some)
            // serde_json's message names a line and column, never the text.
            .map_err(|e| {
                bad(format!("expected a service account's JSON key, not valid JSON: {e}"))
            }),
        _ => Err(bad("expected a service account's JSON key (text or a mapping)".into())),
    }
}

/// The credentials `credentials_source` names. Empty or
/// `application_default`: Application Default Credentials (below); unset,
/// `static` if `json_key` is set, else ADC when some are found, else
/// anonymous, as bosh-gcscli falls back.
fn credentials(o: &IndexMap<String, Value>) -> Result<Credentials, BadOption> {
    let key = json_key(o)?;
    let source = match o.get("credentials_source") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(other) => {
            return Err(BadOption::new(
                FINAL_YML,
                "credentials_source",
                format!("expected static, none or application_default, got {other}"),
            ));
        }
    };
    let from_key = |v: &Value| {
        Credentials::from_json(v).map_err(|e| {
            BadOption::new(
                PRIVATE_YML,
                "json_key",
                format!("not a usable service account key: {e}"),
            )
        })
    };
    match (source, key) {
        (Some("static"), Some(k)) | (None, Some(k)) => from_key(&k),
        (Some("static"), None) => Err(BadOption::new(
            PRIVATE_YML,
            "json_key",
            "is required with credentials_source: static (a service account's JSON key)",
        )),
        (Some("none"), _) => Ok(Credentials::Anonymous),
        (Some("" | "application_default"), _) => application_default(true),
        (None, None) => application_default(false),
        (Some(other), _) => Err(BadOption::new(
            FINAL_YML,
            "credentials_source",
            format!("'{other}' is not one of static, none, application_default"),
        )),
    }
}

/// Application Default Credentials as Google's libraries find them:
/// `GOOGLE_APPLICATION_CREDENTIALS`'s file, else gcloud's
/// `application_default_credentials.json`. (The metadata server of a GCE
/// VM is not asked.) Without either: an error if `required`, else anonymous.
fn application_default(required: bool) -> Result<Credentials, BadOption> {
    let bad = |m: String| BadOption::new(FINAL_YML, "credentials_source", m);
    let env = std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS").filter(|v| !v.is_empty());
    let (path, named) = match env {
        Some(p) => (std::path::PathBuf::from(p), true),
        None => {
            let dir = std::env::var_os("CLOUDSDK_CONFIG")
                .map(std::path::PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".config/gcloud")));
            match dir.map(|d| d.join("application_default_credentials.json")) {
                Some(p) if p.is_file() => (p, false),
                _ if required => {
                    return Err(bad(
                        "application_default: GOOGLE_APPLICATION_CREDENTIALS is not set and \
                         gcloud's application_default_credentials.json does not exist"
                            .into(),
                    ));
                }
                _ => {
                    tracing::debug!("gcs: no credentials found: anonymous reads only");
                    return Ok(Credentials::Anonymous);
                }
            }
        }
    };
    let what = if named {
        format!("GOOGLE_APPLICATION_CREDENTIALS file {}", path.display())
    } else {
        path.display().to_string()
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| bad(format!("application_default: {what}: {e}")))?;
    let json: Value = serde_json::from_str(&text)
        .map_err(|e| bad(format!("application_default: {what}: not JSON: {e}")))?;
    Credentials::from_json(&json).map_err(|e| bad(format!("application_default: {what}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(o: &[(&str, Value)]) -> IndexMap<String, Value> {
        o.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    /// Google's endpoint by default; object ids and bucket names land in
    /// the JSON API's paths; a storage class makes the upload multipart.
    #[test]
    fn urls_follow_the_json_api() {
        let none = ("credentials_source", Value::from("none"));
        let gcs =
            GcsBlobstore::new(&opts(&[("bucket_name", "my-blobs".into()), none.clone()])).unwrap();
        let mut g = gcs;
        g.base = reqwest::Url::parse(GOOGLE_STORAGE).unwrap();
        assert_eq!(
            g.download_url("0f-id").as_str(),
            "https://storage.googleapis.com/storage/v1/b/my-blobs/o/0f-id?alt=media"
        );
        assert_eq!(
            g.upload_url("0f-id").as_str(),
            "https://storage.googleapis.com/upload/storage/v1/b/my-blobs/o?uploadType=media&name=0f-id"
        );
        g.storage_class = Some("NEARLINE".into());
        assert!(g.upload_url("x").as_str().ends_with("?uploadType=multipart&name=x"));
        assert_eq!(emulator_url("127.0.0.1:9023").unwrap().as_str(), "http://127.0.0.1:9023/");
        assert_eq!(emulator_url("https://gcs.local").unwrap().as_str(), "https://gcs.local/");
        assert!(emulator_url("ftp://x").is_err());
    }

    /// Missing or wrong options name the file and option and what was
    /// expected; no secret shows in a message.
    #[test]
    fn bad_options_name_the_file_and_option() {
        let err = |o: &[(&str, Value)]| match GcsBlobstore::new(&opts(o)) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("accepted {o:?}"),
        };
        let b = ("bucket_name", Value::from("blobs"));
        assert_eq!(
            err(&[]),
            "config/final.yml: blobstore.options.bucket_name: is required for provider gcs"
        );
        let e = err(&[("bucket_name", "My_Bucket!".into())]);
        assert!(
            e.starts_with("config/final.yml: blobstore.options.bucket_name: 'My_Bucket!'"),
            "{e}"
        );
        let e = err(&[b.clone(), ("credentials_source", "static".into())]);
        assert!(
            e.starts_with("config/private.yml: blobstore.options.json_key: is required"),
            "{e}"
        );
        let e = err(&[b.clone(), ("credentials_source", "iam".into())]);
        assert!(e.contains("blobstore.options.credentials_source: 'iam' is not one of"), "{e}");
        let e = err(&[b.clone(), ("json_key", "{\"private_key\": \"SECRETISH".into())]);
        assert!(e.starts_with("config/private.yml: blobstore.options.json_key: "), "{e}");
        assert!(!e.contains("SECRETISH"), "{e}");
        let e = err(&[b.clone(), ("json_key", "{\"type\": \"service_account\"}".into())]);
        assert!(
            e.contains("json_key: not a usable service account key: 'private_key' is missing"),
            "{e}"
        );
        let e = err(&[
            b.clone(),
            ("credentials_source", "none".into()),
            ("storage_class", "GLACIER".into()),
        ]);
        assert!(
            e.starts_with("config/final.yml: blobstore.options.storage_class: 'GLACIER'"),
            "{e}"
        );
        let e = err(&[
            b.clone(),
            ("credentials_source", "none".into()),
            ("encryption_key", "c2hvcnQ=".into()),
        ]);
        assert!(e.contains("blobstore.options.encryption_key: expected base64 of a 32-byte AES-256 key, got 5 bytes"), "{e}");
        let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let ok = GcsBlobstore::new(&opts(&[
            b.clone(),
            ("credentials_source", "none".into()),
            ("encryption_key", key.into()),
            ("storage_class", "nearline".into()),
        ]))
        .unwrap();
        assert_eq!(ok.encryption_key, Some([7u8; 32]));
        assert_eq!(ok.storage_class.as_deref(), Some("NEARLINE"));
    }

    /// A customer-supplied key goes with every request as Google's CSEK
    /// headers (the key and its sha256, base64); anonymous requests carry
    /// no `Authorization`.
    #[test]
    fn encryption_keys_are_sent_as_csek_headers() {
        let key = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc="; // 32 bytes of 7
        let g = GcsBlobstore::new(&opts(&[
            ("bucket_name", "blobs".into()),
            ("credentials_source", "none".into()),
            ("encryption_key", key.into()),
        ]))
        .unwrap();
        let req = g.rt.block_on(g.request(hyper::Method::GET)).unwrap().body(()).unwrap();
        let h = |n: &str| req.headers().get(n).map(|v| v.to_str().unwrap().to_string());
        assert_eq!(h("x-goog-encryption-algorithm").as_deref(), Some("AES256"));
        assert_eq!(h("x-goog-encryption-key").as_deref(), Some(key));
        assert_eq!(
            h("x-goog-encryption-key-sha256").as_deref(),
            Some("S7Bvjk46dxXSAdVz0KpCN2LlXavWGiwCJ4+lbMbSlOA=")
        );
        assert_eq!(h("authorization"), None);
    }

    /// The JSON API's error documents give their reason and message.
    #[test]
    fn error_documents_are_read() {
        let missing_bucket = r#"{"error":{"code":404,"message":"The specified bucket does not exist.","errors":[{"reason":"notFound"}]}}"#;
        let missing_object = r#"{"error":{"code":404,"message":"No such object: bucket-x/id","errors":[{"reason":"notFound"}]}}"#;
        assert!(names_a_missing_bucket(missing_bucket));
        assert!(!names_a_missing_bucket(missing_object));
        assert!(!names_a_missing_bucket(""));
        let doc = r#"{"error":{"code":403,"message":"a@b does not have storage.objects.create access","errors":[{"reason":"forbidden"}]}}"#;
        assert_eq!(
            json_error(doc).as_deref(),
            Some("forbidden: a@b does not have storage.objects.create access")
        );
        assert_eq!(json_error(""), None);
        assert_eq!(json_error("<html>"), None);
    }
}
