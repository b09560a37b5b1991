//! The `s3` release blobstore provider, with bosh-cli's options:
//! `bucket_name`, `host` (or `endpoint`), `port`, `use_ssl`,
//! `ssl_verify_peer`, `region`, `s3_force_path_style` and
//! `credentials_source` (`static`, `env_or_profile`, `none`).
//!
//! Requests are signed with SigV4 in the `Authorization` header (not
//! presigned URLs), as the AWS SDKs do, so S3-compatible servers that
//! check signatures only in headers accept them; without credentials
//! nothing is signed, which is how public releases are synced with no
//! `config/private.yml`. Requests go through [`crate::fetch::send`]'s hyper
//! client, whose TLS is its own (see `fetch.rs` for why not reqwest's).
//!
//! Secrets stay in [`Credentials`], which has no `Debug`; errors and logs
//! name the bucket, object id and endpoint, never a key.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use bosh_api::release::blobs::{Blobstore, BlobstoreError};
use indexmap::IndexMap;
use serde_json::Value;

use super::remote::{self, BadOption, FINAL_YML, PRIVATE_YML, opt_bool, opt_str};
use crate::fetch;

/// The sha256 of an empty payload (every GET's).
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Why the s3 blobstore could not be used.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    /// An option is missing or wrong.
    #[error(transparent)]
    Option(#[from] BadOption),
    /// The server could not be reached or stopped answering.
    #[error("s3 bucket '{bucket}': {op} object '{id}' at {endpoint}: {message}")]
    Request {
        /// The bucket.
        bucket: String,
        /// `GET` or `PUT`.
        op: &'static str,
        /// The object id.
        id: String,
        /// Scheme, host and port (no credentials ever appear in it).
        endpoint: String,
        /// What went wrong.
        message: String,
    },
    /// The server refused the request.
    #[error("s3 bucket '{bucket}': {op} object '{id}': HTTP {status}{detail}{hint}")]
    Status {
        /// The bucket.
        bucket: String,
        /// `GET` or `PUT`.
        op: &'static str,
        /// The object id.
        id: String,
        /// The HTTP status.
        status: u16,
        /// ` (Code: Message)` from S3's error document, if any.
        detail: String,
        /// What to check, for statuses that usually mean the configuration.
        hint: &'static str,
    },
    /// A local file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Who signs requests; no `Debug`, so a secret cannot be logged by accident.
enum Credentials {
    /// SigV4 with these keys.
    Keys { access_key_id: String, secret_access_key: String, session_token: Option<String> },
    /// Unsigned requests (public-read buckets).
    Anonymous,
}

/// Where the bucket is.
#[derive(Debug, Clone)]
struct Endpoint {
    /// `https://host[:port]`.
    base: reqwest::Url,
    /// `/<bucket>/<id>` rather than `<bucket>.host/<id>`.
    path_style: bool,
}

/// The `s3` provider of one release directory.
pub struct S3Blobstore {
    bucket: String,
    region: String,
    endpoint: Endpoint,
    credentials: Credentials,
    tls: tokio_rustls::TlsConnector,
    /// The release verbs are synchronous; each request runs to completion here.
    rt: tokio::runtime::Runtime,
}

impl S3Blobstore {
    /// The provider from the blobstore options (`private.yml`'s merged over
    /// `final.yml`'s). Credentials from the environment are read here.
    pub fn new(options: &IndexMap<String, Value>) -> Result<S3Blobstore, S3Error> {
        let bucket = opt_str(options, "bucket_name").ok_or(S3Error::Option(BadOption::new(
            FINAL_YML,
            "bucket_name",
            "is required for provider s3",
        )))?;
        let region = opt_str(options, "region").unwrap_or_else(|| "us-east-1".into());
        let endpoint = endpoint(options, &bucket, &region)?;
        let credentials = credentials(options)?;
        let tls = if opt_bool(options, "ssl_verify_peer", true)? {
            fetch::tls(None).map_err(|e| {
                S3Error::Option(BadOption::new(FINAL_YML, "ssl_verify_peer", e.to_string()))
            })?
        } else {
            tracing::warn!(
                bucket,
                "ssl_verify_peer: false: the server's certificate is not checked"
            );
            no_verify::config()
        };
        let rt = remote::runtime()
            .map_err(|source| S3Error::Io { path: "tokio runtime".into(), source })?;
        Ok(S3Blobstore {
            bucket,
            region,
            endpoint,
            credentials,
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
            rt,
        })
    }

    /// The object's URL.
    fn url(&self, id: &str) -> reqwest::Url {
        let mut u = self.endpoint.base.clone();
        if self.endpoint.path_style {
            u.set_path(&format!("/{}/{id}", self.bucket));
        } else {
            let host = format!("{}.{}", self.bucket, u.host_str().unwrap_or_default());
            // The host was parsed from a valid URL, and a bucket name is DNS-safe.
            let _ = u.set_host(Some(&host));
            u.set_path(&format!("/{id}"));
        }
        u
    }

    fn endpoint_text(&self) -> String {
        self.endpoint.base.as_str().trim_end_matches('/').to_string()
    }

    /// The signing headers of a request, none when anonymous.
    fn sign(
        &self,
        method: &str,
        url: &reqwest::Url,
        host: &str,
        payload_sha256: &str,
    ) -> Result<Vec<(String, String)>, String> {
        use aws_sigv4::http_request::{
            PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest,
            SigningSettings, UriPathNormalizationMode, sign,
        };
        let Credentials::Keys { access_key_id, secret_access_key, session_token } =
            &self.credentials
        else {
            return Ok(Vec::new());
        };
        let identity: aws_smithy_runtime_api::client::identity::Identity =
            aws_credential_types::Credentials::new(
                access_key_id,
                secret_access_key,
                session_token.clone(),
                None,
                "boshctl",
            )
            .into();
        let mut settings = SigningSettings::default();
        // S3's rules: the payload's digest in a header, paths signed as sent.
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("s3")
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|e| e.to_string())?
            .into();
        let signable = SignableRequest::new(
            method,
            url.as_str(),
            [("host", host)].into_iter(),
            SignableBody::Precomputed(payload_sha256.to_string()),
        )
        .map_err(|e| e.to_string())?;
        let (instructions, _) = sign(signable, &params).map_err(|e| e.to_string())?.into_parts();
        let (headers, _) = instructions.into_parts();
        Ok(headers.into_iter().map(|h| (h.name().to_string(), h.value().to_string())).collect())
    }

    /// A request to `url` with its signing headers.
    fn request(
        &self,
        method: hyper::Method,
        url: &reqwest::Url,
        payload_sha256: &str,
    ) -> Result<hyper::http::request::Builder, String> {
        let host = match url.port() {
            Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_string(),
        };
        let mut b = hyper::Request::builder().method(method.clone());
        for (k, v) in self.sign(method.as_str(), url, &host, payload_sha256)? {
            b = b.header(k, v);
        }
        Ok(b)
    }

    fn request_error(&self, op: &'static str, id: &str, message: String) -> S3Error {
        S3Error::Request {
            bucket: self.bucket.clone(),
            op,
            id: id.to_string(),
            endpoint: self.endpoint_text(),
            message,
        }
    }

    /// An error answer, with S3's code and message if it sent a document.
    async fn status_error(
        &self,
        op: &'static str,
        id: &str,
        resp: hyper::Response<hyper::body::Incoming>,
    ) -> S3Error {
        let status = resp.status().as_u16();
        let body = remote::error_body(resp).await;
        let code = xml_text(&body, "Code");
        let message = xml_text(&body, "Message");
        let detail = match (code, message) {
            (Some(c), Some(m)) => format!(" ({c}: {m})"),
            (Some(c), None) => format!(" ({c})"),
            _ => String::new(),
        };
        let hint = match (status, &self.credentials) {
            (401 | 403, Credentials::Anonymous) => {
                "; no credentials were used: put blobstore.options.access_key_id and \
                 secret_access_key in config/private.yml"
            }
            (401 | 403, Credentials::Keys { .. }) => {
                "; check the credentials (config/private.yml's blobstore.options, or \
                 AWS_ACCESS_KEY_ID or the AWS profile with credentials_source: env_or_profile) \
                 and the bucket's policy"
            }
            _ => "",
        };
        S3Error::Status {
            bucket: self.bucket.clone(),
            op,
            id: id.to_string(),
            status,
            detail,
            hint,
        }
    }

    /// GET the object into `dest`.
    async fn get(&self, id: &str, dest: &Path) -> Result<(), S3Error> {
        let url = self.url(id);
        let span = tracing::info_span!("s3_get", bucket = %self.bucket, id);
        let _e = span.enter();
        let req = self
            .request(hyper::Method::GET, &url, EMPTY_SHA256)
            .map_err(|m| self.request_error("GET", id, format!("signing the request: {m}")))?;
        let resp = fetch::send(&self.tls, &url, req, fetch::empty(), fetch::READ_TIMEOUT)
            .await
            .map_err(|m| self.request_error("GET", id, m))?;
        if !resp.status().is_success() {
            return Err(self.status_error("GET", id, resp).await);
        }
        let bytes = remote::save_body(resp, dest).await.map_err(|e| match e {
            remote::BodyError::Network(m) => self.request_error("GET", id, m),
            remote::BodyError::Io(source) => {
                S3Error::Io { path: dest.display().to_string(), source }
            }
        })?;
        tracing::debug!(bytes, "downloaded");
        Ok(())
    }

    /// PUT `src` under a fresh object id; returns the id once stored.
    async fn put(&self, src: &Path) -> Result<String, S3Error> {
        if matches!(self.credentials, Credentials::Anonymous) {
            return Err(S3Error::Option(BadOption::new(
                PRIVATE_YML,
                "access_key_id",
                "uploading to s3 needs credentials: put blobstore.options.access_key_id \
                          and secret_access_key in config/private.yml (or use \
                          credentials_source: env_or_profile)",
            )));
        }
        let id = uuid::Uuid::new_v4().to_string();
        let span = tracing::info_span!("s3_put", bucket = %self.bucket, id);
        let _e = span.enter();
        let io = |source| S3Error::Io { path: src.display().to_string(), source };
        let sha256 = bosh_api::release::file_digest_hex::<sha2::Sha256>(src).map_err(io)?;
        let (body, len) = remote::file_body(src, Vec::new(), Vec::new()).await.map_err(io)?;
        let url = self.url(&id);
        let req = self
            .request(hyper::Method::PUT, &url, &sha256)
            .map_err(|m| self.request_error("PUT", &id, format!("signing the request: {m}")))?
            .header(hyper::header::CONTENT_LENGTH, len);
        let resp = fetch::send(&self.tls, &url, req, body, remote::upload_within(len))
            .await
            .map_err(|m| self.request_error("PUT", &id, m))?;
        if !resp.status().is_success() {
            return Err(self.status_error("PUT", &id, resp).await);
        }
        tracing::debug!(bytes = len, "uploaded");
        Ok(id)
    }
}

