//! The single YAML entry point, with the YAML 1.1 habits BOSH manifests rely on.
//!
//! Ruby BOSH reads manifests with Psych (YAML 1.1), so real manifests say
//! `mode: 0755` meaning 493, `enabled: yes` meaning `true`, and share blocks
//! with `<<: *anchor`. Every YAML document bosh-rs reads goes through this
//! module so all of them get the same answers (see DEPENDENCY-NOTES.md,
//! "YAML / BOSH semantics"). Quoted scalars (`"0755"`, `"yes"`) stay strings.

use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Serialize, de::DeserializeOwned};

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
/// merges, and the process's [`Limits`].
fn options() -> serde_saphyr::Options {
    let l = limits();
    serde_saphyr::options! {
        legacy_octal_numbers: true,
        with_snippet: false,
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
    // The rendered message may already end in "at line X column Y"; the
    // position is printed once, in front, so strip that tail.
    let mut message = match message.rfind(" at line ") {
        Some(i) if loc.is_some() => message[..i].to_string(),
        _ => message,
    };
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
    YamlError {
        file: file.to_string(),
        line: loc.map(|l| l.line()).filter(|l| *l > 0),
        column: loc.map(|l| l.column()).filter(|c| *c > 0),
        message,
    }
}

/// Parses one YAML document into a loosely typed value. An empty document is `null`.
pub fn parse_value(src: &str, file: &str) -> Result<serde_json::Value, YamlError> {
    if src.trim().is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_saphyr::from_str_with_options(src, options()).map_err(|e| de_error(e, file))
}

/// Parses one YAML document straight into a typed value.
///
/// Prefer [`parse_value`] plus the validators in [`crate::manifest`] for
/// user documents: serde stops at the first error, the validators do not.
pub fn from_str<T: DeserializeOwned>(src: &str, file: &str) -> Result<T, YamlError> {
    serde_saphyr::from_str_with_options(src, options()).map_err(|e| de_error(e, file))
}

/// Emits a value as a YAML document (block style, trailing newline).
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
             base: &b {x: 1, y: 2}\nm:\n  <<: *b\n  y: 3\n",
            "t.yml",
        )
        .unwrap();
        assert_eq!(v["mode"], json!(493));
        assert_eq!(v["quoted"], json!("0755"));
        assert_eq!(
            (&v["a"], &v["b"], &v["c"], &v["d"]),
            (&json!(true), &json!(false), &json!(true), &json!(false))
        );
        assert_eq!(v["m"], json!({"x": 1, "y": 3}));
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

    /// Placeholders survive a parse and an emit as plain strings.
    #[test]
    fn placeholders_round_trip_as_strings() {
        let v = parse_value("a: ((x))\nb: [((y.z))]\n", "t.yml").unwrap();
        assert_eq!(v, json!({"a": "((x))", "b": ["((y.z))"]}));
        let out = to_string(&v).unwrap();
        assert_eq!(parse_value(&out, "out").unwrap(), v);
    }
}
