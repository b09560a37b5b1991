//! Deployment variables: the values of a manifest's `variables:` section,
//! generated once, kept as secrets, and substituted into `((placeholders))`.
//!
//! BOSH leaves this to a config server (CredHub); bosh-rs keeps the values in
//! etcd beside the objects but outside them, through the store's secret API
//! (`<root>/secrets/variables/<deployment>/<name>`), so no `get` or watch of
//! a Deployment shows them. Each record is `{type, id, value}`; `id` changes
//! only when a value is regenerated, so instances can tell which version of
//! a credential they run with without ever seeing it.
//!
//! Why it works this way:
//!
//! - **Generated once.** A declared variable is generated only when no value
//!   is stored, and written with create-if-absent: two racing deploys of the
//!   same manifest agree on the one value that won, and a redeploy never
//!   rotates a password behind a running job's back.
//! - **CAs first.** A certificate signed by another variable is generated
//!   after its CA, and signed by the CA's *stored* value, so a leaf always
//!   chains to the CA every other instance trusts.
//! - **Names only.** Values never reach logs, `Debug`, events, errors or
//!   [`list`]: [`SecretValue`]'s `Debug` is redacted, and errors carry
//!   variable names and manifest paths.
//! - **One interpolator.** Substitution is [`bosh_api::interpolate`], so
//!   `((name))`, `((name.key))` and `((!name))` mean what `bosh interpolate`
//!   makes them mean.
//!
//! Absolute names (`((/name))`) are stored under `shared-variables/<name>`,
//! are shared by every deployment, and are neither listed nor deleted with
//! one deployment.

use std::collections::{BTreeMap, BTreeSet};

use bosh_api::interpolate::{self, InterpolateOptions, Vars};
use bosh_api::manifest::{Properties, Variable, VariableType};
use bosh_api::store::Store;
use serde::{Deserialize, Serialize};
use serde_json::Value;

mod generate;
#[cfg(test)]
mod tests;

/// A variable's value; its `Debug` never shows it.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretValue(Value);

impl SecretValue {
    /// The value itself, for substitution; never log it.
    pub fn expose(&self) -> &Value {
        &self.0
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

/// A stored variable: what the secret holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    /// The variable's type (`password`, ...).
    #[serde(rename = "type")]
    type_: String,
    /// Changes when the value is regenerated.
    id: String,
    /// The value.
    value: SecretValue,
}

/// Manifest paths where an unknown variable is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingVariable {
    /// The variable's name (before any `.key`).
    pub name: String,
    /// BOSH-style paths (`instance_groups[0].jobs[1].properties.pw`).
    pub paths: Vec<String>,
}

impl std::fmt::Display for MissingVariable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "'{}'", self.name)?;
        if !self.paths.is_empty() {
            write!(f, " (at {})", self.paths.join(", "))?;
        }
        Ok(())
    }
}

