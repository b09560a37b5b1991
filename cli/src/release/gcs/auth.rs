//! Google OAuth2 access tokens for the `gcs` blobstore, as Google's client
//! libraries get them:
//!
//! - a service-account key (`"type": "service_account"`, from `json_key`
//!   or an Application Default Credentials file): a JWT signed RS256 with
//!   the key's `private_key`, exchanged at the key's `token_uri`
//!   (`grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`);
//! - `gcloud auth application-default login`'s file (`"type":
//!   "authorized_user"`): its refresh token exchanged at Google's token
//!   endpoint (`grant_type=refresh_token`).
//!
//! RSA signing is ring's (already linked for TLS); nothing here is
//! hand-rolled crypto. Keys and tokens are held in types without `Debug`,
//! and no message carries them: errors name the key's `client_email`,
//! where the key came from and the token endpoint.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde_json::Value;
use tracing::Instrument as _;

use crate::fetch;

/// The scope tokens are asked for: objects read and written, nothing more
/// (bosh-gcscli asks for full control; uploads and downloads need only this).
pub(crate) const SCOPE: &str = "https://www.googleapis.com/auth/devstorage.read_write";

/// Where `authorized_user` refresh tokens are exchanged when the file names
/// no `token_uri` (Google's libraries' default).
const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// How long an assertion is valid (Google's maximum).
const ASSERTION_LIFETIME: Duration = Duration::from_secs(3600);

/// A token is renewed this long before it expires.
const EXPIRY_MARGIN: Duration = Duration::from_secs(60);

/// Why a key file is unusable (the caller names the file and option).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct KeyError(pub String);

/// A service account's key: what signs the assertion.
pub(crate) struct ServiceAccount {
    /// `client_email`: the assertion's issuer (and named in errors).
    pub email: String,
    /// `private_key_id`, sent as the JWT's `kid` when present.
    key_id: Option<String>,
    /// `token_uri`: where the assertion is exchanged.
    pub token_uri: String,
    key: ring::signature::RsaKeyPair,
}

/// `gcloud auth application-default login`'s credentials.
pub(crate) struct AuthorizedUser {
    client_id: String,
    client_secret: String,
    refresh_token: String,
    pub token_uri: String,
}

/// Who gets tokens; no `Debug`, so a secret cannot be logged by accident.
pub(crate) enum Credentials {
    /// No token: public objects only (`credentials_source: none`).
    Anonymous,
    /// A service-account key.
    ServiceAccount(Box<ServiceAccount>),
    /// A user's refresh token (an ADC file from gcloud).
    AuthorizedUser(AuthorizedUser),
}

impl Credentials {
    /// A key file's JSON: `service_account` or `authorized_user`.
    pub(crate) fn from_json(json: &Value) -> Result<Credentials, KeyError> {
        let field = |k: &str| json.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
        let need = |k: &str| {
            field(k).map(str::to_string).ok_or_else(|| KeyError(format!("'{k}' is missing")))
        };
        match field("type") {
            Some("service_account") | None if field("private_key").is_some() => {
                let pem = need("private_key")?;
                Ok(Credentials::ServiceAccount(Box::new(ServiceAccount {
                    email: need("client_email")?,
                    key_id: field("private_key_id").map(str::to_string),
                    token_uri: need("token_uri")?,
                    key: rsa_key(&pem)?,
                })))
            }
            Some("service_account") => Err(KeyError("'private_key' is missing".into())),
            Some("authorized_user") => Ok(Credentials::AuthorizedUser(AuthorizedUser {
                client_id: need("client_id")?,
                client_secret: need("client_secret")?,
                refresh_token: need("refresh_token")?,
                token_uri: field("token_uri").unwrap_or(GOOGLE_TOKEN_URI).to_string(),
            })),
            Some(other) => Err(KeyError(format!(
                "type '{other}' is not supported (expected service_account or authorized_user)"
            ))),
            None => Err(KeyError(
                "expected a service account key (type: service_account, with client_email, \
                 private_key and token_uri)"
                    .into(),
            )),
        }
    }

    /// Who the tokens are for, for messages.
    pub(crate) fn who(&self) -> String {
        match self {
            Credentials::Anonymous => "anonymous".into(),
            Credentials::ServiceAccount(sa) => format!("service account {}", sa.email),
            Credentials::AuthorizedUser(_) => "the application-default user".into(),
        }
    }
}

