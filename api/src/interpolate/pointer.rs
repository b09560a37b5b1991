//! go-patch paths: `/instance_groups/name=web?/jobs/0:before/-`.
//!
//! A path is a `/`-separated list of tokens after the root: a map key, an
//! array index (negative counts from the end), `key=value` (the one array
//! item whose `key` is the string `value`), or `-` (after the last item).
//! `?` after a key or selector makes it and everything after it optional;
//! `:before`, `:after`, `:prev`, `:next` modify indexes and selectors.
//! `~1` is `/`, `~0` is `~` and `~7` is `:`, as in go-patch.

use std::fmt;

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// An array index; negative counts from the end.
    Index {
        /// The index as written.
        index: i64,
        /// `:prev`, `:next`, `:before`, `:after`.
        modifiers: Vec<Modifier>,
    },
    /// `-`: after the last item (appends on replace; only as the last token).
    AfterLast,
    /// `key=value`: the array item that is a map whose `key` is `value`.
    Match {
        /// The key compared in each item.
        key: String,
        /// The string it must equal.
        value: String,
        /// Whether a missing item is created (replace) or ignored (remove).
        optional: bool,
        /// `:prev`, `:next`, `:before`, `:after`.
        modifiers: Vec<Modifier>,
    },
    /// A map key.
    Key {
        /// The key.
        key: String,
        /// Whether a missing key is created (replace) or ignored (remove).
        optional: bool,
    },
}

/// Adjusts an index token or selector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Modifier {
    /// The item before.
    Prev,
    /// The item after.
    Next,
    /// Insert before instead of replacing.
    Before,
    /// Insert after instead of replacing.
    After,
}

/// A parsed path; the root token is implicit.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pointer {
    /// The tokens after the root.
    pub tokens: Vec<Token>,
}

/// Decodes in one pass, so `~01` is `~1` and not `/`.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        let decoded = match (c, chars.peek()) {
            ('~', Some('0')) => Some('~'),
            ('~', Some('1')) => Some('/'),
            ('~', Some('7')) => Some(':'),
            _ => None,
        };
        match decoded {
            Some(d) => {
                chars.next();
                out.push(d);
            }
            None => out.push(c),
        }
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1").replace(':', "~7")
}

impl Pointer {
    /// Parses a path; errors read like go-patch's.
    pub fn parse(s: &str) -> Result<Pointer, String> {
        if s.is_empty() {
            return Ok(Pointer::default());
        }
        let Some(rest) = s.strip_prefix('/') else {
            return Err("Expected to start with '/'".to_string());
        };
        let pieces: Vec<&str> = rest.split('/').collect();
        let mut tokens = Vec::with_capacity(pieces.len());
        let mut optional = false;
        for (i, piece) in pieces.iter().enumerate() {
            let is_last = i == pieces.len() - 1;
            let mut parts = piece.split(':');
            let raw = parts.next().unwrap_or_default();
            let mut modifiers = Vec::new();
            for m in parts {
                modifiers.push(match m {
                    "prev" => Modifier::Prev,
                    "next" => Modifier::Next,
                    "before" => Modifier::Before,
                    "after" => Modifier::After,
                    other => {
                        return Err(format!(
                            "Expected to find one of the following modifiers: 'prev', 'next', \
                             'before', or 'after' but found '{other}'"
                        ));
                    }
                });
            }
            let tok = unescape(raw);
            if is_last && tok == "-" {
                if !modifiers.is_empty() {
                    return Err("Expected not to find any modifiers with after last index token"
                        .to_string());
                }
                tokens.push(Token::AfterLast);
                continue;
            }
            if let Ok(index) = tok.parse::<i64>() {
                tokens.push(Token::Index { index, modifiers });
                continue;
            }
            if tok.ends_with('?') {
                optional = true;
            }
            if let Some((k, v)) = tok.split_once('=') {
                tokens.push(Token::Match {
                    key: k.to_string(),
                    value: v.strip_suffix('?').unwrap_or(v).to_string(),
                    optional,
                    modifiers,
                });
                continue;
            }
            if !modifiers.is_empty() {
                return Err("Expected not to find any modifiers with key token".to_string());
            }
            let key = tok.strip_suffix('?').unwrap_or(&tok).to_string();
            tokens.push(Token::Key { key, optional });
        }
        Ok(Pointer { tokens })
    }

    /// The path made of the first `n` tokens, for error messages.
    pub fn prefix(&self, n: usize) -> Pointer {
        Pointer { tokens: self.tokens[..n.min(self.tokens.len())].to_vec() }
    }
}

impl std::str::FromStr for Pointer {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Pointer::parse(s)
    }
}

fn modifiers_str(mods: &[Modifier]) -> String {
    mods.iter()
        .map(|m| match m {
            Modifier::Prev => ":prev",
            Modifier::Next => ":next",
            Modifier::Before => ":before",
            Modifier::After => ":after",
        })
        .collect()
}

impl fmt::Display for Pointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.tokens.is_empty() {
            return f.write_str("/");
        }
        let mut optional_shown = false;
        for t in &self.tokens {
            f.write_str("/")?;
            match t {
                Token::Index { index, modifiers } => {
                    write!(f, "{index}{}", modifiers_str(modifiers))?
                }
                Token::AfterLast => f.write_str("-")?,
                Token::Match { key, value, optional, modifiers } => {
                    let q = if *optional && !optional_shown { "?" } else { "" };
                    optional_shown |= *optional;
                    write!(f, "{}={}{q}{}", escape(key), escape(value), modifiers_str(modifiers))?
                }
                Token::Key { key, optional } => {
                    let q = if *optional && !optional_shown { "?" } else { "" };
                    optional_shown |= *optional;
                    write!(f, "{}{q}", escape(key))?
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every token kind parses, `?` carries over to later tokens, and the path prints back.
    #[test]
    fn paths_parse_and_print_back() {
        let p = Pointer::parse("/instance_groups/name=web?/jobs/0:before/properties/-").unwrap();
        assert_eq!(
            p.tokens[1],
            Token::Match {
                key: "name".into(),
                value: "web".into(),
                optional: true,
                modifiers: vec![]
            }
        );
        assert_eq!(p.tokens[2], Token::Key { key: "jobs".into(), optional: true });
        assert_eq!(p.tokens[3], Token::Index { index: 0, modifiers: vec![Modifier::Before] });
        assert_eq!(p.tokens[5], Token::AfterLast);
        assert_eq!(p.to_string(), "/instance_groups/name=web?/jobs/0:before/properties/-");
    }

    /// `~1`, `~0` and `~7` decode to `/`, `~` and `:` and encode back.
    #[test]
    fn escapes_decode_and_encode() {
        let p = Pointer::parse("/a~1b/c~0d/e~7f").unwrap();
        let keys: Vec<&str> = p
            .tokens
            .iter()
            .map(|t| match t {
                Token::Key { key, .. } => key.as_str(),
                _ => "?",
            })
            .collect();
        assert_eq!(keys, ["a/b", "c~d", "e:f"]);
        assert_eq!(p.to_string(), "/a~1b/c~0d/e~7f");
    }

    /// Malformed paths are refused with go-patch's wording.
    #[test]
    fn malformed_paths_are_refused() {
        assert_eq!(Pointer::parse("a/b").unwrap_err(), "Expected to start with '/'");
        assert!(Pointer::parse("/a:sideways").unwrap_err().contains("'sideways'"));
        assert!(Pointer::parse("/a/-:after").unwrap_err().contains("after last index"));
    }
}