fn join_missing(missing: &[MissingVariable]) -> String {
    missing.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// Errors of variables; they name variables and paths, never values.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The manifest's `variables` section is not a list of declarations.
    #[error("deployment {deployment}: invalid variables section: {message}")]
    InvalidDeclarations {
        /// The deployment.
        deployment: String,
        /// What is wrong with the section.
        message: String,
    },
    /// Two declarations share a name.
    #[error("deployment {deployment}: variable '{name}' is declared more than once")]
    Duplicate {
        /// The deployment.
        deployment: String,
        /// The name declared twice.
        name: String,
    },
    /// A declaration's options are wrong for its type, or its type cannot
    /// be generated (`user`, `value`, `json`) and nothing is stored.
    #[error("deployment {deployment}: variable '{variable}': {message}")]
    InvalidOptions {
        /// The deployment.
        deployment: String,
        /// The variable.
        variable: String,
        /// What is wrong.
        message: String,
    },
    /// A certificate's `ca` is neither declared nor stored.
    #[error(
        "deployment {deployment}: certificate '{variable}' is signed by '{ca}', which is neither declared nor stored"
    )]
    MissingCa {
        /// The deployment.
        deployment: String,
        /// The certificate.
        variable: String,
        /// The CA it names.
        ca: String,
    },
    /// A certificate's `ca` holds no certificate and private key.
    #[error(
        "deployment {deployment}: certificate '{variable}' is signed by '{ca}', which is not a certificate with a private key"
    )]
    CaNotCertificate {
        /// The deployment.
        deployment: String,
        /// The certificate.
        variable: String,
        /// The CA it names.
        ca: String,
    },
    /// Certificates name each other as CA in a loop.
    #[error("deployment {deployment}: certificates are each other's CA: {}", cycle.join(" -> "))]
    CaCycle {
        /// The deployment.
        deployment: String,
        /// The loop, first name repeated at the end.
        cycle: Vec<String>,
    },
    /// Generating a value failed.
    #[error("deployment {deployment}: failed to generate variable '{variable}': {reason}")]
    Generate {
        /// The deployment.
        deployment: String,
        /// The variable.
        variable: String,
        /// Why (never key material).
        reason: String,
    },
    /// Placeholders name variables that are neither declared nor stored.
    #[error(
        "deployment {deployment}: variables neither declared nor stored: {}",
        join_missing(missing)
    )]
    Undeclared {
        /// The deployment.
        deployment: String,
        /// Each unknown variable with where it is used.
        missing: Vec<MissingVariable>,
    },
    /// A placeholder could not take its variable's value (a missing key,
    /// a map inside a string).
    #[error("deployment {deployment}: failed to substitute variables")]
    Interpolate {
        /// The deployment.
        deployment: String,
        /// What the interpolator found (names, never values).
        #[source]
        source: interpolate::Error,
    },
    /// A stored variable is not a `{type, id, value}` record.
    #[error("deployment {deployment}: stored variable '{name}' is unreadable")]
    Corrupt {
        /// The deployment.
        deployment: String,
        /// The variable.
        name: String,
    },
    /// The store failed.
    #[error("deployment {deployment}: variable store failed")]
    Store {
        /// The deployment.
        deployment: String,
        /// The store's error.
        #[source]
        source: bosh_api::store::Error,
    },
}

/// The secret name of a variable: deployment-scoped, or shared when absolute.
fn secret_name(deployment: &str, name: &str) -> String {
    match name.strip_prefix('/') {
        Some(abs) => format!("shared-variables/{abs}"),
        None => format!("variables/{deployment}/{name}"),
    }
}

fn prefix(deployment: &str) -> String {
    format!("variables/{deployment}/")
}

fn type_name(t: VariableType) -> String {
    match serde_json::to_value(t) {
        Ok(Value::String(s)) => s,
        _ => format!("{t:?}").to_lowercase(),
    }
}

/// Context for one deployment's operations.
struct Ctx<'a> {
    store: &'a Store,
    deployment: &'a str,
}

