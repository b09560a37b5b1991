//! YAML output laid out the way bosh-cli prints it.
//!
//! `bosh interpolate` (and `bosh deploy`, which sends the same text to the
//! director) marshals with go-yaml v2 (v2.4.0, vendored by bosh-cli v7),
//! whose emitter is a port of libyaml. For `boshctl interpolate`'s output to
//! diff empty against bosh's, this module follows the same rules (read from
//! go-yaml v2's `encode.go`, `emitterc.go`, `sorter.go` and `resolve.go`;
//! the facts are carried over, not the code):
//!
//! - map keys are sorted: numbers and booleans first by value (`false` is 0,
//!   `true` is 1), then `null`, then strings in "natural" order (runs of
//!   digits compare as numbers, non-letters before letters);
//! - block style with two-space indentation; a list under a map key is not
//!   indented (`key:` then `- item` in the key's column); empty lists and
//!   maps print as `[]` and `{}`;
//! - a string that would read back as something else (`"true"`, `"0755"`,
//!   `""`, `"1:20"`) is double-quoted; a string YAML cannot hold plain
//!   (`'*x'`, `' lead'`, `'a: b'`) is single-quoted; one with control or
//!   astral characters is double-quoted with escapes; one with a newline is
//!   a literal block (`|`, `|-`, `|+`);
//! - plain and quoted strings are folded at spaces once a line passes 80
//!   columns; keys longer than 128 bytes or spanning lines use `? key`;
//! - floats print as Go's `%g` does (`1`, `1.5`, `1e+06`), and `.inf`,
//!   `-.inf`, `.nan`.
//!
//! Keys are strings in a [`Value`]; a key spelled as a non-string's
//! canonical form (`true`, `null`, `16`, `1.5`) is a boolean, null or number
//! key read by [`super::parse_value`], and prints and sorts as one.

use std::borrow::Cow;

use serde_json::Value;

use super::float::go_float;
use super::keys::{Key, sorted_keys};
use super::resolve::plain_reads_as_non_string;

/// Lines are folded at spaces once they pass this column (libyaml's default).
const BEST_WIDTH: usize = 80;
/// Indentation step.
const BEST_INDENT: isize = 2;
/// Longest key (in bytes) written as `key: value` rather than `? key`.
const MAX_SIMPLE_KEY: usize = 128;

/// `value` as go-yaml v2's `yaml.Marshal` prints it (ends in a newline).
pub fn to_bosh_string(value: &Value) -> String {
    let mut e = Emitter::new();
    e.node(value, false);
    // Document end: the last line is terminated.
    e.indent = -1;
    e.write_indent();
    e.out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    Plain,
    Single,
    Double,
    Literal,
}

/// What a scalar's text allows (libyaml's scalar analysis; block context).
struct Analysis {
    multiline: bool,
    plain_allowed: bool,
    single_allowed: bool,
    block_allowed: bool,
}

fn is_printable(c: char) -> bool {
    matches!(c as u32, 0x0A | 0x20..=0x7E | 0xA0..=0xD7FF | 0xE000..=0xFFFD) && c != '\u{FEFF}'
}

