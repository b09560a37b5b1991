//! `release.MF`: what a release tarball holds (bosh-cli `release/manifest/release.go`).

use serde::{Deserialize, Serialize};

use super::{Error, Result};

/// A job in `release.MF`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRef {
    /// The job's name.
    pub name: String,
    /// Same as the fingerprint (kept for old directors).
    pub version: String,
    /// The job's fingerprint.
    pub fingerprint: String,
    /// Digest of `jobs/<name>.tgz`: `sha256:<hex>`, or bare sha1 hex from old CLIs.
    pub sha1: String,
    /// Packages the job needs.
    #[serde(default)]
    pub packages: Vec<String>,
}

/// A source package in `release.MF`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageRef {
    /// The package's name.
    pub name: String,
    /// Same as the fingerprint.
    pub version: String,
    /// The package's fingerprint.
    pub fingerprint: String,
    /// Digest of `packages/<name>.tgz`.
    pub sha1: String,
    /// Packages it depends on, in spec order.
    #[serde(default)]
    pub dependencies: Vec<String>,
}

/// A compiled package in `release.MF` (compiled releases).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompiledPackageRef {
    /// The package's name.
    pub name: String,
    /// Same as the fingerprint.
    pub version: String,
    /// The source package's fingerprint.
    pub fingerprint: String,
    /// Digest of `compiled_packages/<name>.tgz`.
    pub sha1: String,
    /// `<os>/<version>` it was compiled on.
    pub stemcell: String,
    /// Packages it depends on.
    #[serde(default)]
    pub dependencies: Vec<String>,
}

/// The license in `release.MF`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LicenseRef {
    /// Same as the fingerprint.
    pub version: String,
    /// The license's fingerprint.
    pub fingerprint: String,
    /// Digest of `license.tgz`.
    pub sha1: String,
}

/// `release.MF`, also written as `dev_releases/<name>/<name>-<version>.yml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseManifest {
    /// The release's name.
    pub name: String,
    /// The release's version.
    pub version: String,
    /// Short git commit the release was built from (`non-git` outside git).
    #[serde(default)]
    pub commit_hash: String,
    /// Whether the git tree was dirty.
    #[serde(default)]
    pub uncommitted_changes: bool,
    /// Jobs, sorted by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<JobRef>,
    /// Source packages, sorted by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<PackageRef>,
    /// Compiled packages (compiled releases only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compiled_packages: Vec<CompiledPackageRef>,
    /// The license, if the release has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<LicenseRef>,
}

impl ReleaseManifest {
    /// Parses `release.MF` text; `file` names it in errors. Ruby's `!binary` tags are accepted.
    pub fn parse(src: &str, file: &str) -> Result<Self> {
        let src = src
            .replace("sha1: !binary |-", "sha1: !!binary |-")
            .replace("version: !binary |-", "version: !!binary |-")
            .replace("fingerprint: !binary |-", "fingerprint: !!binary |-");
        let m: Self = crate::yaml::from_str(&src, file)?;
        if m.name.is_empty() {
            return Err(Error::entry(file, "name", "is required"));
        }
        if m.version.is_empty() {
            return Err(Error::entry(file, "version", "is required"));
        }
        m.check_names(file)?;
        Ok(m)
    }

