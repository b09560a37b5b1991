//! Ops files (go-patch) and `((var))` interpolation, as `bosh interpolate` does them.
//!
//! Operators keep one base manifest and adapt it with ops files and
//! variables; matching bosh-cli exactly means their existing ops files and
//! scripts work unchanged. As in bosh-cli, ops apply first and variables are
//! substituted afterwards, so an op may add a `((var))` that then resolves.
//! [`evaluate`] runs the whole pipeline.

use serde_json::Value;

mod ops;
mod pointer;
mod vars;

pub use ops::{Op, OpKind, Ops, find};
pub use pointer::{Modifier, Pointer, Token};
pub use vars::{
    InterpolateOptions, Vars, interpolate, interpolate_manifest, parse_kv, parse_vars_file,
    static_vars, vars_from_env,
};

use crate::yaml::YamlError;

/// Applying ops or variables failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A file is not valid YAML.
    #[error(transparent)]
    Yaml(#[from] YamlError),
    /// An ops file is not a list of well-formed operations.
    #[error("{file}: {}{message}", index.map(|i| format!("[{i}] ")).unwrap_or_default())]
    OpDefinition {
        /// The ops file.
        file: String,
        /// Which operation, when one is at fault.
        index: Option<usize>,
        /// What is wrong, in go-patch's words where it has some.
        message: String,
    },
    /// An operation could not be applied to the document.
    #[error("{file}: [{index}] {op} {path}: {message}")]
    Op {
        /// The ops file.
        file: String,
        /// The operation's position in the file, from 0.
        index: usize,
        /// `replace`, `remove` or `test`.
        op: &'static str,
        /// The operation's path.
        path: String,
        /// What went wrong, in go-patch's words.
        message: String,
    },
    /// A vars file is not a map.
    #[error("{file}: {message}")]
    VarsFile {
        /// The vars file.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// Variables were missing or unused when the options forbid it.
    #[error("{}", vars_message(missing, unused))]
    Vars {
        /// Variables with no value (`--var-errs`).
        missing: Vec<String>,
        /// Variables given but never used (`--var-errs-unused`).
        unused: Vec<String>,
    },
    /// A variable's value could not be used where it was referenced.
    #[error("{}", messages.join("\n"))]
    Var {
        /// One line per problem.
        messages: Vec<String>,
    },
    /// `--path` does not lead to a value.
    #[error("path {path}: {message}")]
    Find {
        /// The requested path.
        path: String,
        /// Why it could not be followed.
        message: String,
    },
}

fn vars_message(missing: &[String], unused: &[String]) -> String {
    let mut lines = Vec::new();
    if !missing.is_empty() {
        lines.push(format!("Expected to find variables: {}", missing.join(", ")));
    }
    if !unused.is_empty() {
        lines.push(format!("Expected to use variables: {}", unused.join(", ")));
    }
    lines.join("\n")
}

/// Applies `ops` in order, then substitutes variables (minding the
/// document's own `variables:`, see [`interpolate_manifest`]), then
/// extracts `path`: `bosh interpolate`'s pipeline.
pub fn evaluate(
    doc: Value,
    ops: &[Ops],
    vars: &Vars,
    opts: InterpolateOptions,
    path: Option<&Pointer>,
) -> Result<Value, Error> {
    let mut doc = doc;
    for o in ops {
        doc = o.apply(doc)?;
    }
    let doc = vars::interpolate_manifest(&doc, vars, opts)?;
    match path {
        None => Ok(doc),
        Some(p) => match find(&doc, p) {
            Ok(v) => Ok(v.cloned().unwrap_or(Value::Null)),
            Err(message) => Err(Error::Find { path: p.to_string(), message }),
        },
    }
}
