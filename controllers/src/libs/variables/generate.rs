//! Generators of variable values, in config-server's formats and with its
//! defaults (`types/*_generator.go`), so jobs written for BOSH read them
//! unchanged: PEM keys are PKCS#1 (`RSA PRIVATE KEY`), public keys PKIX,
//! SSH public keys OpenSSH `authorized_keys` lines.
//!
//! Errors are plain reasons that never quote key material.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use md5::Digest as _;
use rand::Rng as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rsa::pkcs1::{DecodeRsaPrivateKey as _, EncodeRsaPrivateKey as _};
use rsa::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _};
use rsa::traits::PublicKeyParts as _;
use serde::Deserialize;
use serde_json::{Value, json};

use bosh_api::manifest::{Properties, VariableType};

/// Bits of every generated RSA key (config-server uses 3072 for
/// certificates; 2048 keeps deploys fast and is what its rsa/ssh use).
pub(super) const RSA_BITS: usize = 2048;

/// Characters of generated passwords (config-server's `letterRunes`).
const PASSWORD_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// Length of a password without `options.length`.
const DEFAULT_PASSWORD_LENGTH: usize = 20;

/// Days a certificate without `options.duration` is valid.
const DEFAULT_CERT_DAYS: u64 = 365;

/// The CA a certificate is signed with: its stored PEM certificate and key.
pub(super) struct CaMaterial {
    /// PEM certificate.
    pub certificate: String,
    /// PEM private key (PKCS#1 or PKCS#8).
    pub private_key: String,
}

impl CaMaterial {
    /// The certificate and key of a stored certificate value, if it is one.
    pub(super) fn from_value(v: &Value) -> Option<CaMaterial> {
        Some(CaMaterial {
            certificate: v.get("certificate")?.as_str()?.to_string(),
            private_key: v.get("private_key")?.as_str()?.to_string(),
        })
    }
}

/// `options` of a `password` variable.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordOptions {
    /// Characters; 0 means the default.
    #[serde(default)]
    length: i64,
}

/// `options` of a `certificate` variable (config-server's `certParams`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CertOptions {
    /// Subject CN.
    #[serde(default)]
    pub common_name: Option<String>,
    /// Subject O (default `Cloud Foundry`).
    #[serde(default)]
    pub organization: Option<String>,
    /// SANs: IP addresses or DNS names (leaf certificates only).
    #[serde(default)]
    pub alternative_names: Vec<String>,
    /// Whether this is a CA.
    #[serde(default)]
    pub is_ca: bool,
    /// The variable of the CA that signs it (required unless `is_ca`).
    #[serde(default)]
    pub ca: Option<String>,
    /// Extended key usages (default `server_auth`).
    #[serde(default)]
    pub extended_key_usage: Vec<ExtKeyUsage>,
    /// Validity in days.
    #[serde(default)]
    pub duration: Option<u64>,
}

/// An extended key usage a certificate may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum ExtKeyUsage {
    /// TLS server.
    ServerAuth,
    /// TLS client.
    ClientAuth,
}

/// Reads `options` into `T`; the reason names the bad option, never a value.
fn options<T: for<'de> Deserialize<'de>>(options: &Properties) -> Result<T, String> {
    let map: serde_json::Map<String, Value> =
        options.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    serde_json::from_value(Value::Object(map)).map_err(|e| format!("invalid options: {e}"))
}

/// The certificate options of a declaration.
pub(super) fn cert_options(opts: &Properties) -> Result<CertOptions, String> {
    options(opts)
}

/// Checks a declaration's options without generating anything.
pub(super) fn check_options(type_: VariableType, opts: &Properties) -> Result<(), String> {
    match type_ {
        VariableType::Password => {
            let o: PasswordOptions = options(opts)?;
            if o.length < 0 {
                return Err("'length' cannot be negative".into());
            }
            Ok(())
        }
        VariableType::Certificate => {
            let o = cert_options(opts)?;
            if !o.is_ca && o.ca.is_none() {
                return Err("a certificate that is not a CA needs the 'ca' option".into());
            }
            Ok(())
        }
        VariableType::Rsa | VariableType::Ssh => Ok(()),
        VariableType::User | VariableType::Value | VariableType::Json => {
            Err("this type cannot be generated; its value must be set in the store".into())
        }
    }
}