fn is_break(c: char) -> bool {
    matches!(c, '\r' | '\n' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

fn is_blank(c: char) -> bool {
    matches!(c, ' ' | '\t')
}

fn analyze(s: &str) -> Analysis {
    if s.is_empty() {
        return Analysis {
            multiline: false,
            plain_allowed: true,
            single_allowed: true,
            block_allowed: false,
        };
    }
    let chars: Vec<char> = s.chars().collect();
    let mut block_indicators = s.starts_with("---") || s.starts_with("...");
    let (mut line_breaks, mut special) = (false, false);
    let (mut leading_space, mut leading_break) = (false, false);
    let (mut trailing_space, mut trailing_break) = (false, false);
    let (mut break_space, mut space_break) = (false, false);
    let (mut previous_space, mut previous_break) = (false, false);
    let mut preceded_by_whitespace = true;
    let last = chars.len() - 1;
    for (i, &c) in chars.iter().enumerate() {
        let followed_by_whitespace = chars.get(i + 1).is_none_or(|n| is_blank(*n) || is_break(*n));
        if i == 0 {
            match c {
                '#' | ',' | '[' | ']' | '{' | '}' | '&' | '*' | '!' | '|' | '>' | '\'' | '"'
                | '%' | '@' | '`' => block_indicators = true,
                '?' | ':' | '-' if followed_by_whitespace => block_indicators = true,
                _ => {}
            }
        } else {
            match c {
                ':' if followed_by_whitespace => block_indicators = true,
                '#' if preceded_by_whitespace => block_indicators = true,
                _ => {}
            }
        }
        if !is_printable(c) {
            special = true;
        }
        if c == ' ' {
            leading_space |= i == 0;
            trailing_space |= i == last;
            break_space |= previous_break;
            previous_space = true;
            previous_break = false;
        } else if is_break(c) {
            line_breaks = true;
            leading_break |= i == 0;
            trailing_break |= i == last;
            space_break |= previous_space;
            previous_space = false;
            previous_break = true;
        } else {
            previous_space = false;
            previous_break = false;
        }
        preceded_by_whitespace = is_blank(c) || is_break(c) || c == '\0';
    }
    let mut a = Analysis {
        multiline: line_breaks,
        plain_allowed: true,
        single_allowed: true,
        block_allowed: true,
    };
    if leading_space || leading_break || trailing_space || trailing_break {
        a.plain_allowed = false;
    }
    if trailing_space {
        a.block_allowed = false;
    }
    if break_space {
        a.plain_allowed = false;
        a.single_allowed = false;
    }
    if space_break || special {
        a.plain_allowed = false;
        a.single_allowed = false;
        a.block_allowed = false;
    }
    if line_breaks || block_indicators {
        a.plain_allowed = false;
    }
    a
}

/// A scalar to write: a string (quoted as needed) or the plain text of a
/// number, boolean or null.
enum Scalar<'a> {
    Str(&'a str),
    Plain(Cow<'a, str>),
}

struct Emitter {
    out: String,
    column: usize,
    indent: isize,
    indents: Vec<isize>,
    whitespace: bool,
    indention: bool,
}

impl Emitter {
    fn new() -> Emitter {
        Emitter {
            out: String::new(),
            column: 0,
            indent: -1,
            indents: Vec::new(),
            whitespace: true,
            indention: true,
        }
    }

    fn put(&mut self, c: char) {
        self.out.push(c);
        self.column += 1;
    }

    fn put_break(&mut self) {
        self.out.push('\n');
        self.column = 0;
    }

    /// Copies a line break from a scalar: `\n` as a newline, others as they are.
    fn write_break(&mut self, c: char) {
        if c == '\n' {
            self.put_break();
        } else {
            self.out.push(c);
            self.column = 0;
        }
    }

    fn write_indent(&mut self) {
        let indent = self.indent.max(0) as usize;
        if !self.indention || self.column > indent || (self.column == indent && !self.whitespace) {
            self.put_break();
        }
        while self.column < indent {
            self.put(' ');
        }
        self.whitespace = true;
        self.indention = true;
    }

    fn write_indicator(&mut self, ind: &str, need_ws: bool, is_ws: bool, is_indention: bool) {
        if need_ws && !self.whitespace {
            self.put(' ');
        }
        for c in ind.chars() {
            self.put(c);
        }
        self.whitespace = is_ws;
        self.indention = self.indention && is_indention;
    }

    fn increase_indent(&mut self, flow: bool, indentless: bool) {
        self.indents.push(self.indent);
        if self.indent < 0 {
            self.indent = if flow { BEST_INDENT } else { 0 };
        } else if !indentless {
            self.indent += BEST_INDENT;
        }
    }

    fn pop_indent(&mut self) {
        self.indent = self.indents.pop().unwrap_or(-1);
    }

    /// Writes one node; `mapping` says it is a map's value (a list there is
    /// not indented).
    fn node(&mut self, v: &Value, mapping: bool) {
        match v {
            Value::Array(items) if items.is_empty() => self.empty_flow("[", "]"),
            Value::Object(m) if m.is_empty() => self.empty_flow("{", "}"),
            Value::Array(items) => {
                self.increase_indent(false, mapping && !self.indention);
                for item in items {
                    self.write_indent();
                    self.write_indicator("-", true, false, true);
                    self.node(item, false);
                }
                self.pop_indent();
            }
            Value::Object(m) => {
                self.increase_indent(false, false);
                for k in sorted_keys(m) {
                    self.write_indent();
                    let key = match Key::of(k) {
                        Key::Str(s) => Scalar::Str(s),
                        _ => Scalar::Plain(Cow::Borrowed(k)),
                    };
                    let text = match &key {
                        Scalar::Str(s) => *s,
                        Scalar::Plain(p) => p,
                    };
                    if !analyze(text).multiline && text.len() <= MAX_SIMPLE_KEY {
                        self.scalar(&key, true);
                        self.write_indicator(":", false, false, false);
                    } else {
                        self.write_indicator("?", true, false, true);
                        self.scalar(&key, false);
                        self.write_indent();
                        self.write_indicator(":", true, false, true);
                    }
                    self.node(&m[k.as_str()], true);
                }
                self.pop_indent();
            }
            Value::Null => self.scalar(&Scalar::Plain("null".into()), false),
            Value::Bool(b) => self.scalar(&Scalar::Plain(b.to_string().into()), false),
            Value::Number(n) => {
                let text =
                    if n.is_f64() { go_float(n.as_f64().unwrap_or(0.0)) } else { n.to_string() };
                self.scalar(&Scalar::Plain(text.into()), false)
            }
            Value::String(s) => match super::non_finite_spelling(s) {
                Some(spelling) => self.scalar(&Scalar::Plain(spelling.into()), false),
                None => self.scalar(&Scalar::Str(s), false),
            },
        }
    }

    fn empty_flow(&mut self, open: &str, close: &str) {
        self.write_indicator(open, true, true, false);
        self.increase_indent(true, false);
        self.pop_indent();
        self.write_indicator(close, false, false, false);
    }

    fn scalar(&mut self, s: &Scalar<'_>, simple_key: bool) {
        let (text, requested) = match s {
            Scalar::Plain(p) => (p.as_ref(), Style::Plain),
            Scalar::Str(s) if s.contains('\n') => (*s, Style::Literal),
            Scalar::Str(s) if plain_reads_as_non_string(s) => (*s, Style::Double),
            Scalar::Str(s) => (*s, Style::Plain),
        };
        let a = analyze(text);
        let mut style = requested;
        if simple_key && a.multiline {
            style = Style::Double;
        }
        if style == Style::Plain && (!a.plain_allowed || (text.is_empty() && simple_key)) {
            style = Style::Single;
        }
        if style == Style::Single && !a.single_allowed {
            style = Style::Double;
        }
        if style == Style::Literal && (!a.block_allowed || simple_key) {
            style = Style::Double;
        }
        self.increase_indent(true, false);
        match style {
            Style::Plain => self.write_plain(text, !simple_key),
            Style::Single => self.write_single(text, !simple_key),
            Style::Double => self.write_double(text, !simple_key),
            Style::Literal => self.write_literal(text),
        }
        self.pop_indent();
    }

    fn write_plain(&mut self, s: &str, allow_breaks: bool) {
        if !self.whitespace {
            self.put(' ');
        }
        let chars: Vec<char> = s.chars().collect();
        let (mut spaces, mut breaks) = (false, false);
        for (i, &c) in chars.iter().enumerate() {
            if c == ' ' {
                let next_is_space = chars.get(i + 1) == Some(&' ');
                if allow_breaks && !spaces && self.column > BEST_WIDTH && !next_is_space {
                    self.write_indent();
                } else {
                    self.put(c);
                }
                spaces = true;
            } else if is_break(c) {
                if !breaks && c == '\n' {
                    self.put_break();
                }
                self.write_break(c);
                self.indention = true;
                breaks = true;
            } else {
                if breaks {
                    self.write_indent();
                }
                self.put(c);
                self.indention = false;
                spaces = false;
                breaks = false;
            }
        }
        self.whitespace = false;
        self.indention = false;
    }

    fn write_single(&mut self, s: &str, allow_breaks: bool) {
        self.write_indicator("'", true, false, false);
        let chars: Vec<char> = s.chars().collect();
        let (mut spaces, mut breaks) = (false, false);
        for (i, &c) in chars.iter().enumerate() {
            if c == ' ' {
                let inner = i > 0 && i + 1 < chars.len();
                let next_is_space = chars.get(i + 1) == Some(&' ');
                if allow_breaks && !spaces && self.column > BEST_WIDTH && inner && !next_is_space {
                    self.write_indent();
                } else {
                    self.put(c);
                }
                spaces = true;
            } else if is_break(c) {
                if !breaks && c == '\n' {
                    self.put_break();
                }
                self.write_break(c);
                self.indention = true;
                breaks = true;
            } else {
                if breaks {
                    self.write_indent();
                }
                if c == '\'' {
                    self.put('\'');
                }
                self.put(c);
                self.indention = false;
                spaces = false;
                breaks = false;
            }
        }
        self.write_indicator("'", false, false, false);
        self.whitespace = false;
        self.indention = false;
    }

    fn write_double(&mut self, s: &str, allow_breaks: bool) {
        self.write_indicator("\"", true, false, false);
        let chars: Vec<char> = s.chars().collect();
        // go-yaml v2's byte-order-mark test looks at the string's start
        // whatever the position, so after a leading BOM every character
        // is escaped.
        let escape_all = s.starts_with('\u{FEFF}');
        let mut spaces = false;
        for (i, &c) in chars.iter().enumerate() {
            if escape_all || !is_printable(c) || is_break(c) || c == '"' || c == '\\' {
                self.put('\\');
                let short = match c {
                    '\0' => Some('0'),
                    '\u{07}' => Some('a'),
                    '\u{08}' => Some('b'),
                    '\t' => Some('t'),
                    '\n' => Some('n'),
                    '\u{0B}' => Some('v'),
                    '\u{0C}' => Some('f'),
                    '\r' => Some('r'),
                    '\u{1B}' => Some('e'),
                    '"' => Some('"'),
                    '\\' => Some('\\'),
                    '\u{85}' => Some('N'),
                    '\u{A0}' => Some('_'),
                    '\u{2028}' => Some('L'),
                    '\u{2029}' => Some('P'),
                    _ => None,
                };
                match short {
                    Some(e) => self.put(e),
                    None => {
                        let v = c as u32;
                        let (prefix, width) = match v {
                            0..=0xFF => ('x', 2),
                            0x100..=0xFFFF => ('u', 4),
                            _ => ('U', 8),
                        };
                        self.put(prefix);
                        for ch in format!("{v:0width$X}").chars() {
                            self.put(ch);
                        }
                    }
                }
                spaces = false;
            } else if c == ' ' {
                let inner = i > 0 && i + 1 < chars.len();
                if allow_breaks && !spaces && self.column > BEST_WIDTH && inner {
                    self.write_indent();
                    if chars.get(i + 1) == Some(&' ') {
                        self.put('\\');
                    }
                } else {
                    self.put(c);
                }
                spaces = true;
            } else {
                self.put(c);
                spaces = false;
            }
        }
        self.write_indicator("\"", false, false, false);
        self.whitespace = false;
        self.indention = false;
    }

    fn write_literal(&mut self, s: &str) {
        self.write_indicator("|", true, false, false);
        let chars: Vec<char> = s.chars().collect();
        if chars.first().is_some_and(|c| *c == ' ' || is_break(*c)) {
            self.write_indicator(&BEST_INDENT.to_string(), false, false, false);
        }
        // Chomping: `-` when there is no final line break, `+` when there
        // is more than one (or it is all there is), none for exactly one.
        let n = chars.len();
        let chomp = if n == 0 || !is_break(chars[n - 1]) {
            Some("-")
        } else if n == 1 || is_break(chars[n - 2]) {
            Some("+")
        } else {
            None
        };
        if let Some(c) = chomp {
            self.write_indicator(c, false, false, false);
        }
        self.put_break();
        self.indention = true;
        self.whitespace = true;
        let mut breaks = true;
        for c in chars {
            if is_break(c) {
                self.write_break(c);
                self.indention = true;
                breaks = true;
            } else {
                if breaks {
                    self.write_indent();
                }
                self.put(c);
                self.indention = false;
                breaks = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Floats print as Go's `strconv.FormatFloat(f, 'g', -1, 64)` with
    /// go-yaml v2's spellings for the non-finite ones (`encode.go`
    /// `floatv`); each expected text is what go-yaml v2 printed for it.
    #[test]
    fn floats_print_like_go() {
        let cases: &[(f64, &str)] = &[
            (1.0, "1"),
            (1.5, "1.5"),
            (100.0, "100"),
            (123456.0, "123456"),
            (1e6, "1e+06"),
            (1234567.0, "1.234567e+06"),
            (0.0001, "0.0001"),
            (0.00012345, "0.00012345"),
            (1e-5, "1e-05"),
            (1e21, "1e+21"),
            (1e100, "1e+100"),
            (6.02e23, "6.02e+23"),
            (12345678901234567890.0, "1.2345678901234567e+19"),
            (5e-324, "5e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
            (-0.0, "-0"),
            (0.0, "0"),
            (-2.5, "-2.5"),
            (f64::INFINITY, ".inf"),
            (f64::NEG_INFINITY, "-.inf"),
            (f64::NAN, ".nan"),
        ];
        for (f, want) in cases {
            assert_eq!(go_float(*f), *want, "{f:e}");
        }
    }

    /// Strings are quoted, folded and laid out as go-yaml v2 prints them
    /// (`encode.go` `stringv` and libyaml's `emitterc.go`); each expected
    /// text is go-yaml v2's output for the same value.
    #[test]
    fn strings_print_like_go_yaml_v2() {
        let long = "word ".repeat(20);
        let cases: &[(&str, &str)] = &[
            ("plain", "plain"),
            ("", "\"\""),
            (" lead", "' lead'"),
            ("trail ", "'trail '"),
            ("-", "'-'"),
            ("-a", "-a"),
            ("- a", "'- a'"),
            ("a: b", "'a: b'"),
            ("a:b", "a:b"),
            ("a #b", "'a #b'"),
            ("a#b", "a#b"),
            ("*star", "'*star'"),
            ("it's", "it's"),
            ("'q'", "'''q'''"),
            ("true", "\"true\""),
            ("on", "\"on\""),
            ("yEs", "yEs"),
            ("~", "\"~\""),
            ("0755", "\"0755\""),
            ("0X10", "\"0X10\""),
            ("1e3", "\"1e3\""),
            ("1e999", "1e999"),
            ("1:20", "\"1:20\""),
            ("2001-12-14", "\"2001-12-14\""),
            ("2001-02-30", "2001-02-30"),
            (".inf", "\".inf\""),
            ("+.nan", "+.nan"),
            ("((x))", "((x))"),
            ("a\tb", "\"a\\tb\""),
            ("\u{1F600}", "\"\\U0001F600\""),
            ("\u{FEFF}x", "\"\\uFEFF\\x78\""),
            ("é", "é"),
            ("a\nb", "|-\n  a\n  b"),
            ("a\n", "|\n  a"),
            ("a\n\n", "|+\n  a\n"),
            (" a\nb", "|2-\n   a\n  b"),
            ("a \nb", "\"a \\nb\""),
        ];
        for (s, want) in cases {
            let got = to_bosh_string(&json!({ "k": s }));
            assert_eq!(got, format!("k: {want}\n"), "{s:?}");
        }
        // Past column 80, plain and quoted strings fold at a space.
        let got = to_bosh_string(&json!({ "k": long.trim() }));
        let (first, rest) = got.split_once('\n').unwrap();
        assert_eq!(first.len(), 82, "{got}");
        assert!(rest.starts_with("  word"), "{got}");
    }

    /// Lists under a key are not indented; empty collections are flow;
    /// long or multi-line keys use `? key` (go-yaml v2's output).
    #[test]
    fn layout_is_go_yaml_v2s() {
        let v = json!({
            "a": [[1, [2, []]], {}, {"x": {"y": [1]}, "w": []}],
            "b": {},
            "k".repeat(130): 1,
            "multi\nline": 2,
        });
        let want = "a:\n- - 1\n  - - 2\n    - []\n- {}\n- w: []\n  x:\n    \"y\":\n    - 1\nb: {}\n\
                    ? kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk\n: 1\n\
                    ? |-\n  multi\n  line\n: 2\n";
        assert_eq!(to_bosh_string(&v), want);
        assert_eq!(to_bosh_string(&json!([])), "[]\n");
        assert_eq!(to_bosh_string(&json!(1.5)), "1.5\n");
        assert_eq!(to_bosh_string(&Value::Null), "null\n");
    }
}