impl Ctx<'_> {
    fn store_err(&self) -> impl FnOnce(bosh_api::store::Error) -> Error + '_ {
        move |source| Error::Store { deployment: self.deployment.to_string(), source }
    }

    fn parse(&self, name: &str, bytes: &[u8]) -> Result<Stored, Error> {
        // The serde error could quote the value: keep only the name.
        serde_json::from_slice(bytes).map_err(|_| Error::Corrupt {
            deployment: self.deployment.to_string(),
            name: name.to_string(),
        })
    }

    /// The deployment's stored variables, by name.
    async fn load(&self) -> Result<BTreeMap<String, Stored>, Error> {
        let prefix = prefix(self.deployment);
        let kvs = self.store.list_secrets(&prefix).await.map_err(self.store_err())?;
        let mut out = BTreeMap::new();
        for (key, bytes) in kvs {
            let name = key.strip_prefix(&prefix).unwrap_or(&key).to_string();
            let stored = self.parse(&name, &bytes)?;
            out.insert(name, stored);
        }
        Ok(out)
    }

    /// One stored variable (absolute names included).
    async fn get(&self, name: &str) -> Result<Option<Stored>, Error> {
        let key = secret_name(self.deployment, name);
        match self.store.get_secret(&key).await.map_err(self.store_err())? {
            Some(bytes) => Ok(Some(self.parse(name, &bytes)?)),
            None => Ok(None),
        }
    }

    /// Generates `var` and stores it unless a value appeared meanwhile;
    /// returns the value that is stored now.
    async fn generate(
        &self,
        var: &Variable,
        ca: Option<generate::CaMaterial>,
    ) -> Result<Stored, Error> {
        let (type_, options) = (var.type_, var.options.clone());
        let result =
            tokio::task::spawn_blocking(move || generate::generate(type_, &options, ca.as_ref()))
                .await
                .unwrap_or_else(|_| Err("the generator panicked".into()));
        let value = result.map_err(|reason| Error::Generate {
            deployment: self.deployment.to_string(),
            variable: var.name.clone(),
            reason,
        })?;
        let record = Stored {
            type_: type_name(var.type_),
            id: uuid::Uuid::new_v4().simple().to_string(),
            value: SecretValue(value),
        };
        let bytes = serde_json::to_vec(&record).map_err(|_| Error::Corrupt {
            deployment: self.deployment.to_string(),
            name: var.name.clone(),
        })?;
        let key = secret_name(self.deployment, &var.name);
        let now = self.store.create_secret(&key, &bytes).await.map_err(self.store_err())?;
        let stored = self.parse(&var.name, &now)?;
        if stored.id == record.id {
            tracing::info!(
                deployment = self.deployment,
                variable = %var.name,
                kind = %record.type_,
                id = %record.id,
                "generated variable"
            );
        }
        Ok(stored)
    }
}

/// The declarations of a manifest's `variables` section.
fn declarations(deployment: &str, manifest: &Value) -> Result<Vec<Variable>, Error> {
    let declared: Vec<Variable> = match manifest.get("variables") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| Error::InvalidDeclarations {
            deployment: deployment.to_string(),
            message: e.to_string(),
        })?,
    };
    let mut seen = BTreeSet::new();
    for v in &declared {
        if !seen.insert(v.name.as_str()) {
            return Err(Error::Duplicate {
                deployment: deployment.to_string(),
                name: v.name.clone(),
            });
        }
    }
    Ok(declared)
}

/// The CA a certificate declaration names.
fn ca_of(v: &Variable) -> Option<String> {
    if v.type_ != VariableType::Certificate {
        return None;
    }
    v.options.get("ca").and_then(Value::as_str).map(str::to_string)
}

/// The declared variables in generation order (every CA before what it
/// signs, manifest order otherwise); a CA loop is an error.
fn generation_order<'a>(
    deployment: &str,
    declared: &'a [Variable],
) -> Result<Vec<&'a Variable>, Error> {
    let by_name: BTreeMap<&str, &Variable> =
        declared.iter().map(|v| (v.name.as_str(), v)).collect();
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    fn visit<'a>(
        v: &'a Variable,
        by_name: &BTreeMap<&str, &'a Variable>,
        marks: &mut BTreeMap<&'a str, Mark>,
        stack: &mut Vec<&'a str>,
        out: &mut Vec<&'a Variable>,
    ) -> Result<(), Vec<String>> {
        match marks.get(v.name.as_str()) {
            Some(Mark::Done) => return Ok(()),
            Some(Mark::Visiting) => {
                let start = stack.iter().position(|n| *n == v.name).unwrap_or(0);
                let mut cycle: Vec<String> = stack[start..].iter().map(|s| s.to_string()).collect();
                cycle.push(v.name.clone());
                return Err(cycle);
            }
            None => {}
        }
        marks.insert(&v.name, Mark::Visiting);
        stack.push(&v.name);
        if let Some(ca) = ca_of(v)
            && let Some(dep) = by_name.get(ca.as_str())
        {
            visit(dep, by_name, marks, stack, out)?;
        }
        stack.pop();
        marks.insert(&v.name, Mark::Done);
        out.push(v);
        Ok(())
    }
    let mut marks = BTreeMap::new();
    let mut out = Vec::with_capacity(declared.len());
    for v in declared {
        let mut stack = Vec::new();
        visit(v, &by_name, &mut marks, &mut stack, &mut out)
            .map_err(|cycle| Error::CaCycle { deployment: deployment.to_string(), cycle })?;
    }
    Ok(out)
}