impl Blobstore for S3Blobstore {
    fn download(&self, id: &str, dest: &Path) -> Result<bool, BlobstoreError> {
        self.rt.block_on(self.get(id, dest))?;
        Ok(true)
    }

    fn upload(&self, src: &Path) -> Result<String, BlobstoreError> {
        Ok(self.rt.block_on(self.put(src))?)
    }
}

/// The endpoint from `host`/`endpoint`, `port`, `use_ssl`, `region` and
/// `s3_force_path_style`. A custom host gets path-style URLs (S3-compatible
/// servers rarely serve bucket subdomains), as does a bucket with dots
/// (its subdomain would not match AWS's wildcard certificate).
fn endpoint(o: &IndexMap<String, Value>, bucket: &str, region: &str) -> Result<Endpoint, S3Error> {
    let bad = |key, message: String| S3Error::Option(BadOption::new(FINAL_YML, key, message));
    let use_ssl = opt_bool(o, "use_ssl", true)?;
    let force_path = opt_bool(o, "s3_force_path_style", false)?;
    let port: Option<u16> = match opt_str(o, "port") {
        None => None,
        Some(p) => Some(p.parse().map_err(|_| bad("port", format!("'{p}' is not a port")))?),
    };
    let (base, custom) = if let Some(e) = opt_str(o, "endpoint") {
        let with_scheme = if e.contains("://") {
            e.clone()
        } else {
            format!("{}://{e}", if use_ssl { "https" } else { "http" })
        };
        let u = reqwest::Url::parse(&with_scheme)
            .map_err(|err| bad("endpoint", format!("'{e}': {err}")))?;
        (u, true)
    } else {
        let host = opt_str(o, "host");
        let custom = host.is_some();
        let host = host.unwrap_or_else(|| match region {
            "us-east-1" => "s3.amazonaws.com".into(),
            r => format!("s3.{r}.amazonaws.com"),
        });
        let scheme = if use_ssl { "https" } else { "http" };
        let u = reqwest::Url::parse(&format!("{scheme}://{host}"))
            .map_err(|err| bad("host", format!("'{host}': {err}")))?;
        (u, custom)
    };
    let mut base = base;
    if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
        return Err(bad("endpoint", format!("'{base}' is not an http(s) URL with a host")));
    }
    if let Some(p) = port {
        let _ = base.set_port(Some(p));
    }
    base.set_path("/");
    Ok(Endpoint { base, path_style: custom || force_path || bucket.contains('.') })
}