    /// Every name and version follows [`crate::names`]: they become file
    /// names (`jobs/<name>.tgz`, `/var/vcap/jobs/<name>`), store keys and
    /// shell arguments on VMs, so `..`, `a/b` or `x y;rm -rf` must stop here
    /// rather than fail on a VM. The entry names the field
    /// (`jobs[2].name`).
    fn check_names(&self, file: &str) -> Result<()> {
        use crate::names::{NameError, check_name, check_version};
        let bad = |entry: String, r: Result<(), NameError>| match r {
            Ok(()) => Ok(()),
            Err(e) => Err(Error::entry(file, entry, e.to_string())),
        };
        bad("name".into(), check_name(&self.name))?;
        bad("version".into(), check_version(&self.version))?;
        for (i, j) in self.jobs.iter().enumerate() {
            bad(format!("jobs[{i}].name"), check_name(&j.name))?;
            bad(format!("jobs[{i}].version"), check_version(&j.version))?;
            for (k, p) in j.packages.iter().enumerate() {
                bad(format!("jobs[{i}].packages[{k}]"), check_name(p))?;
            }
        }
        for (i, p) in self.compiled_packages.iter().enumerate() {
            let Some((os, version)) = p.stemcell.split_once('/') else {
                return Err(Error::entry(
                    file,
                    format!("compiled_packages[{i}].stemcell"),
                    format!("expected OS/VERSION, found {:?}", p.stemcell),
                ));
            };
            bad(format!("compiled_packages[{i}].stemcell"), check_name(os))?;
            bad(format!("compiled_packages[{i}].stemcell"), check_version(version))?;
        }
        let packages = self.packages.iter().map(|p| (&p.name, &p.version, &p.dependencies));
        let compiled =
            self.compiled_packages.iter().map(|p| (&p.name, &p.version, &p.dependencies));
        for (section, list) in
            [("packages", packages.collect::<Vec<_>>()), ("compiled_packages", compiled.collect())]
        {
            for (i, (name, version, deps)) in list.into_iter().enumerate() {
                bad(format!("{section}[{i}].name"), check_name(name))?;
                bad(format!("{section}[{i}].version"), check_version(version))?;
                for (k, d) in deps.iter().enumerate() {
                    bad(format!("{section}[{i}].dependencies[{k}]"), check_name(d))?;
                }
            }
        }
        Ok(())
    }

    /// The manifest as YAML.
    pub fn to_yaml(&self) -> Result<String> {
        Ok(crate::yaml::to_string(self)?)
    }

    /// Checks the manifest's internal consistency: unique names, every job's
    /// packages present, every dependency present, and no dependency cycle.
    pub fn check_consistency(&self, file: &str) -> Result<()> {
        let mut names = std::collections::BTreeSet::new();
        for j in &self.jobs {
            if !names.insert(("job", j.name.as_str())) {
                return Err(Error::entry(file, format!("jobs[{}]", j.name), "duplicate job"));
            }
        }
        let mut deps: std::collections::BTreeMap<&str, &[String]> = Default::default();
        for p in &self.packages {
            if deps.insert(&p.name, &p.dependencies).is_some() {
                return Err(Error::entry(
                    file,
                    format!("packages[{}]", p.name),
                    "duplicate package",
                ));
            }
        }
        for p in &self.compiled_packages {
            if deps.insert(&p.name, &p.dependencies).is_some() {
                return Err(Error::entry(
                    file,
                    format!("compiled_packages[{}]", p.name),
                    "duplicate package",
                ));
            }
        }
        for j in &self.jobs {
            for p in &j.packages {
                if !deps.contains_key(p.as_str()) {
                    return Err(Error::entry(
                        file,
                        format!("jobs[{}].packages", j.name),
                        format!("package '{p}' is not in the release"),
                    ));
                }
            }
        }
        // A compiled package's dependencies were compiled with it, on the
        // same stemcell: they must be in the release, compiled for it too
        // (its compile key is made of theirs).
        let stemcells: std::collections::BTreeMap<&str, &str> =
            self.compiled_packages.iter().map(|p| (p.name.as_str(), p.stemcell.as_str())).collect();
        for (i, p) in self.compiled_packages.iter().enumerate() {
            for (k, d) in p.dependencies.iter().enumerate() {
                let entry = || format!("compiled_packages[{i}].dependencies[{k}]");
                match stemcells.get(d.as_str()) {
                    None if !deps.contains_key(d.as_str()) => {
                        return Err(Error::entry(
                            file,
                            entry(),
                            format!("package '{d}' is not in the release"),
                        ));
                    }
                    Some(s) if *s == p.stemcell => {}
                    _ => {
                        return Err(Error::entry(
                            file,
                            entry(),
                            format!(
                                "package '{d}' is not compiled for {} in the release",
                                p.stemcell
                            ),
                        ));
                    }
                }
            }
        }
        for (name, ds) in &deps {
            for d in ds.iter() {
                if !deps.contains_key(d.as_str()) {
                    return Err(Error::entry(
                        file,
                        format!("packages[{name}].dependencies"),
                        format!("package '{d}' is not in the release"),
                    ));
                }
            }
        }
        if let Some(cycle) = find_cycle(&deps) {
            return Err(Error::entry(
                file,
                format!("packages[{}].dependencies", cycle[0]),
                format!("dependency cycle: {}", cycle.join(" -> ")),
            ));
        }
        Ok(())
    }
}

