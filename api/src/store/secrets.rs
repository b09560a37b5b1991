//! Secrets: generated credentials (agent NATS passwords, later manifest
//! variables) kept under `<root>/secrets/`, outside every object, so that
//! no `get` or watch of an object can ever show them.

use etcd_client::{Compare, CompareOp, TxnOp};

use super::{Error, Result, Store};

impl Store {
    fn secret_key(&self, name: &str) -> String {
        format!("{}/secrets/{name}", self.root)
    }

    /// Stores `value` under `name` unless a secret of that name exists;
    /// returns the value that is stored now (the existing one if any), so
    /// two racing generators agree on one secret.
    pub async fn create_secret(&self, name: &str, value: &[u8]) -> Result<Vec<u8>> {
        crate::objects::validate_name(name)?;
        let key = self.secret_key(name);
        let cmp = vec![Compare::create_revision(key.clone(), CompareOp::Equal, 0)];
        match self
            .write(cmp, vec![TxnOp::put(key, value, None)], || Error::AlreadyExists {
                kind: "Secret",
                name: name.to_string(),
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
        let resp = self
            .client()
            .get(self.secret_key(name), None)
            .await
            .map_err(Error::etcd("get secret"))?;
        Ok(resp.kvs().first().map(|kv| kv.value().to_vec()))
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
        let items = kvs
            .into_iter()
            .map(|kv| {
                (String::from_utf8_lossy(&kv.key()[base.len()..]).into_owned(), kv.value().to_vec())
            })
            .collect();
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