/// The credentials `credentials_source` names: `static` (the default when
/// `access_key_id` is set) takes the keys from the options, `env_or_profile`
/// from `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` (`AWS_SESSION_TOKEN`),
/// else from the shared credentials file's profile ([`profile_keys`]),
/// `none` (the default without keys) signs nothing.
fn credentials(o: &IndexMap<String, Value>) -> Result<Credentials, S3Error> {
    let key = opt_str(o, "access_key_id");
    let secret = opt_str(o, "secret_access_key");
    let source = opt_str(o, "credentials_source")
        .unwrap_or_else(|| if key.is_some() { "static".into() } else { "none".into() });
    match source.as_str() {
        "static" => match (key, secret) {
            (Some(access_key_id), Some(secret_access_key)) => Ok(Credentials::Keys {
                access_key_id,
                secret_access_key,
                session_token: opt_str(o, "session_token"),
            }),
            (None, _) => Err(S3Error::Option(BadOption::new(
                PRIVATE_YML,
                "access_key_id",
                "is required with credentials_source: static",
            ))),
            (Some(_), None) => Err(S3Error::Option(BadOption::new(
                PRIVATE_YML,
                "secret_access_key",
                "is required with access_key_id",
            ))),
        },
        "env_or_profile" => {
            let env = |k| std::env::var(k).ok().filter(|v: &String| !v.is_empty());
            match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
                (Some(access_key_id), Some(secret_access_key)) => Ok(Credentials::Keys {
                    access_key_id,
                    secret_access_key,
                    session_token: env("AWS_SESSION_TOKEN"),
                }),
                _ => profile_keys(env("AWS_SHARED_CREDENTIALS_FILE"), env("AWS_PROFILE")).map_err(
                    |why| {
                        S3Error::Option(BadOption::new(
                            FINAL_YML,
                            "credentials_source",
                            format!(
                                "env_or_profile: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \
                                 are not both set, and {why} (instance roles are not read)"
                            ),
                        ))
                    },
                ),
            }
        }
        "none" => Ok(Credentials::Anonymous),
        other => Err(S3Error::Option(BadOption::new(
            FINAL_YML,
            "credentials_source",
            format!("'{other}' is not one of static, env_or_profile, none"),
        ))),
    }
}

