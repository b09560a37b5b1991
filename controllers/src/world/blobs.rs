//! Whole-blob reads and writes for the director's own use (job tarballs,
//! rendered templates), each read checked against its sha256.

use std::sync::Arc;

use bosh_api::objects::BlobRef;
use bosh_blobstore::Storage;
use tokio::io::AsyncReadExt;

/// Reads blob `sha256` whole and checks its digest.
pub async fn read(storage: &Arc<dyn Storage>, sha256: &str) -> Result<Vec<u8>, String> {
    let (mut reader, size) = storage.get(sha256).await.map_err(|e| e.to_string())?;
    let mut bytes = Vec::with_capacity(size as usize);
    reader.read_to_end(&mut bytes).await.map_err(|e| e.to_string())?;
    let got = bosh_blobstore::sha256_hex(&bytes);
    if got != sha256 {
        return Err(format!("blob {sha256} is corrupt (its content hashes to {got})"));
    }
    Ok(bytes)
}

/// Stores `bytes` (a no-op when present) and returns its reference.
pub async fn put(storage: &Arc<dyn Storage>, bytes: Vec<u8>) -> Result<BlobRef, String> {
    let sha = bosh_blobstore::sha256_hex(&bytes);
    let size = bytes.len() as u64;
    if storage.stat(&sha).await.map_err(|e| e.to_string())? == Some(size) {
        return Ok(BlobRef { sha256: sha, size });
    }
    let body: bosh_blobstore::ByteStream =
        Box::pin(futures::stream::once(async move { Ok(bytes::Bytes::from(bytes)) }));
    storage.put_stream(body, Some(&sha)).await.map_err(|e| e.to_string())
}
