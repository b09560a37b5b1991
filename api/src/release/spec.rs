//! Job `spec`, package `spec` and package `spec.lock`, validated with BOSH-style paths.
//!
//! Specs are read like manifests: YAML through [`crate::yaml`], every shape
//! problem collected with its path, and only then deserialized. Unknown keys
//! are accepted, as bosh-cli accepts them (real specs carry extras such as
//! `properties.x.type` or `no_compression`).

use std::path::Path;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Result, io};
use crate::manifest::{ValidationError, ValidationErrors};

/// A property a job declares.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PropertyDef {
    /// What the property means.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The value used when a manifest gives none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// An example value, for documentation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub example: Option<Value>,
}

/// A link a job provides.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LinkProvides {
    /// The link's name, unique within the job.
    pub name: String,
    /// The link's type; consumers match on it.
    #[serde(rename = "type")]
    pub link_type: String,
    /// Job properties exposed through the link.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub properties: Vec<String>,
}

/// A link a job consumes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LinkConsumes {
    /// The link's name, unique within the job.
    pub name: String,
    /// The link's type.
    #[serde(rename = "type")]
    pub link_type: String,
    /// Whether the job works without it.
    #[serde(default)]
    pub optional: bool,
}

/// A job's `spec` file (stored as `job.MF` in the job tarball).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// The job's name; must equal its directory's name.
    pub name: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Template source (under `templates/`) to destination (under `/var/vcap/jobs/<job>/`).
    #[serde(default)]
    pub templates: IndexMap<String, String>,
    /// Packages the job needs on its VM.
    #[serde(default)]
    pub packages: Vec<String>,
    /// Properties the job's templates may read.
    #[serde(default)]
    pub properties: IndexMap<String, PropertyDef>,
    /// Links provided.
    #[serde(default)]
    pub provides: Vec<LinkProvides>,
    /// Links consumed.
    #[serde(default)]
    pub consumes: Vec<LinkConsumes>,
}

/// A package's `spec` file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PackageSpec {
    /// The package's name; must equal its directory's name.
    pub name: String,
    /// Packages compiled before this one and visible under `/var/vcap/packages`.
    #[serde(default)]
    pub dependencies: Vec<String>,
    /// Globs matched in `src/` and then `blobs/`.
    #[serde(default)]
    pub files: Vec<String>,
    /// Globs removed from what `files` matched.
    #[serde(default)]
    pub excluded_files: Vec<String>,
}

/// A package's `spec.lock`: a vendored package pinned to a final build.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PackageLock {
    /// The package's name.
    pub name: String,
    /// The fingerprint of the final build it stands for.
    pub fingerprint: String,
    /// Its dependencies.
    #[serde(default)]
    pub dependencies: Vec<String>,
}

/// Collects shape errors of one document.
struct Check {
    errors: Vec<ValidationError>,
}

impl Check {
    fn push(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(ValidationError { path: path.to_string(), message: message.into() });
    }

