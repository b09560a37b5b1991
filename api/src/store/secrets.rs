//! Secrets: generated credentials (agent NATS passwords, manifest
//! variables, API tokens) kept under `<root>/secrets/`, outside every
//! object, so that no `get` or watch of an object can ever show them.
//!
//! They are also encrypted at rest, as Kubernetes' encryption-at-rest does
//! for its Secrets: a process that can read etcd (a backup, a stolen
//! client certificate, a compromised etcd host) does not get them without
//! the key, which is a file outside etcd ([`SecretsKey`]). A stored value
//! is `bosh:enc:aesgcm:v1:<key id>:` + a 12-byte random nonce + the
//! AES-256-GCM ciphertext and tag, with the secret's name as associated
//! data so that one secret's ciphertext cannot be passed off as another's.
//! A value without that prefix was written before encryption: it is read
//! as plaintext and rewritten encrypted (compare-and-swap on its revision).

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use etcd_client::{Compare, CompareOp, KeyValue, TxnOp};
use sha2::{Digest, Sha256};

use super::{Error, Result, Store};

/// What every encrypted value starts with; the version names the
/// algorithm and layout, so a later scheme can be told apart.
const PREFIX: &[u8] = b"bosh:enc:aesgcm:v1:";
/// The family prefix: a value starting with it is never plaintext.
const FAMILY: &[u8] = b"bosh:enc:";
const NONCE_LEN: usize = 12;
const KEY_LEN: usize = 32;

/// The AES-256 key secrets are encrypted with, and its id (the first 8 hex
/// digits of its SHA-256), which each value names so that a wrong key is
/// reported as such rather than as corrupt data.
#[derive(Clone)]
pub struct SecretsKey {
    id: String,
    key: [u8; KEY_LEN],
}

impl fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretsKey").field("id", &self.id).finish_non_exhaustive()
    }
}

impl SecretsKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(key: [u8; KEY_LEN]) -> SecretsKey {
        let id = hex::encode(&Sha256::digest(key)[..4]);
        SecretsKey { id, key }
    }

    /// A fresh random key.
    pub fn generate() -> SecretsKey {
        let mut key = [0u8; KEY_LEN];
        getrandom::fill(&mut key).expect("the OS random source works");
        SecretsKey::from_bytes(key)
    }

    /// The key's id, as written into every value it encrypts.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Reads the key file at `path` (64 hex digits), creating it (0600,
    /// never overwriting: replicas that race agree on one key) when it does
    /// not exist. Replicas of one director must share this file.
    pub fn load_or_create(path: &Path) -> Result<SecretsKey> {
        let io = |source| Error::Io { path: path.to_path_buf(), source };
        let fresh = SecretsKey::generate();
        match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
            Ok(mut f) => {
                f.write_all(format!("{}\n", hex::encode(fresh.key)).as_bytes()).map_err(io)?;
                f.sync_all().map_err(io)?;
                return Ok(fresh);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(e)),
        }
        let meta = std::fs::metadata(path).map_err(io)?;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "the secrets encryption key file is readable by others; chmod 600 it");
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        let bytes = hex::decode(text.trim()).ok().and_then(|b| <[u8; KEY_LEN]>::try_from(b).ok());
        match bytes {
            Some(key) => Ok(SecretsKey::from_bytes(key)),
            None => Err(io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "an encryption key file holds 64 hex digits (a 256-bit key)",
            ))),
        }
    }

    /// `PREFIX` + key id + `:` + nonce + ciphertext of `value`, bound to `name`.
    fn seal(&self, name: &str, value: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the OS random source works");
        let cipher = Aes256Gcm::new(&self.key.into());
        let sealed = cipher
            .encrypt(&Nonce::from(nonce), Payload { msg: value, aad: name.as_bytes() })
            .expect("AES-GCM encrypts any secret-sized value");
        let mut out =
            Vec::with_capacity(PREFIX.len() + self.id.len() + 1 + NONCE_LEN + sealed.len());
        out.extend_from_slice(PREFIX);
        out.extend_from_slice(self.id.as_bytes());
        out.push(b':');
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }
}

