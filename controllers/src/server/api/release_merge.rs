//! What a verified release tarball adds to the Release object of its
//! version, and which CompiledPackage objects it brings: pure, so uploads
//! decide everything before they store a byte.
//!
//! A release version is one set of jobs and packages (by fingerprint); its
//! tarballs differ only in what they carry for the packages: sources, or
//! packages compiled for a stemcell (a compiled release, BOSH's
//! `compiled_packages`). Uploading tarballs of one version in any order
//! merges them, as BOSH does: a compiled release adds its stemcell to each
//! package's `compiled_for` and its compiled packages to the compile cache,
//! under the very keys the compilation controller computes
//! ([`crate::reconcilers::compile::plan::keys`]), so a deployment on that
//! stemcell finds them and compiles nothing; a source tarball fills in
//! sources the Release lacked. A tarball whose jobs or packages differ from
//! the stored version's is a conflict.

use std::collections::BTreeMap;

use bosh_api::objects::{CompiledPackageSpec, ReleaseJob, ReleasePackage, ReleaseSpec};
use bosh_api::release::ReleaseArchive;

use crate::reconcilers::compile::plan;

/// One compiled package of the tarball, as its cache entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CompiledEntry {
    /// Its index in [`ReleaseArchive::packages`] (where its tgz is).
    pub archive_index: usize,
    /// Its compile key: the CompiledPackage's name.
    pub key: String,
    /// The CompiledPackage's spec, without its blob (stored later).
    pub spec: CompiledPackageSpec,
}

/// What an upload writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Merge {
    /// The Release spec to save; its new jobs' and sources' blobs are
    /// filled in from [`Merge::jobs`] and [`Merge::sources`].
    pub spec: ReleaseSpec,
    /// Whether `spec` differs from the stored one (or none is stored).
    pub changed: bool,
    /// Jobs whose blobs to store: (index in `spec.jobs`, in the archive's).
    pub jobs: Vec<(usize, usize)>,
    /// Source packages whose blobs to store: (index in `spec.packages`, in
    /// the archive's).
    pub sources: Vec<(usize, usize)>,
    /// Every compiled package of the tarball.
    pub compiled: Vec<CompiledEntry>,
}

/// `(name, fingerprint)` pairs, sorted: a version's identity.
fn identity<'a>(it: impl Iterator<Item = (&'a str, &'a str)>) -> Vec<(&'a str, &'a str)> {
    let mut v: Vec<_> = it.collect();
    v.sort_unstable();
    v
}

