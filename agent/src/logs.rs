//! `fetch_logs`: a tgz of `/var/vcap/sys/log` uploaded to the blobstore.

use std::sync::Arc;

use bosh_api::agent::BlobRef;

use crate::archive;
use crate::context::Agent;
use crate::error::Result;

/// Bundles the job logs and uploads them.
pub async fn fetch_logs(agent: &Arc<Agent>) -> Result<BlobRef> {
    let tgz = agent.paths.tmp().join(format!("logs-{}.tgz", uuid::Uuid::new_v4()));
    let (d, t) = (agent.paths.sys_log(), tgz.clone());
    tokio::task::spawn_blocking(move || archive::pack_dir(&d, &t))
        .await
        .expect("pack does not panic")?;
    let r = agent.blobs.upload(&tgz, "logs").await;
    let _ = std::fs::remove_file(&tgz);
    r
}
