//! Sequence counters (task numbers, event order), incremented by
//! compare-and-swap so concurrent callers never get the same number.

use etcd_client::{Compare, CompareOp, TxnOp};

use super::{Error, Result, Store};

impl Store {
    /// The next value of counter `name` (1, 2, 3, ...).
    pub async fn next_sequence(&self, name: &str) -> Result<u64> {
        crate::objects::validate_name(name)?;
        let key = format!("{}/counters/{name}", self.root);
        loop {
            self.count_read();
            let resp =
                self.client().get(key.clone(), None).await.map_err(Error::etcd("get counter"))?;
            let (current, rev) = match resp.kvs().first() {
                Some(kv) => (
                    String::from_utf8_lossy(kv.value()).parse::<u64>().unwrap_or(0),
                    kv.mod_revision(),
                ),
                None => (0, 0),
            };
            let next = current + 1;
            let cmp = vec![Compare::mod_revision(key.clone(), CompareOp::Equal, rev)];
            let put = vec![TxnOp::put(key.clone(), next.to_string(), None)];
            match self
                .write(cmp, put, || Error::Conflict {
                    kind: "Counter",
                    name: name.into(),
                    expected: rev,
                })
                .await
            {
                Ok(_) => return Ok(next),
                Err(Error::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
    }
}