/// A dependency cycle, as the list of names around it (first repeated last).
pub fn find_cycle(deps: &std::collections::BTreeMap<&str, &[String]>) -> Option<Vec<String>> {
    // 0 = unvisited, 1 = on the stack, 2 = done.
    fn visit<'a>(
        n: &'a str,
        deps: &std::collections::BTreeMap<&'a str, &'a [String]>,
        state: &mut std::collections::BTreeMap<&'a str, u8>,
        stack: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match state.get(n) {
            Some(2) => return None,
            Some(1) => {
                let start = stack.iter().position(|s| *s == n).unwrap_or(0);
                let mut c: Vec<String> = stack[start..].iter().map(|s| s.to_string()).collect();
                c.push(n.to_string());
                return Some(c);
            }
            _ => {}
        }
        state.insert(n, 1);
        stack.push(n);
        for d in deps.get(n).copied().unwrap_or_default() {
            if let Some(c) = visit(d.as_str(), deps, state, stack) {
                return Some(c);
            }
        }
        stack.pop();
        state.insert(n, 2);
        None
    }
    let mut state = std::collections::BTreeMap::new();
    for n in deps.keys() {
        if let Some(c) = visit(n, deps, &mut state, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A compiled release of `hello` (depending on `lib`) for `stemcell`.
    fn compiled(stemcell: &str, lib_stemcell: &str) -> ReleaseManifest {
        let cp = |name: &str, stemcell: &str, deps: &[&str]| CompiledPackageRef {
            name: name.into(),
            version: format!("fp-{name}"),
            fingerprint: format!("fp-{name}"),
            sha1: "sha256:00".into(),
            stemcell: stemcell.into(),
            dependencies: deps.iter().map(|d| d.to_string()).collect(),
        };
        ReleaseManifest {
            name: "hello".into(),
            version: "1".into(),
            compiled_packages: vec![cp("lib", lib_stemcell, &[]), cp("hello", stemcell, &["lib"])],
            ..Default::default()
        }
    }

    fn parse(m: &ReleaseManifest) -> Result<ReleaseManifest> {
        let m = ReleaseManifest::parse(&m.to_yaml()?, "release.MF")?;
        m.check_consistency("release.MF")?;
        Ok(m)
    }

    /// A compiled release round-trips through YAML and passes its checks.
    #[test]
    fn a_compiled_release_manifest_is_accepted() {
        let m = compiled("ubuntu-jammy/1.5", "ubuntu-jammy/1.5");
        assert_eq!(parse(&m).unwrap(), m);
    }

    /// A stemcell that is not `os/version` is refused, naming the field.
    #[test]
    fn a_stemcell_without_a_version_is_refused_naming_the_field() {
        let e = parse(&compiled("ubuntu-jammy", "ubuntu-jammy")).unwrap_err().to_string();
        assert_eq!(
            e,
            "release.MF: compiled_packages[0].stemcell: expected OS/VERSION, found \"ubuntu-jammy\""
        );
        let e = parse(&compiled("a/b/c", "a/b/c")).unwrap_err().to_string();
        assert!(e.starts_with("release.MF: compiled_packages[0].stemcell: "), "{e}");
    }

    /// A compiled dependency missing, or compiled for another stemcell, is
    /// refused naming the dependency's path.
    #[test]
    fn a_compiled_dependency_missing_or_for_another_stemcell_is_refused() {
        let mut m = compiled("u/1", "u/1");
        m.compiled_packages[1].dependencies = vec!["lib".into(), "ghost".into()];
        let e = parse(&m).unwrap_err().to_string();
        assert_eq!(
            e,
            "release.MF: compiled_packages[1].dependencies[1]: package 'ghost' is not in the release"
        );
        let e = parse(&compiled("u/1", "u/2")).unwrap_err().to_string();
        assert_eq!(
            e,
            "release.MF: compiled_packages[1].dependencies[0]: package 'lib' is not compiled for u/1 in the release"
        );
    }
}
