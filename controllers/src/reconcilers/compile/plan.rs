//! Pure planning for compilation: which packages a deployment needs, their
//! compile keys, which may start now, and addresses for compile VMs.

use std::collections::{BTreeMap, BTreeSet};

use bosh_api::objects::{BlobRef, ReleasePackage, ReleaseSpec, compile_key};

/// One package to have compiled for one stemcell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// Its compile key (the CompiledPackage's name).
    pub key: String,
    /// Package name.
    pub name: String,
    /// Source fingerprint.
    pub fingerprint: String,
    /// The release it comes from, `name/version`.
    pub release: String,
    /// The source blob.
    pub source: Option<BlobRef>,
    /// Direct dependencies: package name → compile key.
    pub dependencies: BTreeMap<String, String>,
    /// The stemcells (`os/version`) a compiled release brought it compiled
    /// for: where a package without `source` can be had.
    pub compiled_for: Vec<String>,
}

/// Every package a deployment needs, dependencies before dependents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Stemcell OS.
    pub os: String,
    /// Stemcell version.
    pub version: String,
    /// Topologically ordered (ties by release, then name), one per key.
    pub packages: Vec<Planned>,
}

/// Why a plan cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A job or package names a package its release lacks.
    #[error("release {release}: package {package:?} (needed by {by}) is not in the release")]
    MissingPackage {
        /// `name/version`.
        release: String,
        /// The missing package.
        package: String,
        /// The job or package that needs it.
        by: String,
    },
    /// Packages depend on each other in a circle.
    #[error("release {release}: package dependency cycle through {package:?}")]
    Cycle {
        /// `name/version`.
        release: String,
        /// A package on the cycle.
        package: String,
    },
}