/// The top-level variable names `doc`'s placeholders use.
fn placeholder_names(doc: &Value) -> BTreeSet<String> {
    let strict = InterpolateOptions { expect_all_keys: true, expect_all_vars_used: false };
    match interpolate::interpolate(doc, &Vars::new(), strict) {
        Err(interpolate::Error::Vars { missing, .. }) => missing.into_iter().collect(),
        _ => BTreeSet::new(),
    }
}

/// BOSH-style paths in `doc` where a placeholder uses `name`.
fn paths_of(doc: &Value, name: &str) -> Vec<String> {
    fn uses(s: &str, name: &str) -> bool {
        s.contains("((") && placeholder_names(&Value::String(s.to_string())).contains(name)
    }
    fn walk(v: &Value, path: &str, name: &str, out: &mut Vec<String>) {
        match v {
            Value::String(s) if uses(s, name) => out.push(path.to_string()),
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    walk(item, &format!("{path}[{i}]"), name, out);
                }
            }
            Value::Object(map) => {
                for (k, item) in map {
                    let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                    if uses(k, name) {
                        out.push(p.clone());
                    }
                    walk(item, &p, name, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(doc, "", name, &mut out);
    out
}

/// Generates the deployment's declared variables not yet stored, then
/// returns `manifest` with every `((name))`/`((name.key))` replaced.
pub async fn interpolate(
    store: &Store,
    deployment: &str,
    manifest: &serde_json::Value,
) -> Result<serde_json::Value, Error> {
    let ctx = Ctx { store, deployment };
    let declared = declarations(deployment, manifest)?;
    let order = generation_order(deployment, &declared)?;
    let mut values = ctx.load().await?;
    for v in declared.iter().filter(|v| v.name.starts_with('/')) {
        if let Some(stored) = ctx.get(&v.name).await? {
            values.insert(v.name.clone(), stored);
        }
    }

    // Check everything that can be checked before generating anything.
    for v in &order {
        if values.contains_key(&v.name) {
            continue;
        }
        generate::check_options(v.type_, &v.options).map_err(|message| Error::InvalidOptions {
            deployment: deployment.to_string(),
            variable: v.name.clone(),
            message,
        })?;
        if let Some(ca) = ca_of(v)
            && !declared.iter().any(|d| d.name == ca)
            && !values.contains_key(&ca)
        {
            match ctx.get(&ca).await? {
                Some(stored) => {
                    values.insert(ca, stored);
                }
                None => {
                    return Err(Error::MissingCa {
                        deployment: deployment.to_string(),
                        variable: v.name.clone(),
                        ca,
                    });
                }
            }
        }
    }

    for v in order {
        if values.contains_key(&v.name) {
            continue;
        }
        let ca = match ca_of(v) {
            None => None,
            Some(ca) => {
                let material =
                    values.get(&ca).and_then(|s| generate::CaMaterial::from_value(&s.value.0));
                Some(material.ok_or_else(|| Error::CaNotCertificate {
                    deployment: deployment.to_string(),
                    variable: v.name.clone(),
                    ca: ca.clone(),
                })?)
            }
        };
        let stored = ctx.generate(v, ca).await?;
        values.insert(v.name.clone(), stored);
    }

    for name in placeholder_names(manifest) {
        if name.starts_with('/')
            && !values.contains_key(&name)
            && let Some(stored) = ctx.get(&name).await?
        {
            values.insert(name, stored);
        }
    }

    let layer: Properties =
        values.into_iter().map(|(name, stored)| (name, stored.value.0)).collect();
    let mut vars = Vars::new();
    vars.push_layer(layer);
    let strict = InterpolateOptions { expect_all_keys: true, expect_all_vars_used: false };
    match interpolate::interpolate(manifest, &vars, strict) {
        Ok(out) => Ok(out),
        Err(interpolate::Error::Vars { missing, .. }) => Err(Error::Undeclared {
            deployment: deployment.to_string(),
            missing: missing
                .into_iter()
                .map(|name| MissingVariable { paths: paths_of(manifest, &name), name })
                .collect(),
        }),
        Err(source) => Err(Error::Interpolate { deployment: deployment.to_string(), source }),
    }
}

/// The stored variables `doc`'s placeholders name (deployment-scoped and
/// absolute), by name; names with nothing stored are left out.
async fn used(ctx: &Ctx<'_>, doc: &Value) -> Result<BTreeMap<String, Stored>, Error> {
    let mut out = BTreeMap::new();
    for name in placeholder_names(doc) {
        if let Some(stored) = ctx.get(&name).await? {
            out.insert(name, stored);
        }
    }
    Ok(out)
}

/// `doc` with its placeholders replaced by stored values; nothing is
/// generated, and a name with nothing stored is an error naming it.
///
/// For values no object may hold: a VM's `env` (`env.bosh.password`)
/// stays a placeholder in the Instance spec, which etcd, watches and the
/// API show, and is substituted here right before `create_vm`, as BOSH
/// interpolates `env` just before it calls the CPI (FAULT-MATRIX G5).
pub async fn substitute(store: &Store, deployment: &str, doc: &Value) -> Result<Value, Error> {
    let ctx = Ctx { store, deployment };
    let layer: Properties =
        used(&ctx, doc).await?.into_iter().map(|(name, stored)| (name, stored.value.0)).collect();
    let mut vars = Vars::new();
    vars.push_layer(layer);
    let strict = InterpolateOptions { expect_all_keys: true, expect_all_vars_used: false };
    interpolate::interpolate(doc, &vars, strict).map_err(|e| match e {
        interpolate::Error::Vars { missing, .. } => Error::Undeclared {
            deployment: deployment.to_string(),
            missing: missing
                .into_iter()
                .map(|name| MissingVariable { paths: paths_of(doc, &name), name })
                .collect(),
        },
        source => Error::Interpolate { deployment: deployment.to_string(), source },
    })
}

/// The versions (stored ids, never values) of the variables `doc`'s
/// placeholders name: what a digest of `doc` must cover so that a
/// regenerated value counts as a change ([`substitute`]'s values do not
/// reach the spec).
pub async fn versions(
    store: &Store,
    deployment: &str,
    doc: &Value,
) -> Result<BTreeMap<String, String>, Error> {
    let ctx = Ctx { store, deployment };
    Ok(used(&ctx, doc).await?.into_iter().map(|(name, stored)| (name, stored.id)).collect())
}

/// The deployment's stored variables.
pub async fn list(store: &Store, deployment: &str) -> Result<Vec<bosh_api::wire::Variable>, Error> {
    let ctx = Ctx { store, deployment };
    Ok(ctx
        .load()
        .await?
        .into_iter()
        .map(|(name, s)| bosh_api::wire::Variable { name, type_: s.type_, id: s.id })
        .collect())
}

/// Deletes the deployment's stored variables.
pub async fn delete_all(store: &Store, deployment: &str) -> Result<(), Error> {
    let ctx = Ctx { store, deployment };
    let kvs = store.list_secrets(&prefix(deployment)).await.map_err(ctx.store_err())?;
    for (key, _) in kvs {
        store.delete_secret(&key).await.map_err(ctx.store_err())?;
    }
    Ok(())
}
