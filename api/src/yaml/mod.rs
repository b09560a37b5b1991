//! The single YAML entry point, with the YAML 1.1 habits BOSH manifests rely on.
//!
//! Ruby BOSH reads manifests with Psych (YAML 1.1), so real manifests say
//! `mode: 0755` meaning 493, `enabled: yes` meaning `true`, and share blocks
//! with `<<: *anchor`. Every YAML document bosh-rs reads goes through this
//! module so all of them get the same answers (see DEPENDENCY-NOTES.md,
//! "YAML / BOSH semantics"). Quoted scalars (`"0755"`, `"yes"`) stay strings.
//!
//! Loosely typed documents ([`parse_value`]) are read as bosh-cli's go-yaml
//! v2 reads them, map keys included (`on:` is the key `true`), and
//! [`to_bosh_string`] prints a value as `bosh interpolate` does (sorted
//! keys, go-yaml v2's quoting and layout), so output diffs empty against
//! bosh's. Deliberate differences are listed in `docs/differences.md`.

use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

mod emit;
mod float;
mod keys;
mod resolve;
mod value;

pub use emit::to_bosh_string;
pub use float::go_float;

/// A YAML document could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}{}: {message}", position(*.line, *.column))]
pub struct YamlError {
    /// The file (or other source name) the document came from.
    pub file: String,
    /// 1-based line of the problem, when the parser knows it.
    pub line: Option<u64>,
    /// 1-based column of the problem, when the parser knows it.
    pub column: Option<u64>,
    /// What went wrong.
    pub message: String,
}

fn position(line: Option<u64>, column: Option<u64>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(":{l}:{c}"),
        (Some(l), None) => format!(":{l}"),
        _ => String::new(),
    }
}

/// Limits on one YAML document, enforced while it is parsed (so a bomb is
/// refused before it expands). The defaults fit every real manifest: real
/// manifests alias a few small blocks (`env`, `update`), hundreds of
/// events, and nest a dozen levels; a billion-laughs bomb stops at the
/// alias limit instead of at serde-saphyr's default of a million replayed
/// events, which took ~100 ms and tens of MB per bomb (issue 12, F1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most events aliases may replay in one document (`boshd --yaml-max-alias-events`).
    pub max_alias_events: usize,
    /// Deepest nesting of mappings and sequences (`boshd --yaml-max-depth`).
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_alias_events: 100_000, max_depth: 64 }
    }
}

/// The process's limits: the defaults until a binary sets its own once at
/// start (boshd from its flags). Atomics, not a lock: every parse reads them.
static MAX_ALIAS_EVENTS: AtomicUsize = AtomicUsize::new(100_000);
static MAX_DEPTH: AtomicUsize = AtomicUsize::new(64);

/// Sets the limits every later parse in this process uses.
pub fn set_limits(l: Limits) {
    MAX_ALIAS_EVENTS.store(l.max_alias_events, Ordering::Relaxed);
    MAX_DEPTH.store(l.max_depth, Ordering::Relaxed);
}

/// The limits parses use now.
pub fn limits() -> Limits {
    Limits {
        max_alias_events: MAX_ALIAS_EVENTS.load(Ordering::Relaxed),
        max_depth: MAX_DEPTH.load(Ordering::Relaxed),
    }
}

/// Parser options shared by every read: YAML 1.1 octal, booleans and
/// merges, and the process's [`Limits`]. `non_finite` passes `.inf`,
/// `-.inf` and `.nan` on to the reader (loose reads keep them, see
/// [`non_finite`]); typed reads refuse them where no `f64` asks for them.
/// `null_as_string` reads a `~` or `null` wanted as a string as its text.
fn options(
    non_finite: serde_saphyr::NonFiniteFloatPolicy,
    duplicate_keys: serde_saphyr::DuplicateKeyPolicy,
    null_as_string: bool,
) -> serde_saphyr::Options {
    let l = limits();
    serde_saphyr::options! {
        duplicate_keys: duplicate_keys,
        null_as_string: null_as_string,
        legacy_octal_numbers: true,
        with_snippet: false,
        non_finite_float_policy: non_finite,
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: l.max_alias_events,
        },
        budget: serde_saphyr::budget! {
            max_depth: l.max_depth,
        },
    }
}