/// Generates a value of `type_`; `ca` is the signer of a certificate with a
/// `ca` option. Blocking (RSA key generation): run it off the async runtime.
pub(super) fn generate(
    type_: VariableType,
    opts: &Properties,
    ca: Option<&CaMaterial>,
) -> Result<Value, String> {
    check_options(type_, opts)?;
    match type_ {
        VariableType::Password => {
            let o: PasswordOptions = options(opts)?;
            let len = usize::try_from(o.length).unwrap_or(0);
            Ok(Value::String(password(if len == 0 { DEFAULT_PASSWORD_LENGTH } else { len })))
        }
        VariableType::Certificate => certificate(&cert_options(opts)?, ca),
        VariableType::Rsa => rsa_key(),
        VariableType::Ssh => ssh_key(),
        VariableType::User | VariableType::Value | VariableType::Json => {
            Err("this type cannot be generated".into())
        }
    }
}

/// A random password of `len` lowercase letters and digits.
pub(super) fn password(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(PASSWORD_CHARS[rng.random_range(0..PASSWORD_CHARS.len())]))
        .collect()
}

fn new_rsa_key() -> Result<rsa::PrivateKey, String> {
    rsa::PrivateKey::new(&mut getrandom::SysRng, RSA_BITS)
        .map_err(|e| format!("generating an RSA key: {e}"))
}

fn pem(tag: &str, der: &[u8]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new(tag, der), config)
}

fn private_key_pem(key: &rsa::PrivateKey) -> Result<String, String> {
    let der = key.to_pkcs1_der().map_err(|e| format!("encoding the private key: {e}"))?;
    Ok(pem("RSA PRIVATE KEY", der.as_bytes()))
}

/// `{private_key, public_key}`: PKCS#1 and PKIX PEM.
fn rsa_key() -> Result<Value, String> {
    let key = new_rsa_key()?;
    let public = key
        .to_public_key()
        .to_public_key_der()
        .map_err(|e| format!("encoding the public key: {e}"))?;
    Ok(json!({
        "private_key": private_key_pem(&key)?,
        "public_key": pem("PUBLIC KEY", public.as_bytes()),
    }))
}

