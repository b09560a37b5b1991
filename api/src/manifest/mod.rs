//! Deployment manifest v2, cloud config and runtime config.
//!
//! Documents are read in three steps, so a user sees every mistake at once
//! instead of serde's first one:
//!
//! 1. YAML → `serde_json::Value` through [`crate::yaml`] (YAML 1.1 habits);
//! 2. the value is checked against the JSON Schema of the typed structs
//!    ([`shape`]: types, unknown and missing keys), and semantic rules that
//!    need no other document run on the same value (duplicate names,
//!    references inside the document, IP ranges);
//! 3. only a value with no errors is deserialized into [`Manifest`],
//!    [`CloudConfig`] or [`RuntimeConfig`].
//!
//! [`validate_against_cloud_config`] then checks what a manifest takes from a
//! cloud config. Every error carries the file, a BOSH-style path
//! (`instance_groups[2].jobs[0].release`) and what was expected.

use std::sync::LazyLock;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub mod addons;
mod check_cloud;
mod check_deployment;
mod cloud;
mod cross;
mod deployment;
pub mod ip;
pub mod links;
mod runtime;
mod scalars;
mod shape;
mod validate;

pub use cloud::*;
pub use cross::validate_against_cloud_config;
pub use deployment::*;
pub use runtime::*;
pub use scalars::{Count, Version, WatchTime};
pub use shape::Placeholders;

use crate::{schema::generate::schema_of, yaml::YamlError};

/// Free-form properties (job properties, cloud properties, env), in document order.
pub type Properties = indexmap::IndexMap<String, Value>;

/// One problem in a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    /// Where, in BOSH style: `instance_groups[2].jobs[0].release` (empty = the document).
    pub path: String,
    /// What was expected, e.g. `expected a string, found a number`.
    pub message: String,
}

/// Every problem found in one document; printed one line per error as `FILE: PATH: MESSAGE`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors {
    /// The document's file (or other source name).
    pub file: String,
    /// The problems, in document order, shape errors first.
    pub errors: Vec<ValidationError>,
}

impl std::fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match e.path.as_str() {
                "" => write!(f, "{}: {}", self.file, e.message)?,
                p => write!(f, "{}: {p}: {}", self.file, e.message)?,
            }
        }
        Ok(())
    }
}

/// A document could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The YAML itself is malformed.
    #[error(transparent)]
    Yaml(#[from] YamlError),
    /// The YAML is well-formed but not a valid document.
    #[error(transparent)]
    Invalid(#[from] ValidationErrors),
}

/// A kind of document this module reads.
trait Document: DeserializeOwned {
    /// The JSON Schema the shape check walks.
    fn schema() -> &'static Value;
    /// Rules that need the whole document but no other one.
    fn semantic(v: &Value, report: &mut validate::Report);
}

static MANIFEST_SCHEMA: LazyLock<Value> = LazyLock::new(|| schema_of::<Manifest>().to_value());
static CLOUD_SCHEMA: LazyLock<Value> = LazyLock::new(|| schema_of::<CloudConfig>().to_value());
static RUNTIME_SCHEMA: LazyLock<Value> = LazyLock::new(|| schema_of::<RuntimeConfig>().to_value());

impl Document for Manifest {
    fn schema() -> &'static Value {
        &MANIFEST_SCHEMA
    }
    fn semantic(v: &Value, report: &mut validate::Report) {
        check_deployment::check(v, report);
    }
}

impl Document for CloudConfig {
    fn schema() -> &'static Value {
        &CLOUD_SCHEMA
    }
    fn semantic(v: &Value, report: &mut validate::Report) {
        check_cloud::check(v, report);
    }
}

impl Document for RuntimeConfig {
    fn schema() -> &'static Value {
        &RUNTIME_SCHEMA
    }
    fn semantic(v: &Value, report: &mut validate::Report) {
        check_deployment::check_runtime(v, report);
    }
}

fn check<T: Document>(v: &Value, placeholders: Placeholders) -> Vec<ValidationError> {
    let mut report = validate::Report::default();
    if !v.is_object() {
        report.push("", format!("expected a map at the top of the document, found {}", kind(v)));
        return report.errors;
    }
    shape::Shape::new(T::schema(), placeholders).check_root(v, &mut report);
    T::semantic(v, &mut report);
    report.errors
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "an empty document",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
        _ => "a scalar",
    }
}