/// Which of our [`Limits`] an error breached, as "the limit, its value and
/// the flag", so the user learns what to change.
fn breached_limit(err: &serde_saphyr::Error) -> Option<String> {
    use serde_saphyr::Error as E;
    use serde_saphyr::budget::BudgetBreach;
    let l = limits();
    // The breach may come wrapped: in a snippet, or in where an alias led.
    let mut err = err.without_snippet();
    while let E::AliasError { error, .. } | E::WithSnippet { error, .. } = err {
        err = error;
    }
    match err {
        E::AliasReplayLimitExceeded { .. } => Some(format!(
            "over the limit of {} events replayed by aliases (boshd --yaml-max-alias-events)",
            l.max_alias_events
        )),
        E::Budget { breach: BudgetBreach::Depth { .. }, .. } => Some(format!(
            "over the limit of {} nested levels (boshd --yaml-max-depth)",
            l.max_depth
        )),
        _ => None,
    }
}

fn de_error(err: serde_saphyr::Error, file: &str) -> YamlError {
    let loc = err.location();
    let limit = breached_limit(&err);
    let message = err.without_snippet().to_string();
    let mut line = loc.map(|l| l.line()).filter(|l| *l > 0);
    let mut column = loc.map(|l| l.column()).filter(|c| *c > 0);
    // The rendered message may already end in "at line X, column Y" (more
    // than once when an error is wrapped); the position is printed once,
    // in front, so strip those tails. Our own reader's errors ([`value`])
    // carry their position only there, and the innermost is the most precise.
    let mut message = message;
    while let Some(i) = message.rfind(" at line ") {
        let tail = message[i + " at line ".len()..].split_once(", column ");
        match tail.and_then(|(l, c)| Some((l.parse().ok()?, c.parse().ok()?))) {
            Some((l, c)) => (line, column) = (Some(l), Some(c)),
            None if loc.is_none() => break,
            None => {}
        }
        message.truncate(i);
    }
    // Hints aimed at Rust callers of serde-saphyr mean nothing to a user.
    if let Some(i) = message.find(", set DuplicateKeyPolicy") {
        message.truncate(i);
    }
    if message.starts_with("multiple YAML documents") {
        message = "expected a single YAML document, found several (`---`)".to_string();
    }
    if let Some(limit) = limit {
        message = format!("{message}: {limit}");
    }
    YamlError { file: file.to_string(), line, column, message }
}

/// Parses one YAML document into a loosely typed value. An empty document is `null`.
///
/// Map keys resolve as YAML 1.1 scalars and are stored as their canonical
/// spelling (`on:` and `yes:` are the key `"true"`, `~:` is `"null"`,
/// `0x10:` is `"16"`); `.inf`, `-.inf` and `.nan` are kept as
/// [`non_finite`] values. Keys that are lists or maps are refused.
pub fn parse_value(src: &str, file: &str) -> Result<Value, YamlError> {
    // Keys are compared once resolved (`"on"` and `on` differ, `on` and
    // `true` do not), so duplicates are the reader's to find.
    loose::<false>(src, file, serde_saphyr::DuplicateKeyPolicy::PassThrough)
}

/// As [`parse_value`], but map keys keep the text they are written with
/// (`on:` is the key `"on"`, `~:` the key `"~"`): for files bosh-cli reads
/// into string-keyed maps and Ruby BOSH takes keys of as names, a release's
/// job and package specs and `config/blobs.yml`.
pub fn parse_value_keys_as_written(src: &str, file: &str) -> Result<Value, YamlError> {
    loose::<true>(src, file, serde_saphyr::DuplicateKeyPolicy::Error)
}

fn loose<const AS_WRITTEN: bool>(
    src: &str,
    file: &str,
    duplicate_keys: serde_saphyr::DuplicateKeyPolicy,
) -> Result<Value, YamlError> {
    if src.trim().is_empty() {
        return Ok(Value::Null);
    }
    // A `~` key kept as written is `~` (values are read by type, so a `~`
    // value is null either way).
    let opts = options(serde_saphyr::NonFiniteFloatPolicy::PassThrough, duplicate_keys, AS_WRITTEN);
    serde_saphyr::from_str_with_options::<value::Loose<AS_WRITTEN>>(src, opts)
        .map(|l| l.0)
        .map_err(|e| de_error(e, file))
}

/// The prefix of the strings that stand for non-finite floats: a Unicode
/// noncharacter (U+FDD0, "for internal use"), which no real document
/// contains.
const NON_FINITE_MARK: &str = "\u{FDD0}";

/// YAML's `.inf`, `-.inf` and `.nan` as a [`Value`].
///
/// JSON numbers (and so `serde_json` and the director's store) cannot be
/// infinite or NaN, so such a float is held as a string made of a reserved
/// prefix and its YAML spelling (`"\u{FDD0}.inf"`). [`to_bosh_string`]
/// prints it as `.inf`, bosh's spelling; the director's template renderer
/// turns it back into Ruby's `Float::INFINITY` (or `-Float::INFINITY`,
/// `Float::NAN`), which is what Ruby BOSH's templates see for `.inf`.
pub fn non_finite(f: f64) -> Value {
    let spelling = go_float(f);
    debug_assert!(!f.is_finite(), "{f} is finite");
    Value::String(format!("{NON_FINITE_MARK}{spelling}"))
}

