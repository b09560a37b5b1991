//! The rendered-templates archive the agent installs (`agent/src/apply.rs`):
//! one top-level directory per job holding `monit` and every template's
//! destination; `bin/*` executable.

use std::collections::BTreeSet;

use bosh_api::archive::TgzWriter;
use sha2::{Digest, Sha256};

use super::ruby::Output;
use super::{
    Error, RenderRequest, Rendered, RenderedJob, TemplateFailure, instance_name, job, redact,
};

/// Turns one request's answer into its files, or its failures into an
/// error without values.
pub(super) fn files(
    req: &RenderRequest,
    out: Output,
    secrets: &[String],
) -> Result<Vec<RenderedJob>, Error> {
    let instance = instance_name(&req.instance);
    let jobs = match out {
        Ok(jobs) => jobs,
        Err(raw) => {
            let failures = raw
                .into_iter()
                .map(|f| TemplateFailure {
                    job: f.job,
                    template: f.template,
                    line: f.line,
                    message: redact::clean(&f.message, secrets),
                })
                .collect();
            return Err(Error::Templates { instance, failures });
        }
    };
    let mismatch = |message: String| Error::Ruby { status: "exit 0".into(), message };
    if jobs.len() != req.jobs.len() {
        return Err(mismatch(format!("{instance}: {} jobs for {}", jobs.len(), req.jobs.len())));
    }
    let mut rendered = Vec::with_capacity(jobs.len());
    for (rj, contents) in req.jobs.iter().zip(jobs) {
        let name = &rj.job.name;
        let destinations = std::iter::once("monit".to_owned())
            .chain(rj.job.spec.templates.values().map(|d| job::normalize(d)));
        let destinations: Vec<String> = destinations.collect();
        if contents.len() != destinations.len() {
            return Err(mismatch(format!(
                "{instance}: {} files for job {name}, which has {}",
                contents.len(),
                destinations.len()
            )));
        }
        rendered.push(RenderedJob {
            name: name.clone(),
            files: destinations.into_iter().zip(contents).collect(),
        });
    }
    Ok(rendered)
}

/// Packs one instance's rendered jobs into the archive the agent installs.
pub(super) fn build(instance: String, jobs: Vec<RenderedJob>) -> Result<Rendered, Error> {
    let mut w = TgzWriter::new();
    let mut dirs = BTreeSet::new();
    for job in jobs {
        let name = job.name;
        dirs.insert(name.clone());
        for (dst, content) in job.files {
            let mut parent = std::path::Path::new(&dst).parent();
            while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
                dirs.insert(format!("{name}/{}", p.display()));
                parent = p.parent();
            }
            // The agent makes `bin/*` executable anyway; the archive says so too.
            let executable = dst.starts_with("bin/");
            w.bytes(&format!("{name}/{dst}"), content, executable);
        }
    }
    for d in &dirs {
        w.dir(d);
    }
    let archive = w
        .write(Vec::new(), "rendered templates")
        .map_err(|source| Error::Archive { instance, source })?;
    let sha256 = Sha256::digest(&archive).iter().map(|b| format!("{b:02x}")).collect();
    Ok(Rendered { archive, sha256 })
}
