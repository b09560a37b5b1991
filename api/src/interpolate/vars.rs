//! `((var))` substitution with `bosh interpolate`'s rules.
//!
//! A string that is exactly one `((name))` becomes the variable's value with
//! its type (a map stays a map); a placeholder inside a longer string is
//! replaced by the value's text, which only makes sense for strings and
//! numbers. `((!a))` is `a`. As in bosh-cli, the part of a name after the
//! first `.` is a go-patch path into the variable's value, so `((a.b))` is
//! key `b` of map `a`, `((servers.0))` the first item of list `servers` and
//! `((creds.inner.pw))` a nested value; an index that finds nothing is
//! tried once more as a map key (`((m.0))` reads key `"0"` of a map).
//! Unknown variables are left in place (the config server resolves them
//! later) and reported when asked with `expect_all_keys`.

use std::collections::BTreeSet;

use indexmap::IndexMap;
use serde_json::{Map, Value};

use super::{
    Error,
    ops::find,
    pointer::{Pointer, Token},
};

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

/// Parses `-v name=value` as bosh-cli does: the value is read as YAML, so
/// `3` is a number, `true` a boolean, `~` null, `[a, b]` a list and
/// `{k: v}` (or `k: v`) a map; when it reads as a string, the text as
/// given is kept (minus one pair of wrapping quotes), so comments and line
/// breaks are not folded away. Unlike bosh, text that is not valid YAML
/// is kept as a string rather than refused, and an empty value is the
/// empty string (bosh refuses it).
pub fn parse_kv(arg: &str) -> Result<(String, Value), String> {
    let Some((name, raw)) = arg.split_once('=').filter(|(n, _)| !n.is_empty()) else {
        return Err(format!("expected name=value, found {arg:?}"));
    };
    let value = match crate::yaml::parse_value(raw, "-v") {
        Ok(v) if crate::yaml::as_non_finite(&v).is_some() => v,
        Ok(Value::String(_)) | Err(_) => Value::String(trim_wrapping_quotes(raw).to_string()),
        Ok(Value::Null) if raw.is_empty() => Value::String(String::new()),
        Ok(v) => v,
    };
    Ok((name.to_string(), value))
}

/// `'x'` and `"x"` lose their quotes (bosh-cli's `trimWrappingQuotes`).
fn trim_wrapping_quotes(s: &str) -> &str {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(b'"'), Some(b'"')) | (Some(b'\''), Some(b'\'')) if s.len() >= 2 => &s[1..s.len() - 1],
        _ => s,
    }
}

/// Combines the variables given on the command line the way bosh-cli
/// does: `sources` come in increasing precedence (`--vars-env`, then `-l`
/// files in order, then `--var-file`, then `-v`), and a dotted name nests:
/// `-v a.b=c` (or a key `a.b` in a `-l` file) sets key `b` of map `a`, so
/// `((a.b))` is `c` and `((a))` is `{b: c}`.
///
/// bosh-cli builds the nesting from an unordered Go map, so when the same
/// map is set both whole and by dotted names its result depends on that
/// order (or it panics); here the rule is fixed: later sources win, a
/// whole value replaces what earlier sources set, a dotted name adds to
/// (or replaces one key of) the map there, and within one source whole
/// names apply before dotted ones. A dotted name under a value that is not
/// a map is an error naming both.
pub fn static_vars(
    sources: impl IntoIterator<Item = IndexMap<String, Value>>,
) -> Result<IndexMap<String, Value>, Error> {
    let mut out: IndexMap<String, Value> = IndexMap::new();
    for source in sources {
        let (plain, mut dotted): (Vec<_>, Vec<_>) =
            source.into_iter().partition(|(name, _)| !name.contains('.'));
        for (name, value) in plain {
            out.insert(name, value);
        }
        dotted.sort_by_key(|(name, _)| name.matches('.').count());
        for (name, value) in dotted {
            let pieces: Vec<&str> = name.split('.').collect();
            let (leaf, parents) = pieces.split_last().expect("split yields one piece at least");
            let (top, inner) = parents.split_first().expect("a dotted name has a parent");
            let mut at = out.entry(top.to_string()).or_insert_with(|| Value::Object(Map::new()));
            for (depth, piece) in inner.iter().map(Some).chain([None]).enumerate() {
                let Value::Object(map) = at else {
                    let parent = pieces[..=depth].join(".");
                    return Err(Error::Var {
                        messages: vec![format!(
                            "variable '{name}' sets a key inside '{parent}', which is {} and not a map",
                            kind(at)
                        )],
                    });
                };
                match piece {
                    Some(p) => {
                        at = map.entry(p.to_string()).or_insert_with(|| Value::Object(Map::new()))
                    }
                    None => {
                        map.insert(leaf.to_string(), value);
                        break;
                    }
                }
            }
        }
    }
    Ok(out)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) if crate::yaml::as_non_finite(v).is_some() => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
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
    let run = Run { vars, missing: BTreeSet::new(), used: BTreeSet::new(), errors: Vec::new() };
    run.finish(doc, opts, |_| {})
}