/// The keys of profile `profile` (`AWS_PROFILE`, else `default`) in AWS's
/// shared credentials file (`AWS_SHARED_CREDENTIALS_FILE`, else
/// `~/.aws/credentials`), as the AWS SDKs bosh's s3 client uses read them:
/// `aws_access_key_id`, `aws_secret_access_key`, `aws_session_token`. The
/// error says which file and profile lacked what; it never quotes a value.
fn profile_keys(file: Option<String>, profile: Option<String>) -> Result<Credentials, String> {
    let file = match file {
        Some(f) => std::path::PathBuf::from(f),
        None => std::path::PathBuf::from(
            std::env::var_os("HOME").ok_or("HOME is not set to find ~/.aws/credentials")?,
        )
        .join(".aws/credentials"),
    };
    let profile = profile.unwrap_or_else(|| "default".into());
    let text = std::fs::read_to_string(&file)
        .map_err(|e| format!("the credentials file {} cannot be read: {e}", file.display()))?;
    let mut ini = configparser::ini::Ini::new_cs();
    ini.read(text).map_err(|e| format!("{} does not parse: {e}", file.display()))?;
    let get = |k: &str| ini.get(&profile, k).filter(|v| !v.is_empty());
    match (get("aws_access_key_id"), get("aws_secret_access_key")) {
        (Some(access_key_id), Some(secret_access_key)) => Ok(Credentials::Keys {
            access_key_id,
            secret_access_key,
            session_token: get("aws_session_token"),
        }),
        _ => Err(format!(
            "profile [{profile}] of {} has no aws_access_key_id and aws_secret_access_key",
            file.display()
        )),
    }
}