/// The YAML spelling (`.inf`, `-.inf`, `.nan`) of a string made by [`non_finite`].
pub fn non_finite_spelling(s: &str) -> Option<&'static str> {
    match s.strip_prefix(NON_FINITE_MARK)? {
        ".inf" => Some(".inf"),
        "-.inf" => Some("-.inf"),
        ".nan" => Some(".nan"),
        _ => None,
    }
}

/// The float a [`non_finite`] value stands for.
pub fn as_non_finite(v: &Value) -> Option<f64> {
    match non_finite_spelling(v.as_str()?)? {
        ".inf" => Some(f64::INFINITY),
        "-.inf" => Some(f64::NEG_INFINITY),
        _ => Some(f64::NAN),
    }
}

/// Parses one YAML document straight into a typed value.
///
/// Prefer [`parse_value`] plus the validators in [`crate::manifest`] for
/// user documents: serde stops at the first error, the validators do not.
pub fn from_str<T: DeserializeOwned>(src: &str, file: &str) -> Result<T, YamlError> {
    let opts = options(
        serde_saphyr::NonFiniteFloatPolicy::Reject,
        serde_saphyr::DuplicateKeyPolicy::Error,
        false,
    );
    serde_saphyr::from_str_with_options(src, opts).map_err(|e| de_error(e, file))
}