/// Plans the compilation of `needed` packages (with their dependency
/// closure) of each release for stemcell `os`/`version`. `needed` maps a
/// release to `(package, needed-by)` pairs.
pub fn plan(
    needed: &[(&ReleaseSpec, Vec<(String, String)>)],
    os: &str,
    version: &str,
) -> Result<Plan, PlanError> {
    let mut out = Plan { os: os.into(), version: version.into(), packages: Vec::new() };
    let mut seen_keys = BTreeSet::new();
    for (release, wants) in needed {
        let rname = format!("{}/{}", release.name, release.version);
        let by_name: BTreeMap<&str, _> =
            release.packages.iter().map(|p| (p.name.as_str(), p)).collect();
        let mut keys: BTreeMap<String, String> = BTreeMap::new();
        let mut wants: Vec<_> = wants.clone();
        wants.sort();
        for (pkg, by) in wants {
            visit(
                &rname,
                &by_name,
                &pkg,
                &by,
                os,
                version,
                &mut keys,
                &mut Vec::new(),
                &mut |p| {
                    if seen_keys.insert(p.key.clone()) {
                        out.packages.push(p);
                    }
                },
            )?;
        }
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn visit(
    release: &str,
    by_name: &BTreeMap<&str, &bosh_api::objects::ReleasePackage>,
    name: &str,
    by: &str,
    os: &str,
    version: &str,
    keys: &mut BTreeMap<String, String>,
    stack: &mut Vec<String>,
    emit: &mut dyn FnMut(Planned),
) -> Result<String, PlanError> {
    if let Some(k) = keys.get(name) {
        return Ok(k.clone());
    }
    if stack.iter().any(|s| s == name) {
        return Err(PlanError::Cycle { release: release.into(), package: name.into() });
    }
    let p = by_name.get(name).ok_or_else(|| PlanError::MissingPackage {
        release: release.into(),
        package: name.into(),
        by: by.into(),
    })?;
    stack.push(name.to_string());
    let mut deps = BTreeMap::new();
    let mut dep_names = p.dependencies.clone();
    dep_names.sort();
    for d in &dep_names {
        let by = format!("package {name}");
        let k = visit(release, by_name, d, &by, os, version, keys, stack, emit)?;
        deps.insert(d.clone(), k);
    }
    stack.pop();
    let dep_keys: Vec<&str> = deps.values().map(String::as_str).collect();
    let key = compile_key(&p.fingerprint, os, key_version(p, os, version), &dep_keys);
    keys.insert(name.to_string(), key.clone());
    emit(Planned {
        key: key.clone(),
        name: name.into(),
        fingerprint: p.fingerprint.clone(),
        release: release.into(),
        source: p.blob.clone(),
        dependencies: deps,
        compiled_for: p.compiled_for.clone(),
    });
    Ok(key)
}

/// The stemcell version a package's compile key is for on stemcell
/// `os`/`version`: that version, unless the package has no source (it came
/// in a compiled release) and was not compiled for it; then, as BOSH
/// matches compiled packages, the version it was compiled for on the same
/// OS with the same major version and the highest minor (stemcells of one
/// major line are built to run each other's compiled packages). With no
/// such version, the stemcell's own: the package is then reported as
/// lacking a source.
pub fn key_version<'a>(p: &'a ReleasePackage, os: &str, version: &'a str) -> &'a str {
    if p.blob.is_some() {
        return version;
    }
    let major = |v: &'a str| v.split('.').next();
    let minor = |v: &str| v.split('.').nth(1).and_then(|m| m.parse::<u64>().ok()).unwrap_or(0);
    let mut best: Option<&str> = None;
    for sc in &p.compiled_for {
        let Some((o, v)) = sc.split_once('/') else { continue };
        if o != os {
            continue;
        }
        if v == version {
            return version;
        }
        if major(v) == major(version) && best.is_none_or(|b| minor(v) > minor(b)) {
            best = Some(v);
        }
    }
    best.unwrap_or(version)
}

/// Compile keys of every package of a release for one stemcell, by package
/// name, computed bottom-up exactly as [`plan`] names them. The release
/// must be consistent (every dependency present, no cycle), as uploads
/// ensure.
pub fn keys(packages: &[ReleasePackage], os: &str, version: &str) -> BTreeMap<String, String> {
    let by_name: BTreeMap<&str, &ReleasePackage> =
        packages.iter().map(|p| (p.name.as_str(), p)).collect();
    fn key(
        name: &str,
        by_name: &BTreeMap<&str, &ReleasePackage>,
        os: &str,
        version: &str,
        memo: &mut BTreeMap<String, String>,
    ) -> String {
        if let Some(k) = memo.get(name) {
            return k.clone();
        }
        let p = by_name[name];
        // Cycles were refused at upload, so this recursion ends.
        let deps: Vec<String> =
            p.dependencies.iter().map(|d| key(d, by_name, os, version, memo)).collect();
        let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
        let k = compile_key(&p.fingerprint, os, key_version(p, os, version), &deps);
        memo.insert(name.to_string(), k.clone());
        k
    }
    let mut memo = BTreeMap::new();
    for p in packages {
        key(&p.name, &by_name, os, version, &mut memo);
    }
    memo
}

/// The packages that may start now: not compiled, not running, every
/// dependency compiled; in plan order, at most `workers - running`.
pub fn ready<'a>(
    plan: &'a Plan,
    compiled: &BTreeSet<String>,
    running: &BTreeSet<String>,
    workers: usize,
) -> Vec<&'a Planned> {
    let free = workers.max(1).saturating_sub(running.len());
    plan.packages
        .iter()
        .filter(|p| !compiled.contains(&p.key) && !running.contains(&p.key))
        .filter(|p| p.dependencies.values().all(|k| compiled.contains(k)))
        .take(free)
        .collect()
}

/// The DAG walk as rounds, if every compile took the same time: what runs
/// together. For tests, logs and the fan-out benchmark.
pub fn rounds(plan: &Plan, already: &BTreeSet<String>, workers: usize) -> Vec<Vec<String>> {
    let mut compiled = already.clone();
    let mut out = Vec::new();
    loop {
        let batch: Vec<_> = ready(plan, &compiled, &BTreeSet::new(), workers)
            .into_iter()
            .map(|p| (p.key.clone(), p.name.clone()))
            .collect();
        if batch.is_empty() {
            return out;
        }
        out.push(batch.iter().map(|(_, n)| n.clone()).collect());
        compiled.extend(batch.into_iter().map(|(k, _)| k));
    }
}

pub use crate::libs::ipam::pick_ip;

#[cfg(test)]
mod tests {
    use super::*;
    use bosh_api::manifest::Subnet;
    use std::net::Ipv4Addr;