/// The text of the first `<tag>...</tag>` in an S3 error document (some
/// servers wrap it in CDATA).
fn xml_text<'a>(doc: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = doc.find(&open)? + open.len();
    let end = doc[start..].find(&format!("</{tag}>"))? + start;
    let text = doc[start..end].trim();
    let text = text.strip_prefix("<![CDATA[").and_then(|t| t.strip_suffix("]]>")).unwrap_or(text);
    Some(text.trim()).filter(|s| !s.is_empty())
}

/// `ssl_verify_peer: false`: TLS that accepts any certificate (bosh-cli's
/// option for test installations with self-signed certificates).
mod no_verify {
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};

    #[derive(Debug)]
    struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

    impl ServerCertVerifier for AcceptAny {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            let algs = &self.0.signature_verification_algorithms;
            rustls::crypto::verify_tls12_signature(message, cert, dss, algs)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            let algs = &self.0.signature_verification_algorithms;
            rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    /// A client config that skips certificate checks (signatures still must hold).
    pub(super) fn config() -> rustls::ClientConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
            .with_no_client_auth()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(yaml: &[(&str, Value)]) -> IndexMap<String, Value> {
        yaml.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    /// bosh-cli's defaults: https, us-east-1, virtual-hosted on AWS;
    /// path-style for a custom host (with its port and scheme) or a dotted bucket.
    #[test]
    fn endpoints_follow_bosh_cli_options() {
        let aws = opts(&[("bucket_name", "b".into())]);
        let s3 = S3Blobstore::new(&aws).unwrap();
        assert_eq!(s3.url("id").as_str(), "https://b.s3.amazonaws.com/id");
        let eu = opts(&[("bucket_name", "b".into()), ("region", "eu-west-1".into())]);
        assert_eq!(
            S3Blobstore::new(&eu).unwrap().url("id").as_str(),
            "https://b.s3.eu-west-1.amazonaws.com/id"
        );
        let dotted = opts(&[("bucket_name", "a.b".into())]);
        assert_eq!(
            S3Blobstore::new(&dotted).unwrap().url("id").as_str(),
            "https://s3.amazonaws.com/a.b/id"
        );
        let custom = opts(&[
            ("bucket_name", "b".into()),
            ("host", "127.0.0.1".into()),
            ("port", 9000.into()),
            ("use_ssl", false.into()),
        ]);
        assert_eq!(
            S3Blobstore::new(&custom).unwrap().url("id").as_str(),
            "http://127.0.0.1:9000/b/id"
        );
        let endpoint =
            opts(&[("bucket_name", "b".into()), ("endpoint", "https://minio:9443".into())]);
        assert_eq!(
            S3Blobstore::new(&endpoint).unwrap().url("id").as_str(),
            "https://minio:9443/b/id"
        );
    }

    /// Missing or contradictory options name the file and option; a secret
    /// never shows in a message.
    #[test]
    fn bad_options_name_the_file_and_option() {
        let err = |o: &[(&str, Value)]| match S3Blobstore::new(&opts(o)) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("accepted {o:?}"),
        };
        assert_eq!(
            err(&[]),
            "config/final.yml: blobstore.options.bucket_name: is required for provider s3"
        );
        let e = err(&[("bucket_name", "b".into()), ("credentials_source", "static".into())]);
        assert!(e.starts_with("config/private.yml: blobstore.options.access_key_id"), "{e}");
        let e = err(&[("bucket_name", "b".into()), ("access_key_id", "AKIDSECRETISH".into())]);
        assert!(e.contains("secret_access_key") && !e.contains("AKIDSECRETISH"), "{e}");
        let e = err(&[("bucket_name", "b".into()), ("credentials_source", "iam".into())]);
        assert!(e.contains("'iam' is not one of"), "{e}");
        let e = err(&[("bucket_name", "b".into()), ("port", "http".into())]);
        assert!(e.contains("blobstore.options.port"), "{e}");
    }

    /// S3's error documents give their code and message.
    #[test]
    fn error_documents_are_read() {
        let doc = "<?xml version=\"1.0\"?><Error><Code>NoSuchBucket</Code>\
                   <Message>The specified bucket does not exist</Message></Error>";
        assert_eq!(xml_text(doc, "Code"), Some("NoSuchBucket"));
        assert_eq!(xml_text(doc, "Message"), Some("The specified bucket does not exist"));
        assert_eq!(xml_text("", "Code"), None);
        let cdata = "<Error><Code><![CDATA[AccessDenied]]></Code></Error>";
        assert_eq!(xml_text(cdata, "Code"), Some("AccessDenied"));
    }
}