/// Merges `archive` into the stored `existing` spec (if any). With `fix`,
/// every job and source blob is stored again. Errs (a conflict) when the
/// tarball's jobs or packages are not the stored version's.
pub(super) fn merge(
    existing: Option<&ReleaseSpec>,
    archive: &ReleaseArchive,
    fix: bool,
) -> Result<Merge, String> {
    let mf = &archive.manifest;
    let full = format!("{}/{}", mf.name, mf.version);
    let (mut spec, changed) = match existing {
        Some(e) => {
            let same = identity(e.jobs.iter().map(|j| (j.name.as_str(), j.fingerprint.as_str())))
                == identity(
                    archive
                        .jobs
                        .iter()
                        .map(|j| (j.entry.name.as_str(), j.entry.fingerprint.as_str())),
                )
                && identity(e.packages.iter().map(|p| (p.name.as_str(), p.fingerprint.as_str())))
                    == identity(
                        archive
                            .packages
                            .iter()
                            .map(|p| (p.entry.name.as_str(), p.entry.fingerprint.as_str())),
                    );
            if !same {
                return Err(format!(
                    "release {full} exists with different jobs or packages; upload it under another version"
                ));
            }
            (e.clone(), false)
        }
        None => {
            let spec = ReleaseSpec {
                name: mf.name.clone(),
                version: mf.version.clone(),
                commit_hash: mf.commit_hash.clone(),
                uncommitted_changes: mf.uncommitted_changes,
                tarball: None,
                jobs: archive
                    .jobs
                    .iter()
                    .map(|j| ReleaseJob {
                        name: j.entry.name.clone(),
                        version: j.entry.version.clone(),
                        fingerprint: j.entry.fingerprint.clone(),
                        sha1: j.entry.sha1.clone(),
                        packages: j.entry.packages.clone(),
                        blob: None,
                    })
                    .collect(),
                packages: archive
                    .packages
                    .iter()
                    .map(|p| ReleasePackage {
                        name: p.entry.name.clone(),
                        version: p.entry.version.clone(),
                        fingerprint: p.entry.fingerprint.clone(),
                        sha1: p.entry.sha1.clone(),
                        dependencies: p.entry.dependencies.clone(),
                        blob: None,
                        compiled_for: Vec::new(),
                    })
                    .collect(),
            };
            (spec, true)
        }
    };
    let mut m = Merge {
        spec: ReleaseSpec::default(),
        changed,
        jobs: vec![],
        sources: vec![],
        compiled: vec![],
    };
    let job_at: BTreeMap<String, usize> =
        spec.jobs.iter().enumerate().map(|(i, j)| (j.name.clone(), i)).collect();
    for (ai, j) in archive.jobs.iter().enumerate() {
        let si = job_at[&j.entry.name];
        if fix || spec.jobs[si].blob.is_none() {
            m.changed |= spec.jobs[si].blob.is_none();
            m.jobs.push((si, ai));
        }
    }
    let pkg_at: BTreeMap<String, usize> =
        spec.packages.iter().enumerate().map(|(i, p)| (p.name.clone(), i)).collect();
    let mut stemcells: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (ai, p) in archive.packages.iter().enumerate() {
        let si = pkg_at[&p.entry.name];
        let sp = &mut spec.packages[si];
        match &p.stemcell {
            None if fix || sp.blob.is_none() => {
                if sp.blob.is_none() {
                    // A source for a package that came compiled: record the
                    // tarball's digest of it.
                    sp.sha1 = p.entry.sha1.clone();
                    m.changed = true;
                }
                m.sources.push((si, ai));
            }
            None => {}
            Some(sc) => {
                if !sp.compiled_for.contains(sc) {
                    sp.compiled_for.push(sc.clone());
                    sp.compiled_for.sort();
                    m.changed = true;
                }
                stemcells.entry(sc.as_str()).or_default().push(ai);
            }
        }
    }
    for (sc, indexes) in stemcells {
        let (os, version) = sc.split_once('/').expect("release.MF checked: os/version");
        let keys = plan::keys(&spec.packages, os, version);
        for ai in indexes {
            let p = &spec.packages[pkg_at[&archive.packages[ai].entry.name]];
            let dependencies =
                p.dependencies.iter().map(|d| (d.clone(), keys[d].clone())).collect();
            m.compiled.push(CompiledEntry {
                archive_index: ai,
                key: keys[&p.name].clone(),
                spec: CompiledPackageSpec {
                    package: p.name.clone(),
                    fingerprint: p.fingerprint.clone(),
                    release: full.clone(),
                    stemcell_os: os.to_string(),
                    stemcell_version: version.to_string(),
                    dependencies,
                    blob: None,
                },
            });
        }
    }
    m.spec = spec;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bosh_api::objects::{BlobRef, compile_key};
    use bosh_api::release::archive::{ArchiveJob, ArchivePackage};
    use bosh_api::release::manifest::{JobRef, PackageRef};
    use bosh_api::release::{JobSpec, ReleaseManifest};

    /// A tarball of `hello/1`: job `web` using `hello`, which depends on
    /// `lib`; compiled for `stemcell`, or sources when `None`.
    fn archive(stemcell: Option<&str>) -> ReleaseArchive {
        let pkg = |name: &str, deps: &[&str]| ArchivePackage {
            entry: PackageRef {
                name: name.into(),
                version: format!("fp-{name}"),
                fingerprint: format!("fp-{name}"),
                sha1: format!("sha-{name}-{}", stemcell.unwrap_or("src")),
                dependencies: deps.iter().map(|d| d.to_string()).collect(),
            },
            stemcell: stemcell.map(str::to_string),
            tgz: format!("{name}.tgz").into(),
        };
        let job = JobRef {
            name: "web".into(),
            version: "fp-web".into(),
            fingerprint: "fp-web".into(),
            sha1: "sha-web".into(),
            packages: vec!["hello".into()],
        };
        ReleaseArchive {
            manifest: ReleaseManifest {
                name: "hello".into(),
                version: "1".into(),
                ..Default::default()
            },
            dir: "x".into(),
            jobs: vec![ArchiveJob { entry: job, spec: JobSpec::default(), tgz: "web.tgz".into() }],
            packages: vec![pkg("lib", &[]), pkg("hello", &["lib"])],
            license: None,
        }
    }

    /// What a save of the merge would store: every listed blob filled in.
    fn stored(m: &Merge) -> ReleaseSpec {
        let mut s = m.spec.clone();
        let b = BlobRef { sha256: "b".into(), size: 1 };
        m.jobs.iter().for_each(|(i, _)| s.jobs[*i].blob = Some(b.clone()));
        m.sources.iter().for_each(|(i, _)| s.packages[*i].blob = Some(b.clone()));
        s
    }

    /// A compiled release makes a source-less Release compiled for its
    /// stemcell, and cache entries keyed as the compiler keys them.
    #[test]
    fn a_compiled_release_is_keyed_as_the_compiler_keys_it() {
        let m = merge(None, &archive(Some("ubuntu/1")), false).unwrap();
        assert!(m.changed);
        assert_eq!(m.jobs, [(0, 0)]);
        assert!(m.sources.is_empty());
        assert!(m.spec.packages.iter().all(|p| p.blob.is_none() && p.compiled_for == ["ubuntu/1"]));
        assert_eq!(stored(&m).compiled_only_for(), ["ubuntu/1"]);
        let lib = compile_key("fp-lib", "ubuntu", "1", &[]);
        let hello = compile_key("fp-hello", "ubuntu", "1", &[&lib]);
        let keys: Vec<_> = m.compiled.iter().map(|c| c.key.clone()).collect();
        assert_eq!(keys, [lib.clone(), hello]);
        let c = &m.compiled[1].spec;
        assert_eq!((c.release.as_str(), c.fingerprint.as_str()), ("hello/1", "fp-hello"));
        assert_eq!((c.stemcell_os.as_str(), c.stemcell_version.as_str()), ("ubuntu", "1"));
        assert_eq!(c.dependencies, BTreeMap::from([("lib".to_string(), lib)]));
    }

    /// The same tarball again changes nothing; one for a second stemcell
    /// adds it; the sources fill in what the compiled releases lacked.
    #[test]
    fn tarballs_of_one_version_merge() {
        let first = stored(&merge(None, &archive(Some("ubuntu/1")), false).unwrap());
        let again = merge(Some(&first), &archive(Some("ubuntu/1")), false).unwrap();
        assert!(!again.changed && again.jobs.is_empty() && again.sources.is_empty());
        assert_eq!(again.compiled.len(), 2, "the cache entries are still checked");
        let second = merge(Some(&first), &archive(Some("ubuntu/2")), false).unwrap();
        assert!(second.changed);
        assert!(second.spec.packages.iter().all(|p| p.compiled_for == ["ubuntu/1", "ubuntu/2"]));
        assert!(second.compiled.iter().all(|c| c.spec.stemcell_version == "2"));
        let both = stored(&second);
        let src = merge(Some(&both), &archive(None), false).unwrap();
        assert!(src.changed && src.compiled.is_empty());
        assert_eq!(src.sources, [(0, 0), (1, 1)]);
        assert!(stored(&src).compiled_only_for().is_empty(), "every package has its source now");
        let fixed = merge(Some(&stored(&src)), &archive(None), true).unwrap();
        assert!(!fixed.changed);
        assert_eq!((fixed.jobs.len(), fixed.sources.len()), (1, 2), "fix stores every blob again");
    }

    /// A tarball of the version with another package is a conflict.
    #[test]
    fn another_package_under_the_same_version_conflicts() {
        let first = stored(&merge(None, &archive(Some("ubuntu/1")), false).unwrap());
        let mut other = archive(Some("ubuntu/1"));
        other.packages[0].entry.fingerprint = "changed".into();
        let e = merge(Some(&first), &other, false).unwrap_err();
        assert!(e.contains("hello/1 exists with different jobs or packages"), "{e}");
    }
}