/// The PKCS#8 RSA key of a service account's `private_key` PEM.
fn rsa_key(pem: &str) -> Result<ring::signature::RsaKeyPair, KeyError> {
    use rustls::pki_types::{PrivatePkcs8KeyDer, pem::PemObject as _};
    let der = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| {
        KeyError(format!("private_key: expected a PEM 'BEGIN PRIVATE KEY' block: {e}"))
    })?;
    ring::signature::RsaKeyPair::from_pkcs8(der.secret_pkcs8_der())
        .map_err(|e| KeyError(format!("private_key: not an RSA key ring accepts: {e}")))
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl ServiceAccount {
    /// The signed assertion (`header.claims.signature`), issued at `now`.
    pub(crate) fn assertion(&self, now: SystemTime) -> Result<String, KeyError> {
        let iat = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let mut header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
        if let Some(kid) = &self.key_id {
            header["kid"] = kid.clone().into();
        }
        let claims = serde_json::json!({
            "iss": self.email,
            "scope": SCOPE,
            "aud": self.token_uri,
            "iat": iat,
            "exp": iat + ASSERTION_LIFETIME.as_secs(),
        });
        let input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let mut sig = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                &ring::signature::RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                input.as_bytes(),
                &mut sig,
            )
            .map_err(|_| KeyError("signing the assertion failed".into()))?;
        Ok(format!("{input}.{}", b64url(&sig)))
    }
}

/// An access token and when to stop using it.
pub(crate) struct Token {
    /// The bearer token.
    pub secret: String,
    renew_at: SystemTime,
}

impl Token {
    /// Still good for a request starting now.
    pub(crate) fn fresh(&self) -> bool {
        SystemTime::now() < self.renew_at
    }
}

/// Why no token could be had.
#[derive(Debug, thiserror::Error)]
#[error("gcs: getting an access token for {who} from {uri}: {message}")]
pub(crate) struct TokenError {
    /// `service account <email>` or the ADC user.
    pub who: String,
    /// The token endpoint (scheme, host and path; no query).
    pub uri: String,
    /// What went wrong (the endpoint's `error` and `error_description`).
    pub message: String,
}