/// A stored value, decoded: the secret, and whether it was stored as
/// plaintext (to be rewritten encrypted).
fn open(key: Option<&SecretsKey>, name: &str, stored: &[u8]) -> Result<(Vec<u8>, bool)> {
    let Some(rest) = stored.strip_prefix(FAMILY) else {
        return Ok((stored.to_vec(), true));
    };
    let fail = |key_id: &str, reason: String| Error::Decrypt {
        name: name.to_string(),
        key_id: key_id.to_string(),
        reason,
    };
    let Some(rest) = stored.strip_prefix(PREFIX) else {
        let scheme = String::from_utf8_lossy(&rest[..rest.len().min(16)]).into_owned();
        return Err(fail("?", format!("unknown encryption scheme {scheme:?}")));
    };
    let Some(colon) = rest.iter().position(|b| *b == b':') else {
        return Err(fail("?", "the value is truncated".into()));
    };
    let key_id = String::from_utf8_lossy(&rest[..colon]).into_owned();
    let body = &rest[colon + 1..];
    let Some(key) = key else {
        return Err(fail(
            &key_id,
            "no encryption key is configured (--encryption-key-file)".into(),
        ));
    };
    if key.id != key_id {
        return Err(fail(&key_id, format!("the configured key is {:?}, a different key", key.id)));
    }
    if body.len() < NONCE_LEN {
        return Err(fail(&key_id, "the value is truncated".into()));
    }
    let (nonce, sealed) = body.split_at(NONCE_LEN);
    let nonce = <[u8; NONCE_LEN]>::try_from(nonce).expect("split at NONCE_LEN");
    let cipher = Aes256Gcm::new(&key.key.into());
    let value = cipher
        .decrypt(&Nonce::from(nonce), Payload { msg: sealed, aad: name.as_bytes() })
        .map_err(|_| fail(&key_id, "authentication failed: the value was altered".into()))?;
    Ok((value, false))
}

impl Store {
    fn secret_key(&self, name: &str) -> String {
        format!("{}/secrets/{name}", self.root)
    }

    /// The bytes stored for `value`: encrypted when the store has a key.
    fn seal(&self, name: &str, value: &[u8]) -> Vec<u8> {
        match &self.secrets_key {
            Some(k) => k.seal(name, value),
            None => value.to_vec(),
        }
    }

    /// Decodes a stored secret, rewriting a plaintext one encrypted (when
    /// this store has a key). The rewrite is best effort: it loses a race
    /// to any other write (including a deletion) of the secret, and a
    /// fenced store that lost its leadership skips it; the next read tries again.
    async fn open(&self, name: &str, kv: &KeyValue) -> Result<Vec<u8>> {
        let (value, plaintext) = open(self.secrets_key.as_ref(), name, kv.value())?;
        if plaintext && self.secrets_key.is_some() {
            let cmp = vec![Compare::mod_revision(kv.key(), CompareOp::Equal, kv.mod_revision())];
            let put = vec![TxnOp::put(kv.key(), self.seal(name, &value), None)];
            let lost = || Error::Conflict {
                kind: "Secret",
                name: name.to_string(),
                expected: kv.mod_revision(),
            };
            match self.write(cmp, put, lost).await {
                Ok(_) => tracing::info!(secret = name, "encrypted a plaintext secret"),
                Err(e) => {
                    tracing::debug!(secret = name, error = %e, "plaintext secret not rewritten")
                }
            }
        }
        Ok(value)
    }

    /// Stores `value` under `name` unless a secret of that name exists;
    /// returns the value that is stored now (the existing one if any), so
    /// two racing generators agree on one secret.
    pub async fn create_secret(&self, name: &str, value: &[u8]) -> Result<Vec<u8>> {
        crate::objects::validate_name(name)?;
        let key = self.secret_key(name);
        let cmp = vec![Compare::create_revision(key.clone(), CompareOp::Equal, 0)];
        match self
            .write(cmp, vec![TxnOp::put(key, self.seal(name, value), None)], || {
                Error::AlreadyExists { kind: "Secret", name: name.to_string() }
            })
            .await
        {
            Ok(_) => Ok(value.to_vec()),
            Err(Error::AlreadyExists { .. }) => self
                .get_secret(name)
                .await?
                .ok_or_else(|| Error::NotFound { kind: "Secret", name: name.to_string() }),
            Err(e) => Err(e),
        }
    }

