//! Checks a loosely typed document against the JSON Schema generated from
//! the typed structs, collecting every error with its path.
//!
//! Driving the check from the schema keeps one source of truth: a key added
//! to a struct is accepted by validation and published in `crds-schemas/`
//! at once, and serde's first-error-only deserialization never runs on a
//! document that has not passed here. Only the schema keywords schemars
//! emits for our types are understood.

use serde_json::Value;

use super::{
    scalars,
    validate::{Report, did_you_mean, index_path, is_whole_placeholder, key_path},
};

/// Whether an un-interpolated `((var))` may stand where a number, boolean,
/// list or map is expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholders {
    /// Reject it, naming the variable: the document should be interpolated.
    Reject,
    /// Accept it: the document is checked before interpolation.
    Allow,
}

/// A schema walker bound to one root schema (for `$ref` lookups).
pub(crate) struct Shape<'s> {
    root: &'s Value,
    placeholders: Placeholders,
}

impl<'s> Shape<'s> {
    pub(crate) fn new(root: &'s Value, placeholders: Placeholders) -> Self {
        Shape { root, placeholders }
    }

    /// Checks `v` at `path` against the whole root schema.
    pub(crate) fn check_root(&self, v: &Value, report: &mut Report) {
        self.check(v, self.root, "", report);
    }

    fn resolve(&self, mut schema: &'s Value) -> &'s Value {
        for _ in 0..32 {
            let Some(r) = schema.get("$ref").and_then(Value::as_str) else { break };
            let Some(target) = r
                .strip_prefix("#/")
                .map(|p| p.split('/').try_fold(self.root, |node, seg| node.get(seg)))
            else {
                break;
            };
            match target {
                Some(t) => schema = t,
                None => break,
            }
        }
        schema
    }

    fn check(&self, v: &Value, schema: &'s Value, path: &str, report: &mut Report) {
        let schema = self.resolve(schema);
        match schema {
            Value::Bool(true) => return,
            Value::Bool(false) => return report.push(path, "no value is allowed here"),
            _ => {}
        }
        if let Some(branches) = schema.get("anyOf").or_else(|| schema.get("oneOf")) {
            let branches: Vec<&Value> =
                branches.as_array().into_iter().flatten().map(|b| self.resolve(b)).collect();
            return self.check_union(v, &branches, path, report);
        }
        if let Some(s) = v.as_str()
            && is_whole_placeholder(s)
            && !self.scalar_ok(schema, v)
        {
            if self.placeholders == Placeholders::Allow {
                return;
            }
            return report.push(
                path,
                format!("expected {}, found unresolved variable {s:?}", self.describe(schema)),
            );
        }
        if !self.accepts_type(schema, v) {
            return report.push(
                path,
                format!("expected {}, found {}", self.describe(schema), found(v, false)),
            );
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
            && !allowed.contains(v)
        {
            return report.push(
                path,
                format!("expected {}, found {}", self.describe(schema), found(v, true)),
            );
        }
        if let Some(c) = schema.get("const")
            && c != v
        {
            return report.push(path, format!("expected {c}, found {}", found(v, true)));
        }
        match v {
            Value::Number(n) => self.check_number(n, schema, path, report),
            Value::String(s) => {
                if let Some(f) = schema.get("format").and_then(Value::as_str)
                    && !scalars::format_ok(f, s)
                {
                    report.push(
                        path,
                        format!("expected {}, found {}", self.describe(schema), found(v, true)),
                    );
                }
            }
            Value::Array(items) => {
                if let Some(item_schema) = schema.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        self.check(item, item_schema, &index_path(path, i), report);
                    }
                }
            }
            Value::Object(map) => self.check_object(map, schema, path, report),
            _ => {}
        }
    }

    fn check_number(
        &self,
        n: &serde_json::Number,
        schema: &Value,
        path: &str,
        report: &mut Report,
    ) {
        let Some(x) = n.as_f64() else { return };
        let (mut min, mut max) = (
            schema.get("minimum").and_then(Value::as_f64),
            schema.get("maximum").and_then(Value::as_f64),
        );
        match schema.get("format").and_then(Value::as_str) {
            Some("uint32") => (min, max) = (Some(0.0), Some(f64::from(u32::MAX))),
            Some("int32") => (min, max) = (Some(f64::from(i32::MIN)), Some(f64::from(i32::MAX))),
            Some("uint64" | "uint") => min = Some(0.0),
            _ => {}
        }
        if let Some(m) = min
            && x < m
        {
            report.push(path, format!("expected {} >= {m}, found {n}", self.describe(schema)));
        } else if let Some(m) = max
            && x > m
        {
            report.push(path, format!("expected {} <= {m}, found {n}", self.describe(schema)));
        }
    }

