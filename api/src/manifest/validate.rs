//! Error collection shared by the shape and semantic checks: paths in BOSH
//! style (`instance_groups[2].jobs[0].release`) and small value accessors
//! that quietly skip what the shape check already reported.

use serde_json::Value;

use super::ValidationError;
use crate::names::{self, NameError};

/// One of the checks of [`crate::names`]: names, versions or variable names.
pub(crate) type NameRule = fn(&str) -> Result<(), NameError>;

/// Collects errors instead of stopping at the first one.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub(crate) errors: Vec<ValidationError>,
}

/// Longest message kept, in bytes. Messages quote the values they reject, and
/// a 10 MB value must not come back whole in every error, log line and status
/// condition (issue 12, F1: fuzzed manifests with 10 MB strings).
pub(crate) const MAX_MESSAGE_BYTES: usize = 1024;

impl Report {
    /// Records one error at `path`; a message over [`MAX_MESSAGE_BYTES`] is cut.
    pub(crate) fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let mut message = message.into();
        if message.len() > MAX_MESSAGE_BYTES {
            let total = message.len();
            let mut cut = MAX_MESSAGE_BYTES;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str(&format!("... (message cut, {total} bytes)"));
        }
        self.errors.push(ValidationError { path: path.into(), message });
    }
}

/// `path.key`, or `key` at the root.
pub(crate) fn key_path(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

/// `path[i]`.
pub(crate) fn index_path(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// Whether a string is exactly one `((placeholder))`.
pub(crate) fn is_whole_placeholder(s: &str) -> bool {
    let t = s.trim();
    t.starts_with("((") && t.ends_with("))") && !t[2..t.len() - 2].contains("((")
}

/// Whether a string still holds a `((placeholder))` anywhere; references
/// through such a string are not checked because their target is unknown.
pub(crate) fn has_placeholder(s: &str) -> bool {
    s.find("((").is_some_and(|i| s[i..].contains("))"))
}

/// The items of the list under `key`, with their paths; nothing if it is not a list.
pub(crate) fn list<'a>(
    v: &'a Value,
    path: &str,
    key: &str,
) -> impl Iterator<Item = (String, &'a Value)> + use<'a> {
    let base = key_path(path, key);
    v.get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        .map(move |(i, item)| (index_path(&base, i), item))
}

/// The string under `key`, if it is one.
pub(crate) fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// The strings of the list under `key`, with their paths.
pub(crate) fn strs<'a>(
    v: &'a Value,
    path: &str,
    key: &str,
) -> impl Iterator<Item = (String, &'a str)> + use<'a> {
    list(v, path, key).filter_map(|(p, item)| item.as_str().map(|s| (p, s)))
}

/// Reports `value` at `path` if it breaks `rule`; a value still holding a
/// `((placeholder))` is left for the check after interpolation.
pub(crate) fn check_rule(report: &mut Report, path: String, value: &str, rule: NameRule) {
    if has_placeholder(value) {
        return;
    }
    if let Err(e) = rule(value) {
        report.push(path, e.to_string());
    }
}

/// Checks the string under `key` of `v` (at `path`) against `rule`, if it is one.
pub(crate) fn name_at(v: &Value, path: &str, key: &str, rule: NameRule, report: &mut Report) {
    if let Some(s) = str_of(v, key) {
        check_rule(report, key_path(path, key), s, rule);
    }
}

/// Checks every string of the list under `key` against the name rule.
pub(crate) fn names_in(v: &Value, path: &str, key: &str, report: &mut Report) {
    for (p, s) in strs(v, path, key) {
        check_rule(report, p, s, names::check_name);
    }
}

/// The items of the list under `key` are named things: each `name` follows
/// the name rule and none repeats an earlier one.
pub(crate) fn named_list(v: &Value, path: &str, key: &str, what: &str, report: &mut Report) {
    for (p, item) in list(v, path, key) {
        name_at(item, &p, "name", names::check_name, report);
    }
    unique_names(v, path, key, what, report);
}

/// Reports items of a list whose `name` repeats an earlier item's.
pub(crate) fn unique_names(v: &Value, path: &str, key: &str, what: &str, report: &mut Report) {
    let mut seen: Vec<(&str, String)> = Vec::new();
    for (p, item) in list(v, path, key) {
        let Some(name) = str_of(item, "name") else { continue };
        if let Some((_, first)) = seen.iter().find(|(n, _)| *n == name) {
            report.push(
                key_path(&p, "name"),
                format!("duplicate {what} name {name:?} (first at {first})"),
            );
        } else {
            seen.push((name, p));
        }
    }
}

/// Names defined by the list under `key` (items' `name`), for reference checks.
pub(crate) fn names<'a>(v: &'a Value, key: &str) -> Vec<&'a str> {
    list(v, "", key).filter_map(|(_, item)| str_of(item, "name")).collect()
}