    /// Reads a secret.
    pub async fn get_secret(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.count_read();
        let resp = self
            .client()
            .get(self.secret_key(name), None)
            .await
            .map_err(Error::etcd("get secret"))?;
        match resp.kvs().first() {
            Some(kv) => Ok(Some(self.open(name, kv).await?)),
            None => Ok(None),
        }
    }

    /// Lists secrets whose name starts with `prefix`, as `(name, value)`.
    pub async fn list_secrets(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        Ok(self.list_secrets_at(prefix).await?.0)
    }

    /// Lists secrets like [`Store::list_secrets`], with the store revision
    /// the list was read at (to tell an older reading from a newer one).
    pub async fn list_secrets_at(&self, prefix: &str) -> Result<(Vec<(String, Vec<u8>)>, i64)> {
        let base = format!("{}/secrets/", self.root);
        let (kvs, revision) = self.range_all(&format!("{base}{prefix}"), None).await?;
        let mut items = Vec::with_capacity(kvs.len());
        for kv in kvs {
            let name = String::from_utf8_lossy(&kv.key()[base.len()..]).into_owned();
            let value = self.open(&name, &kv).await?;
            items.push((name, value));
        }
        Ok((items, revision))
    }

    /// Deletes a secret (no error when absent).
    pub async fn delete_secret(&self, name: &str) -> Result<()> {
        self.write(vec![], vec![TxnOp::delete(self.secret_key(name), None)], || Error::NotFound {
            kind: "Secret",
            name: name.to_string(),
        })
        .await
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sealed value holds no plaintext, names its key, and opens only
    /// under its own name.
    #[test]
    fn sealed_values_open_with_their_key_and_name_only() {
        let key = SecretsKey::from_bytes([7; KEY_LEN]);
        let sealed = key.seal("nats/director", b"hunter2-password");
        assert!(sealed.starts_with(format!("bosh:enc:aesgcm:v1:{}:", key.id()).as_bytes()));
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(
            open(Some(&key), "nats/director", &sealed).unwrap(),
            (b"hunter2-password".to_vec(), false)
        );
        let moved = open(Some(&key), "nats/other", &sealed).unwrap_err();
        assert!(moved.to_string().contains("authentication failed"), "{moved}");
    }

    /// A wrong or missing key is an error naming the key id, never the value.
    #[test]
    fn a_wrong_key_is_reported_by_id_without_the_value() {
        let key = SecretsKey::from_bytes([7; KEY_LEN]);
        let other = SecretsKey::from_bytes([8; KEY_LEN]);
        let sealed = key.seal("s", b"hunter2");
        for err in
            [open(Some(&other), "s", &sealed).unwrap_err(), open(None, "s", &sealed).unwrap_err()]
        {
            let msg = err.to_string();
            assert!(msg.contains(key.id()), "{msg}");
            assert!(!msg.contains("hunter2"), "{msg}");
        }
    }

    /// A value from before encryption reads as plaintext (to be migrated).
    #[test]
    fn plaintext_values_read_as_plaintext() {
        let key = SecretsKey::from_bytes([7; KEY_LEN]);
        assert_eq!(open(Some(&key), "s", b"old").unwrap(), (b"old".to_vec(), true));
    }

    /// The key file is created 0600 once and read back as the same key.
    #[test]
    fn key_file_is_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("encryption-key");
        let a = SecretsKey::load_or_create(&p).unwrap();
        let b = SecretsKey::load_or_create(&p).unwrap();
        assert_eq!(a.id(), b.id());
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::write(&p, "not a key").unwrap();
        let err = SecretsKey::load_or_create(&p).unwrap_err().to_string();
        assert!(err.contains("encryption-key"), "{err}");
    }
}