    fn kind(v: &Value) -> &'static str {
        match v {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "a list",
            Value::Object(_) => "a map",
        }
    }

    fn string(&mut self, v: &Value, key: &str, required: bool) {
        match v.get(key) {
            None | Some(Value::Null) if required => self.push(key, "is required"),
            None | Some(Value::Null) | Some(Value::String(_)) => {}
            Some(other) => {
                self.push(key, format!("expected a string, found {}", Self::kind(other)))
            }
        }
    }

    /// Checks the string under `key` (if it is one) against the name rule:
    /// job, package and link names become paths and keys everywhere.
    fn name(&mut self, v: &Value, key: &str) {
        if let Some(Err(e)) = v.get(key).and_then(Value::as_str).map(crate::names::check_name) {
            self.push(key, e.to_string());
        }
    }

    /// Checks each string of the list under `key` against the name rule.
    fn names(&mut self, v: &Value, key: &str) {
        let items = v.get(key).and_then(Value::as_array).into_iter().flatten();
        for (i, item) in items.enumerate() {
            if let Some(Err(e)) = item.as_str().map(crate::names::check_name) {
                self.push(&format!("{key}[{i}]"), e.to_string());
            }
        }
    }

    fn strings(&mut self, v: &Value, key: &str) {
        match v.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    if !item.is_string() {
                        let found = Self::kind(item);
                        self.push(
                            &format!("{key}[{i}]"),
                            format!("expected a string, found {found}"),
                        );
                    }
                }
            }
            Some(other) => self.push(key, format!("expected a list, found {}", Self::kind(other))),
        }
    }

    fn map<'a>(&mut self, v: &'a Value, key: &str) -> Option<&'a serde_json::Map<String, Value>> {
        match v.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(m),
            Some(other) => {
                self.push(key, format!("expected a map, found {}", Self::kind(other)));
                None
            }
        }
    }

    fn links(&mut self, v: &Value, key: &str) {
        match v.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    let p = format!("{key}[{i}]");
                    if !item.is_object() {
                        self.push(&p, format!("expected a map, found {}", Self::kind(item)));
                        continue;
                    }
                    for k in ["name", "type"] {
                        match item.get(k) {
                            Some(Value::String(s)) if k == "name" => {
                                if let Err(e) = crate::names::check_name(s) {
                                    self.push(&format!("{p}.{k}"), e.to_string());
                                }
                            }
                            Some(Value::String(_)) => {}
                            None | Some(Value::Null) => {
                                self.push(&format!("{p}.{k}"), "is required")
                            }
                            Some(o) => self.push(
                                &format!("{p}.{k}"),
                                format!("expected a string, found {}", Self::kind(o)),
                            ),
                        }
                    }
                }
            }
            Some(other) => self.push(key, format!("expected a list, found {}", Self::kind(other))),
        }
    }

    fn finish<T: serde::de::DeserializeOwned>(self, v: Value, file: &str) -> Result<T> {
        let fail = |errors| ValidationErrors { file: file.to_string(), errors };
        if !self.errors.is_empty() {
            return Err(fail(self.errors).into());
        }
        serde_json::from_value(v).map_err(|e| {
            fail(vec![ValidationError { path: String::new(), message: e.to_string() }]).into()
        })
    }
}

fn read_doc(path: &Path, file: &str) -> Result<(Value, Check)> {
    let src = std::fs::read_to_string(path).map_err(io(path))?;
    let v = crate::yaml::parse_value_keys_as_written(&src, file)?;
    let mut check = Check { errors: Vec::new() };
    if !v.is_object() {
        check.push("", format!("expected a map, found {}", Check::kind(&v)));
    }
    Ok((v, check))
}

impl JobSpec {
    /// Reads and validates a job `spec`; `file` names it in errors (`jobs/web/spec`).
    pub fn read(path: &Path, file: &str) -> Result<Self> {
        let (v, c) = read_doc(path, file)?;
        Self::check(v, c, file)
    }

    /// Parses and validates a job spec from text (e.g. a `job.MF` out of a tarball).
    pub fn parse(src: &str, file: &str) -> Result<Self> {
        let v = crate::yaml::parse_value_keys_as_written(src, file)?;
        let mut c = Check { errors: Vec::new() };
        if !v.is_object() {
            c.push("", format!("expected a map, found {}", Check::kind(&v)));
        }
        Self::check(v, c, file)
    }

