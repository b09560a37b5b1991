//! `((var))` substitution with `bosh interpolate`'s rules.
//!
//! A string that is exactly one `((name))` becomes the variable's value with
//! its type (a map stays a map); a placeholder inside a longer string is
//! replaced by the value's text, which only makes sense for strings and
//! numbers. `((a.b))` looks up key `b` of variable `a`, and `((!a))` is `a`.
//! Unknown variables are left in place (the config server resolves them
//! later) and reported when asked with `expect_all_keys`.

use std::collections::BTreeSet;

use indexmap::IndexMap;
use serde_json::{Map, Value};

use super::Error;

/// Variable sources in lookup order: the first layer that has a name wins.
#[derive(Debug, Clone, Default)]
pub struct Vars {
    layers: Vec<IndexMap<String, Value>>,
}

impl Vars {
    /// No variables.
    pub fn new() -> Self {
        Vars::default()
    }

    /// Adds a layer consulted after the existing ones.
    pub fn push_layer(&mut self, values: IndexMap<String, Value>) {
        self.layers.push(values);
    }

    /// The value of a top-level variable.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.layers.iter().find_map(|l| l.get(name))
    }

    /// Every variable name any layer defines.
    pub fn names(&self) -> BTreeSet<String> {
        self.layers.iter().flat_map(|l| l.keys().cloned()).collect()
    }
}

/// Parses `-v name=value`: the value is read as a YAML scalar (`3` is a
/// number, `true` a boolean), and kept as text when that fails or gives a
/// list or map.
pub fn parse_kv(arg: &str) -> Result<(String, Value), String> {
    let Some((name, raw)) = arg.split_once('=').filter(|(n, _)| !n.is_empty()) else {
        return Err(format!("expected name=value, found {arg:?}"));
    };
    let value = match crate::yaml::parse_value(raw, "-v") {
        Ok(v @ (Value::Bool(_) | Value::Number(_) | Value::String(_))) => v,
        Ok(Value::Null) if !raw.is_empty() => Value::Null,
        _ => Value::String(raw.to_string()),
    };
    Ok((name.to_string(), value))
}

/// Reads a vars file: a YAML map of names to values.
pub fn parse_vars_file(src: &str, file: &str) -> Result<IndexMap<String, Value>, Error> {
    match crate::yaml::parse_value(src, file)? {
        Value::Null => Ok(IndexMap::new()),
        Value::Object(m) => Ok(m.into_iter().collect()),
        _ => Err(Error::VarsFile {
            file: file.to_string(),
            message: "expected a map of variables".into(),
        }),
    }
}

/// Variables from `PREFIX_name=value` environment entries, values read as YAML.
pub fn vars_from_env(
    prefix: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> IndexMap<String, Value> {
    let want = format!("{prefix}_");
    let mut out: Vec<(String, Value)> = env
        .into_iter()
        .filter_map(|(k, v)| {
            let name = k.strip_prefix(&want)?.to_string();
            let value = crate::yaml::parse_value(&v, &k).unwrap_or(Value::String(v));
            Some((name, value))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out.into_iter().collect()
}

/// What interpolation should insist on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InterpolateOptions {
    /// Fail when a variable has no value (`--var-errs`).
    pub expect_all_keys: bool,
    /// Fail when a given variable is never used (`--var-errs-unused`).
    pub expect_all_vars_used: bool,
}

/// Substitutes every `((var))` in `doc`, map keys included.
pub fn interpolate(doc: &Value, vars: &Vars, opts: InterpolateOptions) -> Result<Value, Error> {
    let mut run = Run { vars, missing: BTreeSet::new(), used: BTreeSet::new(), errors: Vec::new() };
    let out = run.value(doc);
    if !run.errors.is_empty() {
        return Err(Error::Var { messages: run.errors });
    }
    let missing: Vec<String> =
        if opts.expect_all_keys { run.missing.into_iter().collect() } else { Vec::new() };
    let unused: Vec<String> = if opts.expect_all_vars_used {
        vars.names().into_iter().filter(|n| !run.used.contains(n)).collect()
    } else {
        Vec::new()
    };
    if !missing.is_empty() || !unused.is_empty() {
        return Err(Error::Vars { missing, unused });
    }
    Ok(out)
}

struct Run<'v> {
    vars: &'v Vars,
    missing: BTreeSet<String>,
    used: BTreeSet<String>,
    errors: Vec<String>,
}

/// A `((name))` occurrence: byte range and the name without `!`.
struct Found {
    start: usize,
    end: usize,
    name: String,
}

fn is_name_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-' | '/' | '.')
}

/// Finds placeholders the way bosh-cli's `\(\((!?[-/\.\w\pL]+)\)\)` does.
fn placeholders(s: &str) -> Vec<Found> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(rel) = s[from..].find("((") {
        let start = from + rel;
        let body = &s[start + 2..];
        let bang = usize::from(body.starts_with('!'));
        let name_len: usize =
            body[bang..].chars().take_while(|c| is_name_char(*c)).map(char::len_utf8).sum();
        if name_len > 0 && body[bang + name_len..].starts_with("))") {
            let end = start + 2 + bang + name_len + 2;
            out.push(Found { start, end, name: body[bang..bang + name_len].to_string() });
            from = end;
        } else {
            from = start + 1;
        }
    }
    out
}