/// [`interpolate`] as `bosh interpolate` does it for a whole document,
/// with its own `variables:` section taken into account (bosh-cli's
/// `director/template`): every declared variable counts as used, one with
/// no value counts as missing (`--var-errs` names it even when nothing
/// refers to it), and the declarations of variables that did get a value
/// are removed from the output, since the value replaces generating one.
pub fn interpolate_manifest(
    doc: &Value,
    vars: &Vars,
    opts: InterpolateOptions,
) -> Result<Value, Error> {
    let declared: Vec<&str> = doc
        .get("variables")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|d| d.get("name")?.as_str())
        .collect();
    let mut run = Run { vars, missing: BTreeSet::new(), used: BTreeSet::new(), errors: Vec::new() };
    let mut given = BTreeSet::new();
    for name in declared {
        run.used.insert(name.to_string());
        if vars.get(name).is_some() {
            given.insert(name.to_string());
        } else {
            run.missing.insert(name.to_string());
        }
    }
    run.finish(doc, opts, |out| {
        if let Some(Value::Array(defs)) = out.get_mut("variables") {
            defs.retain(|d| {
                !d.get("name").and_then(Value::as_str).is_some_and(|n| given.contains(n))
            });
        }
    })
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
    /// Substitutes `doc`, lets `post` adjust the result, and reports what
    /// `opts` insists on.
    fn finish(
        mut self,
        doc: &Value,
        opts: InterpolateOptions,
        post: impl FnOnce(&mut Value),
    ) -> Result<Value, Error> {
        let mut out = self.value(doc);
        if !self.errors.is_empty() {
            return Err(Error::Var { messages: self.errors });
        }
        post(&mut out);
        let missing: Vec<String> =
            if opts.expect_all_keys { self.missing.into_iter().collect() } else { Vec::new() };
        let unused: Vec<String> = if opts.expect_all_vars_used {
            self.vars.names().into_iter().filter(|n| !self.used.contains(n)).collect()
        } else {
            Vec::new()
        };
        if !missing.is_empty() || !unused.is_empty() {
            return Err(Error::Vars { missing, unused });
        }
        Ok(out)
    }

    fn value(&mut self, v: &Value) -> Value {
        match v {
            Value::String(s) => self.string(s),
            Value::Array(items) => Value::Array(items.iter().map(|i| self.value(i)).collect()),
            Value::Object(map) => {
                let mut out = Map::new();
                for (k, item) in map {
                    // A key that becomes a boolean, null or number is stored
                    // as the parser stores such keys: its canonical spelling.
                    let key = match self.string(k) {
                        Value::String(s) => match crate::yaml::non_finite_spelling(&s) {
                            Some(spelling) => spelling.to_string(),
                            None => s,
                        },
                        Value::Null => "null".to_string(),
                        Value::Bool(b) => b.to_string(),
                        Value::Number(n) => match n.as_f64() {
                            Some(f) if n.is_f64() => crate::yaml::go_float(f),
                            _ => n.to_string(),
                        },
                        other => {
                            self.errors.push(format!(
                                "the key {k:?} becomes {}; a key must be a string, number, boolean or null",
                                kind(&other)
                            ));
                            continue;
                        }
                    };
                    if out.contains_key(&key) {
                        // The value is not shown: it may be a secret.
                        self.errors.push(format!(
                            "the key {k:?} becomes a key the map already has once substituted"
                        ));
                        continue;
                    }
                    out.insert(key, self.value(item));
                }
                Value::Object(out)
            }
            other => other.clone(),
        }
    }

    /// Looks a name up; `None` when missing (recorded) or broken (error recorded).
    ///
    /// As bosh-cli: the name up to the first `.` is the variable, the rest
    /// (dots read as `/`) a go-patch path into its value; when that path
    /// fails, it is tried once more with every index read as a map key.
    fn lookup(&mut self, name: &str) -> Option<Value> {
        let (top, path) = match name.split_once('.') {
            Some((top, rest)) => (top, Some(format!("/{}", rest.replace('.', "/")))),
            None => (name, None),
        };
        let Some(v) = self.vars.get(top) else {
            self.missing.insert(top.to_string());
            return None;
        };
        self.used.insert(top.to_string());
        let Some(path) = path else { return Some(v.clone()) };
        let found = Pointer::parse(&path).and_then(|ptr| match find(v, &ptr) {
            Ok(found) => Ok(found.cloned().unwrap_or(Value::Null)),
            Err(first) => {
                let as_keys = Pointer {
                    tokens: ptr
                        .tokens
                        .iter()
                        .map(|t| match t {
                            Token::Index { index, .. } => {
                                Token::Key { key: index.to_string(), optional: false }
                            }
                            other => other.clone(),
                        })
                        .collect(),
                };
                find(v, &as_keys).map(|f| f.cloned().unwrap_or(Value::Null)).map_err(|_| first)
            }
        });
        match found {
            Ok(v) => Some(v),
            Err(e) => {
                self.errors.push(format!("Finding variable '{name}': {e}"));
                None
            }
        }
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
                Some(Value::String(text)) => match crate::yaml::non_finite_spelling(&text) {
                    Some(spelling) => out.push_str(spelling),
                    None => out.push_str(&text),
                },
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
        assert!(err.to_string().contains("Finding variable 'tls.ca'"), "{err}");
    }

    /// Issue 17, 1: the part after the first `.` is a go-patch path into
    /// the variable's value, so lists are indexed. Expected values are
    /// bosh's: read from bosh-cli's `director/template/template.go`
    /// (`varsLookup.Get`: `patch.NewPointerFromString("/" + rest joined by
    /// "/")`, a `FindOp`, and on failure the same path with each index
    /// token turned into a key token), and checked by running bosh-cli v7's
    /// own template package on the same input.
    #[test]
    fn variable_paths_index_lists_like_bosh() {
        let v = vars(json!({
            "servers": ["10.0.0.1", "10.0.0.2"],
            "creds": {"inner": {"pw": "secret"}},
            "m": {"0": "zero-key"},
            "deep": {"list": [{"name": "a"}, {"name": "b"}]},
            "port": 8080,
        }));
        let cases: &[(&str, Value)] = &[
            ("((servers.0))", json!("10.0.0.1")),
            ("((servers.1))", json!("10.0.0.2")),
            // A negative index counts from the end, as in go-patch.
            ("((servers.-1))", json!("10.0.0.2")),
            ("((creds.inner.pw))", json!("secret")),
            ("((creds.inner))", json!({"pw": "secret"})),
            // An index that is a map's key is read as the key (bosh's retry).
            ("((m.0))", json!("zero-key")),
            ("((deep.list.1.name))", json!("b")),
            ("((!servers.0))", json!("10.0.0.1")),
            ("host-((servers.0)):((port))", json!("host-10.0.0.1:8080")),
        ];
        for (placeholder, want) in cases {
            let out = interpolate(&json!({"x": placeholder}), &v, Default::default());
            assert_eq!(out.map(|o| o["x"].clone()), Ok(want.clone()), "{placeholder}");
        }
        // A path that leads nowhere is an error (bosh: "Finding variable ...").
        let errors: &[(&str, &str)] = &[
            ("((servers.5))", "Finding variable 'servers.5': Expected to find array index '5'"),
            (
                "((creds.nope))",
                "Finding variable 'creds.nope': Expected to find a map key 'nope' for path '/nope' (found map keys: 'inner')",
            ),
            (
                "((servers.x))",
                "Finding variable 'servers.x': Expected to find a map at path '/x' but found '[]interface {}'",
            ),
        ];
        for (placeholder, want) in errors {
            let err = interpolate(&json!({"x": placeholder}), &v, Default::default()).unwrap_err();
            assert!(err.to_string().starts_with(want), "{placeholder}: {err}");
        }
    }

    /// Issue 17, 2: dotted names given on the command line nest. Expected
    /// values are bosh's (bosh-cli `director/template/static_vars.go`,
    /// `processed`: each name is split on `.` into nested maps; and
    /// `cmd/opts/var_flags.go`: env, then `-l` files, then `--var-file`,
    /// then `-v`, later ones winning by name), checked by running bosh-cli
    /// v7's template package; where bosh's result depends on Go's map order
    /// the case says so and shows the fixed rule used here.
    #[test]
    fn dotted_names_nest_like_bosh() {
        let src = |v: Value| -> IndexMap<String, Value> {
            v.as_object().unwrap().clone().into_iter().collect()
        };
        let cases: Vec<(Vec<Value>, Value)> = vec![
            // `-v a.b=c`: ((a.b)) is c and ((a)) is {b: c}.
            (vec![json!({"a.b": "c"})], json!({"a": {"b": "c"}})),
            // Two dotted names under one map share it.
            (vec![json!({"a.b": "c", "a.d": "e"})], json!({"a": {"b": "c", "d": "e"}})),
            // Deeper names nest deeper.
            (vec![json!({"x.y.z": 1})], json!({"x": {"y": {"z": 1}}})),
            // A `-l` file's key `f.g` nests the same way.
            (
                vec![json!({"f.g": "from-file", "port": 1})],
                json!({"f": {"g": "from-file"}, "port": 1}),
            ),
            // A later source's dotted name adds to an earlier source's map
            // (bosh: the same, when Go happens to visit `a` first).
            (vec![json!({"a": {"x": 1}}), json!({"a.y": 2})], json!({"a": {"x": 1, "y": 2}})),
            // ... or replaces one of its keys.
            (vec![json!({"a": {"x": 1}}), json!({"a.x": 2})], json!({"a": {"x": 2}})),
            // A later whole value replaces the earlier map.
            (vec![json!({"a.x": 1}), json!({"a": "whole"})], json!({"a": "whole"})),
            // Sibling names at depth share their parents (bosh replaces
            // `a.b` when it meets `a.b.d`, keeping only one of them).
            (vec![json!({"a.b.c": 1, "a.b.d": 2})], json!({"a": {"b": {"c": 1, "d": 2}}})),
        ];
        for (sources, want) in cases {
            let got = static_vars(sources.iter().cloned().map(src)).unwrap();
            assert_eq!(Value::Object(got.into_iter().collect()), want, "{sources:?}");
        }
        // A dotted name under a value that is not a map is an error (bosh
        // panics or drops one of them, depending on Go's map order).
        let err = static_vars([src(json!({"a": 1})), src(json!({"a.b": 2}))]).unwrap_err();
        assert!(
            err.to_string().contains("variable 'a.b' sets a key inside 'a', which is a number"),
            "{err}"
        );
        // End to end: `-v a.b=c` resolves ((a.b)) and ((a)).
        let mut v = Vars::new();
        v.push_layer(static_vars([src(json!({"a.b": "c"}))]).unwrap());
        let out = interpolate(&json!({"x": "((a.b))", "y": "((a))"}), &v, Default::default());
        assert_eq!(out, Ok(json!({"x": "c", "y": {"b": "c"}})));
    }

    /// Declared variables: bosh drops the declarations of variables given
    /// a value, counts every declared one as used, and (with --var-errs)
    /// every declared one without a value as missing (bosh-cli
    /// `director/template/template.go`, `ExtractDefinitions`/`FoundVars`;
    /// checked against bosh-cli v7's template package on
    /// examples/manifests/deployment.yml).
    #[test]
    fn declared_variables_are_dropped_when_given_like_bosh() {
        let doc = json!({
            "p": "((given))",
            "variables": [{"name": "given", "type": "password"}, {"name": "generated", "type": "password"}],
        });
        let v = vars(json!({"given": "x"}));
        let out = interpolate_manifest(&doc, &v, Default::default()).unwrap();
        assert_eq!(
            out,
            json!({"p": "x", "variables": [{"name": "generated", "type": "password"}]})
        );
        let strict = InterpolateOptions { expect_all_keys: true, expect_all_vars_used: true };
        let err = interpolate_manifest(&doc, &v, strict).unwrap_err();
        assert_eq!(err.to_string(), "Expected to find variables: generated");
        // Declared and given but referenced nowhere still counts as used.
        let doc = json!({"variables": [{"name": "given", "type": "password"}]});
        assert_eq!(interpolate_manifest(&doc, &v, strict), Ok(json!({"variables": []})));
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

    /// `-v` values are read as bosh-cli's `VarKV` reads them
    /// (`director/template/var_kv.go`: YAML, and for a string the text as
    /// given less wrapping quotes), checked by running bosh-cli v7's
    /// `VarKV` on the same flags; env vars are taken by prefix.
    #[test]
    fn kv_and_env_sources_parse_values() {
        let cases: &[(&str, Value)] = &[
            ("n=3", json!(3)),
            ("s=a: b", json!({"a": "b"})),
            ("l=[1, 2]", json!([1, 2])),
            ("m={a: 1}", json!({"a": 1})),
            ("t=~", Value::Null),
            ("b=yes", json!(true)),
            ("o=0755", json!(493)),
            ("q='0755'", json!("0755")),
            ("q=\"q\"", json!("q")),
            ("c=a #c", json!("a #c")),
            ("ml=a\nb", json!("a\nb")),
            ("i=.inf", crate::yaml::non_finite(f64::INFINITY)),
            ("ni=-.inf", crate::yaml::non_finite(f64::NEG_INFINITY)),
            // Not bosh: bosh refuses an empty value and text that is not YAML.
            ("e=", json!("")),
            ("bad=a: b: c", json!("a: b: c")),
        ];
        for (arg, want) in cases {
            let (name, got) = parse_kv(arg).unwrap();
            assert_eq!((&got, name.as_str()), (want, arg.split('=').next().unwrap()), "{arg}");
        }
        assert!(parse_kv("novalue").is_err());
        let env = vars_from_env(
            "BOSH_VAR",
            [("BOSH_VAR_port".into(), "80".into()), ("OTHER".into(), "1".into())],
        );
        assert_eq!(env.get("port"), Some(&json!(80)));
        assert_eq!(env.len(), 1);
    }

    /// A placeholder key becomes the key its value spells (as the parser
    /// stores a typed key); a map or list, or a key the map already has,
    /// is an error (bosh panics on the first and keeps one on the second).
    #[test]
    fn placeholder_keys_become_canonical_keys() {
        let v = vars(json!({"b": true, "f": 1.0, "s": "x", "m": {"a": 1}}));
        let out = interpolate(&json!({"((b))": 1, "((f))": 2, "((s))": 3}), &v, Default::default());
        assert_eq!(out, Ok(json!({"true": 1, "1": 2, "x": 3})));
        let err = interpolate(&json!({"((m))": 1}), &v, Default::default()).unwrap_err();
        assert!(err.to_string().contains("becomes a map; a key must be"), "{err}");
        let err = interpolate(&json!({"((s))": 1, "x": 2}), &v, Default::default()).unwrap_err();
        assert!(err.to_string().contains("a key the map already has"), "{err}");
    }

    /// A non-finite float embedded in a string reads as YAML spells it.
    #[test]
    fn non_finite_values_embed_as_their_yaml_spelling() {
        let v = vars(json!({"i": crate::yaml::non_finite(f64::INFINITY)}));
        let out = interpolate(&json!({"w": "((i))", "e": "max-((i))"}), &v, Default::default());
        assert_eq!(out, Ok(json!({"w": crate::yaml::non_finite(f64::INFINITY), "e": "max-.inf"})));
    }
}