/// Appends an SSH wire-format `string`.
fn ssh_string(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Appends an SSH wire-format `mpint` of a positive big-endian integer.
fn ssh_mpint(out: &mut Vec<u8>, bytes: &[u8]) {
    let trimmed: &[u8] = match bytes.iter().position(|b| *b != 0) {
        Some(i) => &bytes[i..],
        None => &[],
    };
    if trimmed.first().is_some_and(|b| b & 0x80 != 0) {
        let mut padded = Vec::with_capacity(trimmed.len() + 1);
        padded.push(0);
        padded.extend_from_slice(trimmed);
        ssh_string(out, &padded);
    } else {
        ssh_string(out, trimmed);
    }
}

/// The OpenSSH wire blob of an RSA public key (`ssh-rsa`, e, n).
pub(super) fn ssh_rsa_blob(key: &rsa::PublicKey) -> Vec<u8> {
    let mut blob = Vec::new();
    ssh_string(&mut blob, b"ssh-rsa");
    ssh_mpint(&mut blob, &key.e_bytes());
    ssh_mpint(&mut blob, &key.n_bytes());
    blob
}

/// Colon-separated MD5 of a key blob, as `ssh-keygen -E md5` (without `MD5:`).
pub(super) fn md5_fingerprint(blob: &[u8]) -> String {
    let digest = md5::Md5::digest(blob);
    digest.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// `{private_key, public_key, public_key_fingerprint}`: PKCS#1 PEM, an
/// `authorized_keys` line, and the legacy MD5 fingerprint.
fn ssh_key() -> Result<Value, String> {
    let key = new_rsa_key()?;
    let blob = ssh_rsa_blob(&key.to_public_key());
    let public = format!("ssh-rsa {}\n", base64::engine::general_purpose::STANDARD.encode(&blob));
    Ok(json!({
        "private_key": private_key_pem(&key)?,
        "public_key": public,
        "public_key_fingerprint": md5_fingerprint(&blob),
    }))
}

/// rcgen's signing key for an RSA key.
fn key_pair(key: &rsa::PrivateKey) -> Result<KeyPair, String> {
    let der = key.to_pkcs8_der().map_err(|e| format!("encoding the private key: {e}"))?;
    KeyPair::try_from(der.as_bytes()).map_err(|e| format!("loading the private key: {e}"))
}

/// Reads a stored CA's private key (PKCS#1 as generated, or PKCS#8).
fn ca_key_pair(pem_text: &str) -> Result<KeyPair, String> {
    let parsed = pem::parse(pem_text).map_err(|_| "the CA's private key is not PEM".to_string())?;
    match parsed.tag() {
        "RSA PRIVATE KEY" => {
            let key = rsa::PrivateKey::from_pkcs1_der(parsed.contents())
                .map_err(|_| "the CA's private key is not a PKCS#1 RSA key".to_string())?;
            key_pair(&key)
        }
        _ => KeyPair::try_from(parsed.contents())
            .map_err(|_| "the CA's private key cannot be read".to_string()),
    }
}

fn now() -> time::OffsetDateTime {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs();
    time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(0))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// A random positive 128-bit serial number.
fn serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::rng().random();
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

/// `{ca, certificate, private_key}`: a CA signs itself unless it names a
/// `ca` (an intermediate); a leaf is always signed by its `ca`.
fn certificate(o: &CertOptions, ca: Option<&CaMaterial>) -> Result<Value, String> {
    let key = new_rsa_key()?;
    let signing = key_pair(&key)?;

    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CountryName, "US");
    dn.push(DnType::OrganizationName, o.organization.as_deref().unwrap_or("Cloud Foundry"));
    if let Some(cn) = o.common_name.as_deref().filter(|cn| !cn.is_empty()) {
        dn.push(DnType::CommonName, cn);
    }
    params.distinguished_name = dn;
    let not_before = now();
    let days = o.duration.filter(|d| *d > 0).unwrap_or(DEFAULT_CERT_DAYS);
    params.not_before = not_before;
    params.not_after = not_before + time::Duration::days(i64::try_from(days).unwrap_or(i64::MAX));
    params.serial_number = Some(serial());
    params.use_authority_key_identifier_extension = true;
    if o.is_ca {
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    } else {
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages =
            vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = if o.extended_key_usage.is_empty() {
            vec![ExtendedKeyUsagePurpose::ServerAuth]
        } else {
            o.extended_key_usage
                .iter()
                .map(|u| match u {
                    ExtKeyUsage::ServerAuth => ExtendedKeyUsagePurpose::ServerAuth,
                    ExtKeyUsage::ClientAuth => ExtendedKeyUsagePurpose::ClientAuth,
                })
                .collect()
        };
        for name in &o.alternative_names {
            params.subject_alt_names.push(match name.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(
                    name.as_str()
                        .try_into()
                        .map_err(|_| format!("alternative name {name:?} is not a DNS name"))?,
                ),
            });
        }
    }

    let (certificate, ca_pem) = match ca {
        Some(ca) => {
            let issuer = Issuer::from_ca_cert_pem(&ca.certificate, ca_key_pair(&ca.private_key)?)
                .map_err(|e| format!("reading the CA certificate: {e}"))?;
            let cert = params
                .signed_by(&signing, &issuer)
                .map_err(|e| format!("signing the certificate: {e}"))?;
            (cert.pem(), ca.certificate.clone())
        }
        None if o.is_ca => {
            let cert = params
                .self_signed(&signing)
                .map_err(|e| format!("signing the certificate: {e}"))?;
            let pem = cert.pem();
            (pem.clone(), pem)
        }
        None => return Err("a certificate that is not a CA needs the 'ca' option".into()),
    };
    Ok(json!({
        "ca": ca_pem,
        "certificate": certificate,
        "private_key": private_key_pem(&key)?,
    }))
}
