//! `compile_package`: BOSH's package compilation on a compile VM.
//!
//! Dependencies are installed under `/var/vcap/packages/<dep>` as by
//! `apply`, the source is unpacked into `data/compile/<name>`, and
//! `packaging` runs there with `BOSH_COMPILE_TARGET`, `BOSH_INSTALL_TARGET`
//! (`/var/vcap/packages/<name>`, pointing at a fresh directory),
//! `BOSH_PACKAGE_NAME` and `BOSH_PACKAGE_VERSION`. The install target is
//! packed deterministically and uploaded; its digest is the result.

use std::sync::Arc;

use bosh_api::agent::{BlobRef, CompilePackage};

use crate::apply::{check_name, install_package, swap_symlink};
use crate::archive::{self, Limits};
use crate::context::Agent;
use crate::error::{Error, Result};
use crate::exec::Exec;

/// Compiles one package and uploads the result.
pub async fn compile(agent: &Arc<Agent>, args: CompilePackage) -> Result<BlobRef> {
    let _l = agent.compile.lock().await;
    check_name("package", &args.name)?;
    check_name("package version", &args.version)?;
    let paths = &agent.paths;
    paths.create_layout()?;
    for dep in args.dependencies.values() {
        install_package(agent, dep).await?;
    }
    let what = format!("package {}", args.name);
    let source = agent.blobs.fetch(&args.source, &what).await?;
    let compile_dir = paths.compile().join(&args.name);
    let _ = std::fs::remove_dir_all(&compile_dir);
    let (s, c, n) = (source.clone(), compile_dir.clone(), what.clone());
    tokio::task::spawn_blocking(move || archive::unpack_tgz(&s, &c, &Limits::default(), &n))
        .await
        .expect("unpack does not panic")?;
    let install_dir = paths.data().join("packages").join(&args.name).join(format!(
        "{}-compile-{}",
        args.version,
        uuid::Uuid::new_v4()
    ));
    std::fs::create_dir_all(&install_dir).map_err(Error::io("create", &install_dir))?;
    let install_target = paths.packages().join(&args.name);
    swap_symlink(&install_target, &install_dir)?;

    let result = async {
        let packaging = compile_dir.join("packaging");
        if !packaging.is_file() {
            return Err(Error::Archive {
                name: what.clone(),
                source: "has no packaging script".into(),
            });
        }
        let shell =
            if std::path::Path::new("/bin/bash").exists() { "/bin/bash" } else { "/bin/sh" };
        let env = vec![
            ("BOSH_COMPILE_TARGET".to_string(), compile_dir.display().to_string()),
            ("BOSH_INSTALL_TARGET".to_string(), install_target.display().to_string()),
            ("BOSH_PACKAGE_NAME".to_string(), args.name.clone()),
            ("BOSH_PACKAGE_VERSION".to_string(), args.version.clone()),
        ];
        let out = Exec::new(shell, &paths.job_env())
            .envs(&env)
            .args(["-e", "packaging"])
            .cwd(&compile_dir)
            .log_to(paths.sys_log().join("compile").join(&args.name))
            .run()
            .await?;
        if out.code != 0 {
            return Err(Error::Script {
                job: what.clone(),
                script: "packaging".into(),
                code: out.code,
                tail: out.tail(),
            });
        }
        let tgz = paths.tmp().join(format!("compiled-{}-{}.tgz", args.name, uuid::Uuid::new_v4()));
        let (d, t) = (install_dir.clone(), tgz.clone());
        tokio::task::spawn_blocking(move || archive::pack_dir(&d, &t))
            .await
            .expect("pack does not panic")?;
        let uploaded = agent.blobs.upload(&tgz, &what).await;
        let _ = std::fs::remove_file(&tgz);
        uploaded
    }
    .await;
    let _ = std::fs::remove_dir_all(&compile_dir);
    let _ = std::fs::remove_dir_all(paths.blob_cache());
    if let Ok(b) = &result {
        tracing::info!(package = %args.name, sha256 = %b.sha256, size = b.size, "compiled");
    }
    result
}