fn from_value<T: Document>(v: &Value, file: &str) -> Result<T, ValidationErrors> {
    let errors = check::<T>(v, Placeholders::Reject);
    let fail = |errors| ValidationErrors { file: file.to_string(), errors };
    if !errors.is_empty() {
        return Err(fail(errors));
    }
    // The shape check mirrors the types, so this only fails on a gap in it.
    serde_json::from_value(v.clone())
        .map_err(|e| fail(vec![ValidationError { path: String::new(), message: e.to_string() }]))
}

fn parse<T: Document>(src: &str, file: &str) -> Result<T, Error> {
    let v = crate::yaml::parse_value(src, file)?;
    Ok(from_value(&v, file)?)
}

impl Manifest {
    /// Validates an interpolated manifest and reads it; `file` names it in errors.
    pub fn from_value(v: &Value, file: &str) -> Result<Self, ValidationErrors> {
        from_value(v, file)
    }

    /// Parses, validates and reads an interpolated manifest.
    pub fn parse(src: &str, file: &str) -> Result<Self, Error> {
        parse(src, file)
    }

    /// Checks a manifest without reading it, e.g. before interpolation with
    /// [`Placeholders::Allow`]; an empty list means valid.
    pub fn check(v: &Value, placeholders: Placeholders) -> Vec<ValidationError> {
        check::<Self>(v, placeholders)
    }

    /// The group called `name`.
    pub fn instance_group(&self, name: &str) -> Option<&InstanceGroup> {
        self.instance_groups.iter().find(|g| g.name == name)
    }
}

impl CloudConfig {
    /// Validates a cloud config and reads it; `file` names it in errors.
    pub fn from_value(v: &Value, file: &str) -> Result<Self, ValidationErrors> {
        from_value(v, file)
    }

    /// Parses, validates and reads a cloud config.
    pub fn parse(src: &str, file: &str) -> Result<Self, Error> {
        parse(src, file)
    }

    /// Checks a cloud config without reading it; an empty list means valid.
    pub fn check(v: &Value, placeholders: Placeholders) -> Vec<ValidationError> {
        check::<Self>(v, placeholders)
    }

    /// Combines several named cloud configs the way BOSH does: lists are
    /// concatenated, and the last `compilation` block wins.
    pub fn merged(configs: impl IntoIterator<Item = CloudConfig>) -> CloudConfig {
        let mut out = CloudConfig::default();
        for c in configs {
            out.azs.extend(c.azs);
            out.vm_types.extend(c.vm_types);
            out.vm_extensions.extend(c.vm_extensions);
            out.disk_types.extend(c.disk_types);
            out.networks.extend(c.networks);
            out.compilation = c.compilation.or(out.compilation);
        }
        out
    }
}

impl RuntimeConfig {
    /// Validates a runtime config and reads it; `file` names it in errors.
    pub fn from_value(v: &Value, file: &str) -> Result<Self, ValidationErrors> {
        from_value(v, file)
    }

    /// Parses, validates and reads a runtime config.
    pub fn parse(src: &str, file: &str) -> Result<Self, Error> {
        parse(src, file)
    }

    /// Checks a runtime config without reading it; an empty list means valid.
    pub fn check(v: &Value, placeholders: Placeholders) -> Vec<ValidationError> {
        check::<Self>(v, placeholders)
    }
}

fn schema_with_title<T: JsonSchema>(title: &str) -> schemars::Schema {
    let mut s = schema_of::<T>();
    s.insert("title".into(), Value::String(title.into()));
    s
}

/// JSON Schemas of the manifest formats, by file stem.
pub fn schemas() -> Vec<(&'static str, schemars::Schema)> {
    vec![
        ("manifest", schema_with_title::<Manifest>("BOSH deployment manifest v2")),
        ("cloud-config", schema_with_title::<CloudConfig>("BOSH cloud config")),
        ("runtime-config", schema_with_title::<RuntimeConfig>("BOSH runtime config")),
    ]
}