/// Emits a typed value as a YAML document (block style, trailing newline),
/// fields in declaration order. Loosely typed documents a user reads back
/// (manifests, configs) go through [`to_bosh_string`] instead.
pub fn to_string<T: Serialize>(value: &T) -> Result<String, YamlError> {
    let mut out = serde_saphyr::to_string(value).map_err(|e| YamlError {
        file: "<output>".to_string(),
        line: None,
        column: None,
        message: e.to_string(),
    })?;
    if !out.ends_with('\n') {
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Legacy octal, YAML 1.1 booleans and merge keys parse the way Ruby's Psych reads them.
    #[test]
    fn yaml_1_1_habits_parse_like_psych() {
        let v = parse_value(
            "mode: 0755\nquoted: \"0755\"\na: yes\nb: no\nc: on\nd: off\n\
             base: &b {x: 1, z: 2}\nm:\n  <<: *b\n  z: 3\n",
            "t.yml",
        )
        .unwrap();
        assert_eq!(v["mode"], json!(493));
        assert_eq!(v["quoted"], json!("0755"));
        assert_eq!(
            (&v["a"], &v["b"], &v["c"], &v["d"]),
            (&json!(true), &json!(false), &json!(true), &json!(false))
        );
        assert_eq!(v["m"], json!({"x": 1, "z": 3}));
    }

    /// A syntax error names the file, line and column.
    #[test]
    fn syntax_error_names_file_and_line() {
        let err = parse_value("a: 1\nb: [1, 2\nc: 3\n", "bad.yml").unwrap_err();
        assert_eq!(err.file, "bad.yml");
        assert!(err.line.is_some(), "{err:?}");
        assert!(err.to_string().starts_with("bad.yml:"), "{err}");
    }

    /// A billion-laughs alias bomb is refused with its position, well before
    /// it expands (issue 12, F1).
    #[test]
    fn alias_bombs_are_refused_with_a_position() {
        let mut src = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for i in 1..9 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            src.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        let err = parse_value(&src, "bomb.yml").unwrap_err();
        assert_eq!(err.file, "bomb.yml");
        assert!(err.line.is_some(), "{err:?}");
        // Aliases within the budget still work.
        let v = parse_value("a: &a [1, 2]\nb: [*a, *a, *a]\n", "ok.yml").unwrap();
        assert_eq!(v["b"], json!([[1, 2], [1, 2], [1, 2]]));
    }

    /// Nesting past the depth limit is refused with the limit and its flag;
    /// the limits are the process's own (boshd sets them from flags).
    #[test]
    fn deep_nesting_is_refused_naming_the_limit_and_flag() {
        let deep = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        assert!(parse_value(&deep(40), "ok.yml").is_ok());
        let err = parse_value(&deep(200), "deep.yml").unwrap_err().to_string();
        assert!(err.starts_with("deep.yml"), "{err}");
        assert!(
            err.contains("over the limit of 64 nested levels (boshd --yaml-max-depth)"),
            "{err}"
        );
    }

    /// An alias bomb's error names the alias limit and its flag.
    #[test]
    fn alias_bomb_error_names_the_limit_and_flag() {
        let mut src = String::from("a0: &a0 [l, l, l, l, l, l, l, l, l, l]\n");
        for i in 1..7 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            src.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        let err = parse_value(&src, "bomb.yml").unwrap_err().to_string();
        assert!(
            err.contains("over the limit of 100000 events replayed by aliases (boshd --yaml-max-alias-events)"),
            "{err}"
        );
    }

    /// Issue 17, 3: scalars read as bosh's go-yaml v2 reads them (its
    /// `resolve.go` table and number rules), and print back as bosh prints
    /// them (`encode.go`: `.inf`, `-.inf`, `.nan`, Go's `%g` for floats).
    /// Expected values from reading go-yaml v2.4.0 (vendored by bosh-cli
    /// v7) and checked by running it on the same document.
    #[test]
    fn scalars_read_and_print_like_bosh() {
        let cases: &[(&str, Value, &str)] = &[
            (".inf", non_finite(f64::INFINITY), ".inf"),
            ("+.inf", non_finite(f64::INFINITY), ".inf"),
            (".Inf", non_finite(f64::INFINITY), ".inf"),
            (".INF", non_finite(f64::INFINITY), ".inf"),
            ("-.inf", non_finite(f64::NEG_INFINITY), "-.inf"),
            (".nan", non_finite(f64::NAN), ".nan"),
            (".NaN", non_finite(f64::NAN), ".nan"),
            ("y", json!(true), "true"),
            ("Y", json!(true), "true"),
            ("yes", json!(true), "true"),
            ("on", json!(true), "true"),
            ("n", json!(false), "false"),
            ("No", json!(false), "false"),
            ("OFF", json!(false), "false"),
            ("~", Value::Null, "null"),
            ("null", Value::Null, "null"),
            ("0x10", json!(16), "16"),
            ("0o17", json!(15), "15"),
            ("0b101", json!(5), "5"),
            ("0755", json!(493), "493"),
            ("1_000", json!(1000), "1000"),
            ("1.50", json!(1.5), "1.5"),
            ("1.0", json!(1.0), "1"),
            ("1e6", json!(1e6), "1e+06"),
            ("\"yes\"", json!("yes"), "\"yes\""),
            ("'0755'", json!("0755"), "\"0755\""),
            ("\".inf\"", json!(".inf"), "\".inf\""),
            // go-yaml v2 reads an unquoted timestamp into a Go interface as its text.
            ("2001-12-14", json!("2001-12-14"), "\"2001-12-14\""),
        ];
        for (text, value, printed) in cases {
            let v = parse_value(&format!("v: {text}\n"), "t.yml").unwrap();
            let got = &v["v"];
            let same = match (as_non_finite(got), as_non_finite(value)) {
                (Some(a), Some(b)) => a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                _ => got == value,
            };
            assert!(same, "{text}: read {got:?}, want {value:?}");
            assert_eq!(to_bosh_string(&v), format!("v: {printed}\n"), "{text}");
        }
    }

    /// Issue 17, 3: map keys resolve by the same rules as values and are
    /// stored as their canonical spelling, which prints as bosh prints the
    /// key (go-yaml v2 decodes keys into `map[interface{}]interface{}`
    /// with the same `resolve`; checked by running it). A quoted key stays
    /// a string.
    #[test]
    fn keys_resolve_like_values() {
        let cases: &[(&str, &str, &str)] = &[
            ("on", "true", "true"),
            ("yes", "true", "true"),
            ("y", "true", "true"),
            ("off", "false", "false"),
            ("n", "false", "false"),
            ("~", "null", "null"),
            ("null", "null", "null"),
            ("0x10", "16", "16"),
            ("1.50", "1.5", "1.5"),
            ("1.0", "1", "1"),
            ("1e3", "1000", "1000"),
            ("-1", "-1", "-1"),
            (".inf", ".inf", ".inf"),
            ("\"on\"", "on", "\"on\""),
            ("'0x10'", "0x10", "\"0x10\""),
            ("\"\"", "", "\"\""),
            ("name", "name", "name"),
        ];
        for (text, key, printed) in cases {
            let v = parse_value(&format!("{text}: x\n"), "t.yml").unwrap();
            let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
            assert_eq!(keys, [key], "{text}");
            assert_eq!(to_bosh_string(&v), format!("{printed}: x\n"), "{text}");
        }
    }

    /// A key of any scalar type never crashes the reader, and keys that
    /// are lists or maps (which go-yaml v2 cannot hold either) or that
    /// repeat once resolved are refused with a position. bosh takes the
    /// last of repeated keys silently; refusing them is deliberate (see
    /// docs/differences.md).
    #[test]
    fn odd_keys_are_read_or_refused_never_crash() {
        let v = parse_value("~: a\n\"on\": b\non: c\n", "t.yml").unwrap();
        assert_eq!(v, json!({"null": "a", "on": "b", "true": "c"}));
        let refused: &[(&str, &str, u64)] = &[
            (
                "a: 1\n? [1]\n: 2\n",
                "a mapping key must be a string, number, boolean or null, found a list",
                2,
            ),
            ("a: 1\n? {b: 1}\n: 2\n", "found a map", 2),
            (
                "on: 1\ntrue: 2\n",
                "duplicate mapping key: true (keys are compared as YAML 1.1 reads them",
                2,
            ),
            ("m:\n  ~: 1\n  null: 2\n", "duplicate mapping key: null", 3),
            ("1: a\n0x1: b\n", "duplicate mapping key: 1", 2),
            ("a: 1\na: 2\n", "duplicate mapping key: a", 2),
        ];
        for (src, want, line) in refused {
            let err = parse_value(src, "t.yml").unwrap_err();
            assert!(err.message.contains(want), "{src:?}: {err}");
            assert_eq!(err.line, Some(*line), "{src:?}: {err}");
        }
    }

    /// A release's specs and blobs.yml keep keys as written: bosh-cli reads
    /// them into string-keyed maps, and a key there is a name (a property
    /// called `y` is `y`); values are still read by type, and `~` as a key
    /// does not crash.
    #[test]
    fn keys_as_written_stay_text() {
        let v = parse_value_keys_as_written("y: yes\non: .inf\n~: 1\n0x10: x\n", "spec").unwrap();
        assert_eq!(v.as_object().unwrap().keys().collect::<Vec<_>>(), ["y", "on", "~", "0x10"]);
        assert_eq!(v["y"], json!(true));
        assert_eq!(as_non_finite(&v["on"]), Some(f64::INFINITY));
        let err = parse_value_keys_as_written("a: 1\na: 2\n", "spec").unwrap_err();
        assert!(err.message.starts_with("duplicate mapping key: a"), "{err}");
    }

    /// Typed reads still refuse a non-finite float where no float is wanted.
    #[test]
    fn typed_reads_refuse_non_finite_floats() {
        let err =
            from_str::<std::collections::BTreeMap<String, serde_json::Value>>("a: .inf\n", "t.yml")
                .unwrap_err();
        assert!(err.message.contains("non-finite"), "{err}");
    }

    /// Whatever a document holds, printing it and reading that back gives
    /// the same value (what `boshctl deploy` sends is what the director reads).
    #[test]
    fn printed_documents_read_back_the_same() {
        let src = "on: [.inf, -.inf, .nan, 1.5, 16, \"16\", \"on\", \"\", ~]\n\"on\": {0x10: 1.25e-9}\n\
                   text: \"a\\nb\\n\"\nempty: {}\nnone: []\nlong: \"x y z x y z x y z x y z x y z x y z x y z x y z x y z x y z x y z x y z x y z x y z\"\n";
        let v = parse_value(src, "t.yml").unwrap();
        let printed = to_bosh_string(&v);
        let back = parse_value(&printed, "printed").unwrap();
        // NaN is not equal to itself, so compare the printed forms, then
        // everything else by value (key order aside: printing sorts).
        assert_eq!(to_bosh_string(&back), printed);
        let mut without_nan = v.clone();
        without_nan["true"][2] = Value::Null;
        let mut back_without_nan = back.clone();
        back_without_nan["true"][2] = Value::Null;
        assert_eq!(back_without_nan, without_nan);
        assert_eq!(back["true"][0], non_finite(f64::INFINITY));
        assert!(as_non_finite(&back["true"][2]).is_some_and(f64::is_nan));
        assert_eq!(back["on"]["16"], json!(1.25e-9));
        assert_eq!(back["text"], json!("a\nb\n"));
    }

    /// Placeholders survive a parse and an emit as plain strings.
    #[test]
    fn placeholders_round_trip_as_strings() {
        let v = parse_value("a: ((x))\nb: [((y.z))]\n", "t.yml").unwrap();
        assert_eq!(v, json!({"a": "((x))", "b": ["((y.z))"]}));
        let out = to_string(&v).unwrap();
        assert_eq!(parse_value(&out, "out").unwrap(), v);
    }
}
