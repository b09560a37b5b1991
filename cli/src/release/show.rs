//! Tables and JSON for releases and blobs, laid out like the bosh CLI's.

use std::path::Path;

use bosh_api::release::{ReleaseArchive, ReleaseManifest, config::BlobsIndex};
use comfy_table::{Table, presets::NOTHING};
use serde_json::{Value, json};

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(NOTHING);
    t.set_header(header.to_vec());
    t
}

/// The release summary, then one table each for jobs, packages and the license.
pub fn release(m: &ReleaseManifest, archive: Option<&Path>) {
    let mut t = Table::new();
    t.load_style(NOTHING);
    t.add_row(vec!["Name", &m.name]);
    t.add_row(vec!["Version", &m.version]);
    let commit =
        if m.uncommitted_changes { format!("{}+", m.commit_hash) } else { m.commit_hash.clone() };
    t.add_row(vec!["Commit Hash", &commit]);
    if let Some(a) = archive {
        t.add_row(vec!["Archive", &a.display().to_string()]);
    }
    println!("{t}\n");

    let mut jobs = table(&["Job", "Fingerprint", "Digest", "Packages"]);
    for j in &m.jobs {
        jobs.add_row(vec![&j.name, &j.fingerprint, &j.sha1, &j.packages.join(", ")]);
    }
    println!("{jobs}\n\n{} jobs\n", m.jobs.len());

    let mut pkgs = table(&["Package", "Fingerprint", "Digest", "Dependencies"]);
    for p in &m.packages {
        pkgs.add_row(vec![&p.name, &p.fingerprint, &p.sha1, &p.dependencies.join(", ")]);
    }
    for p in &m.compiled_packages {
        let name = format!("{} ({})", p.name, p.stemcell);
        pkgs.add_row(vec![&name, &p.fingerprint, &p.sha1, &p.dependencies.join(", ")]);
    }
    let n = m.packages.len() + m.compiled_packages.len();
    println!("{pkgs}\n\n{n} packages\n");

    if let Some(l) = &m.license {
        let mut lic = table(&["License", "Fingerprint", "Digest"]);
        lic.add_row(vec!["license", &l.fingerprint, &l.sha1]);
        println!("{lic}\n");
    }
}

/// `blobs`: path, size, blobstore id and digest of each tracked blob.
pub fn blobs(index: &BlobsIndex) {
    let mut t = table(&["Path", "Size", "Blobstore ID", "Digest"]);
    for (path, e) in index {
        let id = e.object_id.clone().unwrap_or_else(|| "(local)".into());
        t.add_row(vec![path.clone(), e.size.to_string(), id, e.sha.clone()]);
    }
    println!("{t}\n\n{} blobs", index.len());
}

/// `inspect-local-release --json`: the manifest plus each job's templates and properties.
pub fn json(a: &ReleaseArchive) -> Value {
    let jobs: Vec<Value> = a
        .jobs
        .iter()
        .map(|j| {
            json!({
                "name": j.entry.name,
                "fingerprint": j.entry.fingerprint,
                "sha1": j.entry.sha1,
                "packages": j.entry.packages,
                "templates": j.spec.templates,
                "properties": j.spec.properties.keys().collect::<Vec<_>>(),
            })
        })
        .collect();
    let packages: Vec<Value> = a
        .packages
        .iter()
        .map(|p| {
            json!({
                "name": p.entry.name,
                "fingerprint": p.entry.fingerprint,
                "sha1": p.entry.sha1,
                "dependencies": p.entry.dependencies,
                "stemcell": p.stemcell,
            })
        })
        .collect();
    json!({
        "name": a.manifest.name,
        "version": a.manifest.version,
        "commit_hash": a.manifest.commit_hash,
        "uncommitted_changes": a.manifest.uncommitted_changes,
        "jobs": jobs,
        "packages": packages,
        "license": a.manifest.license.as_ref().map(|l| json!({"fingerprint": l.fingerprint, "sha1": l.sha1})),
    })
}