/// A new access token for `creds` (not [`Credentials::Anonymous`]).
pub(crate) async fn fetch_token(
    creds: &Credentials,
    tls: &tokio_rustls::TlsConnector,
) -> Result<Token, TokenError> {
    let (uri, form) = match creds {
        Credentials::Anonymous => unreachable!("anonymous requests carry no token"),
        Credentials::ServiceAccount(sa) => {
            let err = |message| TokenError { who: creds.who(), uri: sa.token_uri.clone(), message };
            let jwt = sa.assertion(SystemTime::now()).map_err(|e| err(e.0))?;
            let form = form_urlencoded::Serializer::new(String::new())
                .append_pair("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer")
                .append_pair("assertion", &jwt)
                .finish();
            (&sa.token_uri, form)
        }
        Credentials::AuthorizedUser(u) => {
            let form = form_urlencoded::Serializer::new(String::new())
                .append_pair("grant_type", "refresh_token")
                .append_pair("client_id", &u.client_id)
                .append_pair("client_secret", &u.client_secret)
                .append_pair("refresh_token", &u.refresh_token)
                .finish();
            (&u.token_uri, form)
        }
    };
    let err = |message: String| TokenError { who: creds.who(), uri: uri.clone(), message };
    let url = reqwest::Url::parse(uri).map_err(|e| err(format!("not a URL: {e}")))?;
    let req = hyper::Request::builder()
        .method(hyper::Method::POST)
        .header(hyper::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(hyper::header::CONTENT_LENGTH, form.len());
    let body = {
        use http_body_util::BodyExt;
        http_body_util::Full::new(bytes::Bytes::from(form))
            .map_err(|never| match never {})
            .boxed_unsync()
    };
    let span = tracing::info_span!("gcs_token", who = %creds.who(), uri = %uri);
    let resp = fetch::send(tls, &url, req, body, fetch::READ_TIMEOUT)
        .instrument(span)
        .await
        .map_err(err)?;
    let status = resp.status().as_u16();
    let text = crate::release::remote::error_body(resp).await;
    let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if !(200..300).contains(&status) {
        let code = json.get("error").and_then(Value::as_str);
        let desc = json.get("error_description").and_then(Value::as_str);
        let detail = match (code, desc) {
            (Some(c), Some(d)) => format!(" ({c}: {d})"),
            (Some(c), None) => format!(" ({c})"),
            _ => String::new(),
        };
        return Err(err(format!("HTTP {status}{detail}")));
    }
    let secret = json
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| err("the answer has no access_token".into()))?
        .to_string();
    let lifetime = json.get("expires_in").and_then(Value::as_u64).unwrap_or(3600);
    let renew_at = SystemTime::now() + Duration::from_secs(lifetime).saturating_sub(EXPIRY_MARGIN);
    tracing::debug!(lifetime, "access token");
    Ok(Token { secret, renew_at })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh 2048-bit key as a service account's JSON key would carry it.
    fn key_json(email: &str) -> (Value, rsa::PublicKey) {
        use rsa::pkcs8::EncodePrivateKey as _;
        let key = rsa::PrivateKey::new(&mut getrandom::SysRng, 2048).unwrap();
        let pem = key.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF).unwrap();
        let json = serde_json::json!({
            "type": "service_account",
            "project_id": "p",
            "private_key_id": "kid-1",
            "private_key": pem.as_str(),
            "client_email": email,
            "token_uri": "https://oauth2.googleapis.com/token",
        });
        (json, key.to_public_key())
    }

    fn b64url_json(part: &str) -> Value {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    /// The assertion Google's token endpoint takes: RS256 header with the
    /// key id, the claims of the JWT-bearer flow (issuer, scope, audience =
    /// token_uri, an hour's validity), and a signature the key's public
    /// half verifies (checked with the `rsa` crate, not the signer).
    #[test]
    fn assertions_are_signed_jwts_with_googles_claims() {
        let (json, public) = key_json("releaser@p.iam.gserviceaccount.com");
        let Credentials::ServiceAccount(sa) = Credentials::from_json(&json).unwrap() else {
            panic!("not a service account")
        };
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let jwt = sa.assertion(now).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3, "{jwt}");
        assert_eq!(
            b64url_json(parts[0]),
            serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": "kid-1"})
        );
        assert_eq!(
            b64url_json(parts[1]),
            serde_json::json!({
                "iss": "releaser@p.iam.gserviceaccount.com",
                "scope": SCOPE,
                "aud": "https://oauth2.googleapis.com/token",
                "iat": 1_800_000_000u64,
                "exp": 1_800_003_600u64,
            })
        );
        use rsa::signature::Verifier as _;
        let verifier = rsa::pkcs1v15::VerifyingKey::<rsa::sha2::Sha256>::new(public);
        let sig_bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        let sig = rsa::pkcs1v15::Signature::try_from(sig_bytes.as_slice()).unwrap();
        let signed = format!("{}.{}", parts[0], parts[1]);
        verifier.verify(signed.as_bytes(), &sig).expect("the public key verifies the signature");
        // Any other input fails: the check can fail.
        let other = format!("{}.{}x", parts[0], parts[1]);
        assert!(verifier.verify(other.as_bytes(), &sig).is_err());
    }

    /// Key files that cannot work are refused saying what is missing,
    /// without echoing the key.
    #[test]
    fn unusable_keys_say_what_is_missing() {
        let (json, _) = key_json("a@b");
        let err = |j: Value| match Credentials::from_json(&j) {
            Err(e) => e.0,
            Ok(_) => panic!("accepted {j}"),
        };
        let mut no_email = json.clone();
        no_email.as_object_mut().unwrap().remove("client_email");
        assert_eq!(err(no_email), "'client_email' is missing");
        let mut bad_key = json.clone();
        bad_key["private_key"] =
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".into();
        let e = err(bad_key);
        assert!(e.starts_with("private_key: "), "{e}");
        assert!(!e.contains("AAAA"), "{e}");
        let e = err(serde_json::json!({"type": "external_account"}));
        assert!(e.contains("'external_account' is not supported"), "{e}");
        assert!(err(serde_json::json!({"a": 1})).contains("expected a service account key"));
        let user = serde_json::json!({
            "type": "authorized_user", "client_id": "c", "client_secret": "s", "refresh_token": "r"
        });
        let Credentials::AuthorizedUser(u) = Credentials::from_json(&user).unwrap() else {
            panic!("not a user")
        };
        assert_eq!(u.token_uri, GOOGLE_TOKEN_URI);
    }
}
