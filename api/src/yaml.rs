//! The single YAML entry point, with the YAML 1.1 habits BOSH manifests rely on.
//!
//! Ruby BOSH reads manifests with Psych (YAML 1.1), so real manifests say
//! `mode: 0755` meaning 493, `enabled: yes` meaning `true`, and share blocks
//! with `<<: *anchor`. Every YAML document bosh-rs reads goes through this
//! module so all of them get the same answers (see DEPENDENCY-NOTES.md,
//! "YAML / BOSH semantics"). Quoted scalars (`"0755"`, `"yes"`) stay strings.

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

/// Most YAML events aliases may replay in one document. Real manifests
/// alias a few small blocks (`env`, `update`), hundreds of events; a
/// billion-laughs bomb stops here instead of at serde-saphyr's default of a
/// million, which took ~100 ms and tens of MB per bomb (issue 12, F1).
const MAX_REPLAYED_EVENTS: usize = 100_000;

/// Parser options shared by every read: YAML 1.1 octal, booleans and merges.
fn options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        legacy_octal_numbers: true,
        with_snippet: false,
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: MAX_REPLAYED_EVENTS,
        },
    }
}

fn de_error(err: serde_saphyr::Error, file: &str) -> YamlError {
    let loc = err.location();
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

    /// Placeholders survive a parse and an emit as plain strings.
    #[test]
    fn placeholders_round_trip_as_strings() {
        let v = parse_value("a: ((x))\nb: [((y.z))]\n", "t.yml").unwrap();
        assert_eq!(v, json!({"a": "((x))", "b": ["((y.z))"]}));
        let out = to_string(&v).unwrap();
        assert_eq!(parse_value(&out, "out").unwrap(), v);
    }
}
