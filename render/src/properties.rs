//! Property resolution as the director does it before rendering
//! (bosh-template's `copy_property`): a job sees only what its spec
//! declares, each the manifest's value at the dotted path (unless absent or
//! null), else the default, else nil. A manifest hash replaces a default
//! hash whole; every hash is sorted by key at every depth, except hashes
//! inside arrays, which keep the manifest's order (as the director's
//! properties reach templates).

use bosh_api::release::JobSpec;
use serde_json::{Map, Value};

/// Strings shorter than this are not redacted from error messages: too
/// likely to be ordinary words, too short to be secrets.
const MIN_REDACTED_LEN: usize = 4;

/// A job's properties as its templates see them.
#[derive(Debug, PartialEq)]
pub(super) struct JobProperties {
    /// Nested properties (`{"a": {"b": 1}}` for a declared `a.b`).
    pub value: Value,
    /// Every string the manifest (not a default) supplied.
    pub secrets: Vec<String>,
}

/// Resolves `spec`'s declared properties against the manifest's
/// `properties` for the job. `Err` is BOSH's message for a scalar where a
/// dotted property needs a hash.
pub(super) fn of_job(spec: &JobSpec, manifest: &Value) -> Result<JobProperties, String> {
    let mut value = Value::Object(Map::new());
    let mut secrets = Vec::new();
    for (name, def) in &spec.properties {
        let found = lookup(manifest, name)?;
        let v = match found {
            Some(v) => {
                collect_strings(v, &mut secrets);
                v.clone()
            }
            None => def.default.clone().unwrap_or(Value::Null),
        };
        set(&mut value, name, v);
    }
    sort_hashes(&mut value);
    Ok(JobProperties { value, secrets })
}

/// The manifest's value at a dotted path; `None` when unset or null.
fn lookup<'a>(manifest: &'a Value, name: &str) -> Result<Option<&'a Value>, String> {
    let mut at = manifest;
    for key in name.split('.') {
        match at {
            Value::Null => return Ok(None),
            Value::Object(m) => at = m.get(key).unwrap_or(&Value::Null),
            other => {
                return Err(format!(
                    "Property '{name}' expects a hash, but received '{}'",
                    ruby_class(other)
                ));
            }
        }
    }
    Ok((!at.is_null()).then_some(at))
}

/// Sorts every hash by key, recursively, but not inside arrays.
fn sort_hashes(v: &mut Value) {
    if let Value::Object(m) = v {
        let mut entries: Vec<(String, Value)> = std::mem::take(m).into_iter().collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        for (k, mut child) in entries {
            sort_hashes(&mut child);
            m.insert(k, child);
        }
    }
}

/// Sets `value` at a dotted path, making hashes on the way.
fn set(root: &mut Value, name: &str, value: Value) {
    let keys: Vec<&str> = name.split('.').collect();
    let mut at = root;
    for key in &keys[..keys.len() - 1] {
        if !at.is_object() {
            *at = Value::Object(Map::new());
        }
        let m = at.as_object_mut().expect("just made an object");
        at = m.entry(*key).or_insert_with(|| Value::Object(Map::new()));
    }
    if !at.is_object() {
        *at = Value::Object(Map::new());
    }
    at.as_object_mut().expect("just made an object").insert(keys[keys.len() - 1].into(), value);
}

fn ruby_class(v: &Value) -> &'static str {
    match v {
        Value::Null => "NilClass",
        Value::Bool(true) => "TrueClass",
        Value::Bool(false) => "FalseClass",
        Value::Number(n) if n.is_f64() => "Float",
        Value::Number(_) => "Integer",
        // `.inf`/`.nan` (see `bosh_api::yaml::non_finite`): a Float to Ruby.
        Value::String(_) if bosh_api::yaml::as_non_finite(v).is_some() => "Float",
        Value::String(_) => "String",
        Value::Array(_) => "Array",
        Value::Object(_) => "Hash",
    }
}

/// Adds every string leaf of `v` to `out`.
pub(super) fn collect_strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) if bosh_api::yaml::non_finite_spelling(s).is_none() => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|i| collect_strings(i, out)),
        Value::Object(m) => m.values().for_each(|i| collect_strings(i, out)),
        _ => {}
    }
}

/// The strings worth redacting, longest first (so a secret containing
/// another is replaced whole), without duplicates.
pub(super) fn redaction_list(mut secrets: Vec<String>) -> Vec<String> {
    secrets.retain(|s| s.chars().count() >= MIN_REDACTED_LEN);
    secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    secrets.dedup();
    secrets
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec(props: &str) -> JobSpec {
        JobSpec::parse(&format!("name: j\nproperties:\n{props}"), "job.MF").unwrap()
    }

    /// Only declared properties are visible; the manifest wins over defaults.
    #[test]
    fn of_job_keeps_only_declared_properties_with_defaults() {
        let s = spec("  port: {default: 8080}\n  tls.cert: ~\n  name: {default: x}\n");
        let r =
            of_job(&s, &json!({"name": "given", "tls": {"cert": "PEM!", "key": "k"}, "other": 1}))
                .unwrap();
        assert_eq!(r.value, json!({"name": "given", "port": 8080, "tls": {"cert": "PEM!"}}));
        assert_eq!(r.secrets, vec!["PEM!".to_owned(), "given".to_owned()]);
    }

    /// Hashes come sorted by key at every depth, except inside arrays; a
    /// manifest hash replaces a default hash whole; null takes the default
    /// and `false`, `0` and `""` do not.
    #[test]
    fn of_job_sorts_hashes_except_in_arrays_and_replaces_default_hashes() {
        let s = spec(
            "  z: ~\n  a: {default: {k: 1, j: 2}}\n  n: {default: 5}\n  f: {default: true}\n  \
             zero: {default: 1}\n  empty: {default: x}\n",
        );
        let m = json!({
            "z": {"b": 1, "a": {"y": 1, "x": 2}, "list": [{"q": 1, "p": 2}]},
            "a": {"m": 3},
            "n": null,
            "f": false,
            "zero": 0,
            "empty": "",
        });
        let r = of_job(&s, &m).unwrap();
        let text = serde_json::to_string(&r.value).unwrap();
        assert_eq!(
            text,
            r#"{"a":{"m":3},"empty":"","f":false,"n":5,"z":{"a":{"x":2,"y":1},"b":1,"list":[{"q":1,"p":2}]},"zero":0}"#
        );
    }

    /// A manifest scalar where a dotted property needs a hash is BOSH's error.
    #[test]
    fn of_job_refuses_a_scalar_on_a_dotted_path() {
        let s = spec("  tls.cert: ~\n");
        let err = of_job(&s, &json!({"tls": "oops"})).unwrap_err();
        assert_eq!(err, "Property 'tls.cert' expects a hash, but received 'String'");
    }
}