impl Run<'_> {
    fn value(&mut self, v: &Value) -> Value {
        match v {
            Value::String(s) => self.string(s),
            Value::Array(items) => Value::Array(items.iter().map(|i| self.value(i)).collect()),
            Value::Object(map) => {
                let mut out = Map::new();
                for (k, item) in map {
                    let key = match self.string(k) {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    out.insert(key, self.value(item));
                }
                Value::Object(out)
            }
            other => other.clone(),
        }
    }

    /// Looks a name up; `None` when missing (recorded) or broken (error recorded).
    fn lookup(&mut self, name: &str) -> Option<Value> {
        let mut parts = name.split('.');
        let top = parts.next().unwrap_or_default();
        let Some(mut v) = self.vars.get(top) else {
            self.missing.insert(top.to_string());
            return None;
        };
        self.used.insert(top.to_string());
        for key in parts {
            match v.get(key) {
                Some(next) => v = next,
                None => {
                    self.errors
                        .push(format!("Expected to find variable '{top}' with a key '{key}'"));
                    return None;
                }
            }
        }
        Some(v.clone())
    }

    fn string(&mut self, s: &str) -> Value {
        let found = placeholders(s);
        if let [one] = found.as_slice()
            && one.start == 0
            && one.end == s.len()
        {
            return self.lookup(&one.name).unwrap_or_else(|| Value::String(s.to_string()));
        }
        if found.is_empty() {
            return Value::String(s.to_string());
        }
        let mut out = String::with_capacity(s.len());
        let mut last = 0;
        for f in &found {
            out.push_str(&s[last..f.start]);
            match self.lookup(&f.name) {
                Some(Value::String(text)) => out.push_str(&text),
                Some(Value::Number(n)) => out.push_str(&n.to_string()),
                Some(other) => {
                    let kind = match other {
                        Value::Null => "null",
                        Value::Bool(_) => "a boolean",
                        Value::Array(_) => "a list",
                        _ => "a map",
                    };
                    self.errors.push(format!(
                        "variable '{}' is {kind}; only strings and numbers can be embedded in a string ({s:?})",
                        f.name
                    ));
                    out.push_str(&s[f.start..f.end]);
                }
                None => out.push_str(&s[f.start..f.end]),
            }
            last = f.end;
        }
        out.push_str(&s[last..]);
        Value::String(out)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn vars(v: Value) -> Vars {
        let mut vars = Vars::new();
        vars.push_layer(v.as_object().unwrap().clone().into_iter().collect());
        vars
    }

    /// A whole-value placeholder keeps the value's type; an embedded one becomes text.
    #[test]
    fn whole_values_keep_their_type_and_embedded_ones_become_text() {
        let doc = json!({"n": "((port))", "url": "http://((host)):((port))/", "m": "((cfg))", "k": "((!port))"});
        let out = interpolate(
            &doc,
            &vars(json!({"port": 8080, "host": "h", "cfg": {"a": [1]}})),
            InterpolateOptions::default(),
        )
        .unwrap();
        assert_eq!(out, json!({"n": 8080, "url": "http://h:8080/", "m": {"a": [1]}, "k": 8080}));
    }

    /// `((a.b))` reads a key of a map variable; a missing key is an error.
    #[test]
    fn sub_keys_read_into_map_variables() {
        let v = vars(json!({"tls": {"certificate": "CERT"}}));
        let out =
            interpolate(&json!({"c": "((tls.certificate))"}), &v, Default::default()).unwrap();
        assert_eq!(out, json!({"c": "CERT"}));
        let err = interpolate(&json!({"c": "((tls.ca))"}), &v, Default::default()).unwrap_err();
        assert!(err.to_string().contains("'tls' with a key 'ca'"), "{err}");
    }

    /// Missing variables stay in place unless every variable is required.
    #[test]
    fn missing_variables_stay_unless_required() {
        let doc = json!({"a": "((x))", "b": "pre-((y))", "c": "((z))"});
        let v = vars(json!({"z": 1, "unused": 2}));
        let out = interpolate(&doc, &v, Default::default()).unwrap();
        assert_eq!(out, json!({"a": "((x))", "b": "pre-((y))", "c": 1}));
        let strict = InterpolateOptions { expect_all_keys: true, expect_all_vars_used: true };
        let err = interpolate(&doc, &v, strict).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Expected to find variables: x, y\nExpected to use variables: unused"
        );
    }

    /// Maps and lists cannot be embedded inside a longer string.
    #[test]
    fn maps_cannot_be_embedded_in_strings() {
        let err = interpolate(
            &json!({"a": "x-((m))"}),
            &vars(json!({"m": {"k": 1}})),
            Default::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("variable 'm' is a map"), "{err}");
    }

    /// `-v` values are YAML scalars, and env vars are taken by prefix.
    #[test]
    fn kv_and_env_sources_parse_values() {
        assert_eq!(parse_kv("n=3").unwrap(), ("n".to_string(), json!(3)));
        assert_eq!(parse_kv("s=a: b").unwrap(), ("s".to_string(), json!("a: b")));
        assert_eq!(parse_kv("e=").unwrap(), ("e".to_string(), json!("")));
        assert!(parse_kv("novalue").is_err());
        let env = vars_from_env(
            "BOSH_VAR",
            [("BOSH_VAR_port".into(), "80".into()), ("OTHER".into(), "1".into())],
        );
        assert_eq!(env.get("port"), Some(&json!(80)));
        assert_eq!(env.len(), 1);
    }
}