/// Reports `name` at `path` unless it is one of `known` (or a placeholder).
pub(crate) fn check_ref(
    report: &mut Report,
    path: String,
    name: &str,
    known: &[&str],
    what: &str,
    where_: &str,
) {
    if has_placeholder(name) || known.contains(&name) {
        return;
    }
    let hint = did_you_mean(name, known.iter().copied());
    report.push(path, format!("{what} {name:?} is not defined in {where_}{hint}"));
}

/// ` (did you mean "x"?)` when a known name is a likely typo of `name`.
pub(crate) fn did_you_mean<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> String {
    let len = name.chars().count();
    known
        // The distance is at least the difference in length: skip names that
        // cannot be near misses before the quadratic part (a 10 MB value
        // against a few names took seconds).
        .filter(|k| len.abs_diff(k.chars().count()) <= 2.max(k.len() / 4))
        .map(|k| (edit_distance(name, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4) && *d < k.len())
        .min()
        .map(|(_, k)| format!(" (did you mean {k:?}?)"))
        .unwrap_or_default()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Typos close to a known name get a suggestion; unrelated names do not.
    #[test]
    fn suggestions_only_for_near_misses() {
        let known = ["vm_type", "vm_resources", "instances"];
        assert_eq!(did_you_mean("vm_tpye", known.iter().copied()), r#" (did you mean "vm_type"?)"#);
        assert_eq!(did_you_mean("colour", known.iter().copied()), "");
    }

    /// A huge value gets no suggestion, without comparing it character by
    /// character (issue 12, F1: a 10 MB name took seconds per reference).
    #[test]
    fn huge_names_get_no_suggestion_and_skip_the_distance() {
        let huge = "vm_type".repeat(1 << 20);
        assert_eq!(did_you_mean(&huge, ["vm_type", "instances"].into_iter()), "");
        assert_eq!(
            did_you_mean("vm_typ", ["vm_type"].into_iter()),
            r#" (did you mean "vm_type"?)"#
        );
    }

    /// A message quoting a 10 MB value is cut, on a character boundary, and
    /// says how long it was (issue 12, F1).
    #[test]
    fn report_cuts_messages_that_quote_huge_values() {
        let mut report = Report::default();
        let huge = "é".repeat(5 << 20);
        check_ref(
            &mut report,
            "instance_groups[0].vm_type".into(),
            &huge,
            &["small"],
            "vm type",
            "x",
        );
        let e = &report.errors[0];
        assert_eq!(e.path, "instance_groups[0].vm_type");
        assert!(e.message.len() < MAX_MESSAGE_BYTES + 64, "{} bytes", e.message.len());
        assert!(e.message.starts_with("vm type \"é"), "{}", &e.message[..40]);
        assert!(
            e.message.ends_with(" bytes)") && e.message.contains("(message cut, "),
            "{}",
            e.message
        );
    }

    /// Only a string that is exactly one placeholder counts as a whole placeholder.
    #[test]
    fn whole_placeholders_are_told_apart_from_embedded_ones() {
        assert!(is_whole_placeholder("((port))"));
        assert!(!is_whole_placeholder("http://((host)):((port))"));
        assert!(has_placeholder("http://((host))"));
        assert!(!has_placeholder("plain"));
    }
}