    fn check(v: Value, mut c: Check, file: &str) -> Result<Self> {
        if v.is_object() {
            c.string(&v, "name", true);
            c.name(&v, "name");
            c.string(&v, "description", false);
            if let Some(t) = c.map(&v, "templates") {
                for (src, dst) in t {
                    let path = format!("templates.{src}");
                    if !super::tgz::is_safe_relative(src) {
                        c.push(&path, "template source must be a relative path inside templates/");
                    }
                    match dst.as_str() {
                        None => {
                            let found = Check::kind(dst);
                            c.push(&path, format!("expected a string, found {found}"));
                        }
                        Some(d) if !super::tgz::is_safe_relative(d) => c.push(
                            &path,
                            "template destination must be a relative path inside the job directory",
                        ),
                        Some(_) => {}
                    }
                }
            }
            c.strings(&v, "packages");
            c.names(&v, "packages");
            if let Some(props) = c.map(&v, "properties") {
                for (name, def) in props {
                    if !(def.is_object() || def.is_null()) {
                        let found = Check::kind(def);
                        c.push(
                            &format!("properties.{name}"),
                            format!("expected a map, found {found}"),
                        );
                    } else if let Some(d) = def.get("description").filter(|d| !d.is_string()) {
                        let found = Check::kind(d);
                        c.push(
                            &format!("properties.{name}.description"),
                            format!("expected a string, found {found}"),
                        );
                    }
                }
            }
            c.links(&v, "provides");
            c.links(&v, "consumes");
        }
        let mut v = v;
        // `properties: {p: ~}` is legal BOSH: a property with no metadata.
        if let Some(Value::Object(props)) = v.get_mut("properties") {
            for def in props.values_mut() {
                if def.is_null() {
                    *def = Value::Object(Default::default());
                }
            }
        }
        for key in ["templates", "packages", "properties", "provides", "consumes"] {
            if v.get(key).is_some_and(Value::is_null) {
                v.as_object_mut().map(|m| m.remove(key));
            }
        }
        c.finish(v, file)
    }
}

impl PackageSpec {
    /// Reads and validates a package `spec`; `file` names it in errors.
    pub fn read(path: &Path, file: &str) -> Result<Self> {
        let (mut v, mut c) = read_doc(path, file)?;
        if v.is_object() {
            c.string(&v, "name", true);
            c.name(&v, "name");
            c.names(&v, "dependencies");
            for key in ["dependencies", "files", "excluded_files"] {
                c.strings(&v, key);
                if v.get(key).is_some_and(Value::is_null) {
                    v.as_object_mut().map(|m| m.remove(key));
                }
            }
        }
        c.finish(v, file)
    }
}

impl PackageLock {
    /// Reads and validates a package `spec.lock`.
    pub fn read(path: &Path, file: &str) -> Result<Self> {
        let (v, mut c) = read_doc(path, file)?;
        if v.is_object() {
            c.string(&v, "name", true);
            c.name(&v, "name");
            c.string(&v, "fingerprint", true);
            c.strings(&v, "dependencies");
            c.names(&v, "dependencies");
        }
        c.finish(v, file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> std::path::PathBuf {
        let p = dir.join("spec");
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Every shape error of a job spec is reported with its path at once.
    #[test]
    fn job_spec_reports_every_error_with_its_path() {
        let d = tempfile::tempdir().unwrap();
        let p =
            write(d.path(), "templates: {a.erb: 3}\npackages: [x, 4]\nconsumes: [{name: db}]\n");
        let err = JobSpec::read(&p, "jobs/web/spec").unwrap_err().to_string();
        for want in [
            "jobs/web/spec: name: is required",
            "jobs/web/spec: templates.a.erb: expected a string, found a number",
            "jobs/web/spec: packages[1]: expected a string, found a number",
            "jobs/web/spec: consumes[0].type: is required",
        ] {
            assert!(err.contains(want), "{want} not in {err}");
        }
    }

    /// A property with no metadata (`p: ~`) and empty lists (`packages: ~`) are accepted.
    #[test]
    fn job_spec_accepts_null_properties_and_lists() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "name: w\npackages: ~\nproperties:\n  a: ~\n  b: {default: 1}\n");
        let s = JobSpec::read(&p, "spec").unwrap();
        assert_eq!(s.properties.len(), 2);
        assert_eq!(s.properties["b"].default, Some(serde_json::json!(1)));
        assert!(s.packages.is_empty());
    }

    /// A package spec's list fields must hold strings.
    #[test]
    fn package_spec_rejects_non_string_globs() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "name: p\nfiles: [a/*, {x: 1}]\n");
        let err = PackageSpec::read(&p, "packages/p/spec").unwrap_err().to_string();
        assert!(err.contains("packages/p/spec: files[1]: expected a string, found a map"), "{err}");
    }
}
