//! `init-release`, `generate-job` and `generate-package`: the skeletons bosh-cli writes.

use std::path::Path;

use super::{Error, Result, config::FinalConfig, io};

const GITIGNORE: &str = "config/private.yml
blobs
dev_releases
releases/*.tgz
releases/**/*.tgz
.dev_builds
.final_builds/jobs/**/*.tgz
.final_builds/packages/**/*.tgz
.DS_Store
.idea
*.swp
*~
*#
#*
";

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(io(path))
}

fn mkdir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(io(path))
}

/// Creates `jobs/`, `packages/`, `src/`, `config/final.yml` (name = the
/// directory's name without `-release`) and an empty `config/blobs.yml`;
/// with `git`, also `git init` and bosh-cli's `.gitignore`.
pub fn init_release(dir: &Path, git: bool) -> Result<()> {
    for sub in ["jobs", "packages", "src", "config"] {
        mkdir(&dir.join(sub))?;
    }
    let abs = std::path::absolute(dir).map_err(io(dir))?;
    let base = abs.file_name().unwrap_or_default().to_string_lossy();
    let mut cfg = FinalConfig::read(dir)?;
    cfg.name = base.strip_suffix("-release").unwrap_or(&base).to_string();
    cfg.final_name.clear();
    cfg.write(dir)?;
    write(&dir.join("config/blobs.yml"), "--- {}\n")?;
    if git {
        let out =
            std::process::Command::new("git").arg("init").arg(dir).output().map_err(io(dir))?;
        if !out.status.success() {
            return Err(Error::Command {
                command: "git init".into(),
                status: out.status.to_string(),
                output: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        write(&dir.join(".gitignore"), GITIGNORE)?;
    }
    Ok(())
}

/// The same rule as at upload ([`crate::names`]), so a generated job or
/// package can always be uploaded.
fn check_name(kind: &str, name: &str) -> Result<()> {
    crate::names::check_name(name).map_err(|e| Error::entry(kind, name, e.to_string()))
}

/// Creates `jobs/<name>/` with an empty spec, `monit` and `templates/`.
pub fn generate_job(dir: &Path, name: &str) -> Result<()> {
    check_name("jobs", name)?;
    let job = dir.join("jobs").join(name);
    if job.exists() {
        return Err(Error::entry("jobs", name, format!("job '{name}' already exists")));
    }
    mkdir(&job.join("templates"))?;
    write(
        &job.join("spec"),
        &format!("---\nname: {name}\n\ntemplates: {{}}\n\npackages: []\n\nproperties: {{}}\n"),
    )?;
    write(&job.join("monit"), "")
}

/// Creates `packages/<name>/` with an empty spec and a `packaging` script.
pub fn generate_package(dir: &Path, name: &str) -> Result<()> {
    check_name("packages", name)?;
    let pkg = dir.join("packages").join(name);
    if pkg.exists() {
        return Err(Error::entry("packages", name, format!("package '{name}' already exists")));
    }
    mkdir(&pkg)?;
    write(&pkg.join("spec"), &format!("---\nname: {name}\n\ndependencies: []\n\nfiles: []\n"))?;
    write(&pkg.join("packaging"), "set -e\n")
}