    fn check_object(
        &self,
        map: &serde_json::Map<String, Value>,
        schema: &'s Value,
        path: &str,
        report: &mut Report,
    ) {
        let props = schema.get("properties").and_then(Value::as_object);
        let additional = schema.get("additionalProperties");
        for (k, item) in map {
            if let Some(s) = props.and_then(|p| p.get(k)) {
                self.check(item, s, &key_path(path, k), report);
            } else {
                match additional {
                    Some(Value::Bool(false)) => {
                        let known = props.into_iter().flat_map(|p| p.keys().map(String::as_str));
                        let hint = did_you_mean(k, known);
                        report.push(path, format!("unknown key {k:?}{hint}"));
                    }
                    Some(s) => self.check(item, s, &key_path(path, k), report),
                    None => {}
                }
            }
        }
        for req in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
            if let Some(req) = req.as_str()
                && !map.contains_key(req)
            {
                report.push(path, format!("required key {req:?} is missing"));
            }
        }
    }

    fn check_union(&self, v: &Value, branches: &[&'s Value], path: &str, report: &mut Report) {
        let passes = |b: &&'s Value| {
            let mut scratch = Report::default();
            self.check(v, b, path, &mut scratch);
            scratch.errors.is_empty()
        };
        if branches.iter().any(passes) {
            return;
        }
        let expected = self.describe_union(branches);
        if let Some(s) = v.as_str()
            && is_whole_placeholder(s)
        {
            if self.placeholders == Placeholders::Allow {
                return;
            }
            return report
                .push(path, format!("expected {expected}, found unresolved variable {s:?}"));
        }
        // Containers: descend into the one branch of the value's type, so the
        // error points inside the value rather than at it.
        let matching: Vec<&&Value> = branches.iter().filter(|b| self.accepts_type(b, v)).collect();
        if matches!(v, Value::Array(_) | Value::Object(_))
            && let [only] = matching.as_slice()
        {
            return self.check(v, only, path, report);
        }
        let show_value = !matching.is_empty();
        report.push(path, format!("expected {expected}, found {}", found(v, show_value)));
    }

    /// Whether a scalar passes the schema's type, `enum`, `const` and `format`.
    fn scalar_ok(&self, schema: &Value, v: &Value) -> bool {
        let fmt_ok = match (schema.get("format").and_then(Value::as_str), v.as_str()) {
            (Some(f), Some(s)) => scalars::format_ok(f, s),
            _ => true,
        };
        self.accepts_type(schema, v)
            && schema.get("enum").and_then(Value::as_array).is_none_or(|e| e.contains(v))
            && schema.get("const").is_none_or(|c| c == v)
            && fmt_ok
    }

    /// Whether the schema's `type` (absent = any) admits the value's JSON type.
    fn accepts_type(&self, schema: &Value, v: &Value) -> bool {
        let schema = self.resolve(schema);
        let Some(t) = schema.get("type") else {
            return true;
        };
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => return true,
        };
        types.iter().any(|t| match (*t, v) {
            ("null", Value::Null) | ("boolean", Value::Bool(_)) | ("string", Value::String(_)) => {
                true
            }
            ("number", Value::Number(_)) | ("array", Value::Array(_)) => true,
            ("object", Value::Object(_)) => true,
            ("integer", Value::Number(n)) => n.is_i64() || n.is_u64(),
            _ => false,
        })
    }

    /// What a schema expects, in words: `an integer`, `"service" or "errand"`.
    fn describe(&self, schema: &Value) -> String {
        let schema = self.resolve(schema);
        if let Some(branches) = schema.get("anyOf").or_else(|| schema.get("oneOf")) {
            let b: Vec<&Value> =
                branches.as_array().into_iter().flatten().map(|b| self.resolve(b)).collect();
            return self.describe_union(&b);
        }
        if let Some(c) = schema.get("const") {
            return c.to_string();
        }
        if let Some(e) = schema.get("enum").and_then(Value::as_array) {
            return or_list(e.iter().map(Value::to_string).collect());
        }
        if let Some(d) =
            schema.get("format").and_then(Value::as_str).and_then(scalars::format_description)
        {
            return d.to_string();
        }
        let types: Vec<&str> = match schema.get("type") {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => return "a value".to_string(),
        };
        or_list(
            types.into_iter().filter(|t| *t != "null").map(|t| type_words(t).to_string()).collect(),
        )
    }

    fn describe_union(&self, branches: &[&Value]) -> String {
        let mut parts: Vec<String> = Vec::new();
        for b in branches {
            if b.get("type").and_then(Value::as_str) == Some("null") {
                continue;
            }
            let d = self.describe(b);
            if !parts.contains(&d) {
                parts.push(d);
            }
        }
        or_list(parts)
    }
}

fn type_words(t: &str) -> &'static str {
    match t {
        "string" => "a string",
        "integer" => "an integer",
        "number" => "a number",
        "boolean" => "a boolean",
        "array" => "a list",
        "object" => "a map",
        "null" => "null",
        _ => "a value",
    }
}

fn or_list(parts: Vec<String>) -> String {
    match parts.as_slice() {
        [] => "a value".to_string(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// How a found value is named: by type, or by value when its type was right.
fn found(v: &Value, show_value: bool) -> String {
    if let Some(spelling) = v.as_str().and_then(crate::yaml::non_finite_spelling) {
        return format!("{spelling} (a float that is not finite)");
    }
    match v {
        Value::Null => "null".to_string(),
        Value::String(s) if show_value => format!("{s:?}"),
        Value::Number(n) if show_value => n.to_string(),
        Value::Bool(b) if show_value => b.to_string(),
        Value::String(_) => "a string".to_string(),
        Value::Number(_) => "a number".to_string(),
        Value::Bool(_) => "a boolean".to_string(),
        Value::Array(_) => "a list".to_string(),
        Value::Object(_) => "a map".to_string(),
    }
}