    fn release(name: &str, pkgs: &[(&str, &[&str])]) -> ReleaseSpec {
        ReleaseSpec {
            name: name.into(),
            version: "1".into(),
            packages: pkgs
                .iter()
                .map(|(n, deps)| ReleasePackage {
                    name: n.to_string(),
                    fingerprint: format!("fp-{n}"),
                    dependencies: deps.iter().map(|d| d.to_string()).collect(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn wants(names: &[&str]) -> Vec<(String, String)> {
        names.iter().map(|n| (n.to_string(), "job j".to_string())).collect()
    }

    /// Renders the walk the way golden files read: one round per line.
    fn golden(plan: &Plan, workers: usize) -> String {
        rounds(plan, &BTreeSet::new(), workers)
            .iter()
            .enumerate()
            .map(|(i, r)| format!("round {}: {}\n", i + 1, r.join(" ")))
            .collect()
    }

    /// A ten-package graph: a wide base, two middles and a top.
    fn ten() -> ReleaseSpec {
        release(
            "r",
            &[
                ("top", &["mid1", "mid2"]),
                ("mid1", &["b1", "b2", "b3"]),
                ("mid2", &["b4", "b5", "b6"]),
                ("b1", &[]),
                ("b2", &[]),
                ("b3", &[]),
                ("b4", &[]),
                ("b5", &[]),
                ("b6", &[]),
                ("extra", &["b1"]),
            ],
        )
    }

    /// A package of a compiled release is found for a stemcell of the
    /// same OS and major version it was compiled for, as BOSH finds it:
    /// the exact version first, else the highest minor; never across an
    /// OS or a major version; a package with source always compiles for
    /// the stemcell itself. `plan` and `keys` name the same keys.
    #[test]
    fn compiled_packages_match_the_same_os_and_major_version() {
        let mut r = release("rel", &[("app", &["lib"]), ("lib", &[])]);
        for p in &mut r.packages {
            p.compiled_for =
                ["ubuntu/1.5", "ubuntu/1.12", "ubuntu/1.9", "ubuntu/2.1", "centos/1.40"]
                    .map(String::from)
                    .to_vec();
        }
        let lib = &r.packages[1];
        assert_eq!(key_version(lib, "ubuntu", "1.30"), "1.12", "highest minor of major 1");
        assert_eq!(key_version(lib, "ubuntu", "1.9"), "1.9", "the exact version first");
        assert_eq!(key_version(lib, "ubuntu", "2.7"), "2.1");
        assert_eq!(key_version(lib, "ubuntu", "3.0"), "3.0", "no other major");
        assert_eq!(key_version(lib, "noble", "1.30"), "1.30", "no other OS");
        let mut sourced = lib.clone();
        sourced.blob = Some(BlobRef { sha256: "ab".repeat(32), size: 1 });
        assert_eq!(key_version(&sourced, "ubuntu", "1.30"), "1.30");

        let p = plan(&[(&r, wants(&["app"]))], "ubuntu", "1.30").unwrap();
        let lib_key = compile_key("fp-lib", "ubuntu", "1.12", &[]);
        let app_key = compile_key("fp-app", "ubuntu", "1.12", &[&lib_key]);
        let got: BTreeMap<&str, &str> =
            p.packages.iter().map(|x| (x.name.as_str(), x.key.as_str())).collect();
        assert_eq!(got, BTreeMap::from([("app", app_key.as_str()), ("lib", lib_key.as_str())]));
        let k = keys(&r.packages, "ubuntu", "1.30");
        assert_eq!((k["app"].as_str(), k["lib"].as_str()), (app_key.as_str(), lib_key.as_str()));
    }

    /// hello depends on hello-lib: the library compiles first, alone.
    #[test]
    fn a_dependency_compiles_before_its_dependent() {
        let r = release("hello", &[("hello", &["hello-lib"]), ("hello-lib", &[])]);
        let p = plan(&[(&r, wants(&["hello", "hello-lib"]))], "ubuntu", "1").unwrap();
        assert_eq!(golden(&p, 4), "round 1: hello-lib\nround 2: hello\n");
        let hello = p.packages.iter().find(|x| x.name == "hello").unwrap();
        let lib = p.packages.iter().find(|x| x.name == "hello-lib").unwrap();
        assert_eq!(hello.dependencies["hello-lib"], lib.key);
    }

    /// "10 packages, workers 1": one at a time, dependencies first.
    #[test]
    fn ten_packages_workers_1() {
        let r = ten();
        let p = plan(&[(&r, wants(&["top", "extra"]))], "ubuntu", "1").unwrap();
        assert_eq!(
            golden(&p, 1),
            "round 1: b1\nround 2: extra\nround 3: b2\nround 4: b3\nround 5: mid1\n\
             round 6: b4\nround 7: b5\nround 8: b6\nround 9: mid2\nround 10: top\n"
        );
    }

    /// "10 packages, workers 4": the base fans out, four at a time.
    #[test]
    fn ten_packages_workers_4() {
        let r = ten();
        let p = plan(&[(&r, wants(&["top", "extra"]))], "ubuntu", "1").unwrap();
        assert_eq!(
            golden(&p, 4),
            "round 1: b1 b2 b3 b4\nround 2: extra mid1 b5 b6\nround 3: mid2\nround 4: top\n"
        );
    }

    /// Only the closure of what jobs need is planned; a compiled package is skipped.
    #[test]
    fn only_needed_packages_are_planned_and_compiled_ones_are_skipped() {
        let r = ten();
        let p = plan(&[(&r, wants(&["mid1"]))], "ubuntu", "1").unwrap();
        let names: Vec<_> = p.packages.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(names, ["b1", "b2", "b3", "mid1"]);
        let done: BTreeSet<_> = p.packages[..3].iter().map(|x| x.key.clone()).collect();
        assert_eq!(rounds(&p, &done, 2), vec![vec!["mid1".to_string()]]);
        let running: BTreeSet<_> = [p.packages[0].key.clone()].into();
        assert_eq!(ready(&p, &BTreeSet::new(), &running, 2).len(), 1);
        assert!(ready(&p, &BTreeSet::new(), &running, 1).is_empty());
    }

    /// Keys change with the stemcell and propagate to dependents.
    #[test]
    fn a_new_stemcell_or_dependency_changes_the_keys() {
        let r = release("hello", &[("hello", &["hello-lib"]), ("hello-lib", &[])]);
        let a = plan(&[(&r, wants(&["hello"]))], "ubuntu", "1").unwrap();
        let b = plan(&[(&r, wants(&["hello"]))], "ubuntu", "2").unwrap();
        assert_ne!(a.packages[0].key, b.packages[0].key);
        let mut r2 = r.clone();
        r2.packages[1].fingerprint = "changed".into();
        let c = plan(&[(&r2, wants(&["hello"]))], "ubuntu", "1").unwrap();
        assert_ne!(a.packages[1].key, c.packages[1].key, "a dependent's key follows its deps");
    }

    /// [`keys`] names every package as the plan does.
    #[test]
    fn keys_agree_with_the_plan() {
        let r = ten();
        let p = plan(&[(&r, wants(&["top", "extra"]))], "ubuntu", "1").unwrap();
        let k = keys(&r.packages, "ubuntu", "1");
        assert_eq!(k.len(), 10);
        for x in &p.packages {
            assert_eq!(k[&x.name], x.key, "{}", x.name);
        }
    }

    /// Missing packages and cycles are named.
    #[test]
    fn missing_packages_and_cycles_are_refused() {
        let r = release("r", &[("a", &["b"]), ("b", &["a"])]);
        let e = plan(&[(&r, wants(&["a"]))], "u", "1").unwrap_err();
        assert!(matches!(e, PlanError::Cycle { .. }), "{e}");
        let r = release("r", &[("a", &["nope"])]);
        let e = plan(&[(&r, wants(&["a"]))], "u", "1").unwrap_err();
        assert_eq!(
            e.to_string(),
            "release r/1: package \"nope\" (needed by package a) is not in the release"
        );
    }

    /// Compile VMs get distinct addresses outside reserved, static and gateway.
    #[test]
    fn pick_ip_skips_taken_reserved_static_and_gateway() {
        let subnet = Subnet {
            range: Some("127.77.5.0/24".into()),
            gateway: Some("127.77.5.1".into()),
            reserved: vec!["127.77.5.2 - 127.77.5.9".into()],
            r#static: vec!["127.77.5.10".into()],
            ..Default::default()
        };
        let mut used = BTreeSet::new();
        let a = pick_ip(&subnet, &used).unwrap().unwrap();
        assert_eq!(a.to_string(), "127.77.5.11");
        used.insert(a);
        assert_eq!(pick_ip(&subnet, &used).unwrap().unwrap().to_string(), "127.77.5.12");
        used.extend((12..=254).map(|i| Ipv4Addr::new(127, 77, 5, i)));
        assert_eq!(pick_ip(&subnet, &used).unwrap(), None, "broadcast is never handed out");
    }
}
