//! Keeping property values out of template error messages.

/// Placeholder for a removed value.
const REDACTED: &str = "<redacted>";

/// Most characters of a message kept.
const MAX_MESSAGE_CHARS: usize = 2000;

/// `message` with Ruby inspect output (`#<Foo:0x.. @a="v">`) cut to its
/// class (`#<Foo>`), every string of `secrets` replaced, and a length cap.
/// `secrets` should be longest first (see `properties::redaction_list`).
pub(super) fn clean(message: &str, secrets: &[String]) -> String {
    let mut out = strip_inspect(message);
    for s in secrets {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), REDACTED);
        }
    }
    if out.chars().count() > MAX_MESSAGE_CHARS {
        out = out.chars().take(MAX_MESSAGE_CHARS).collect::<String>() + "...";
    }
    out
}

/// Replaces each `#<...>` (nesting counted) by `#<Class>`.
fn strip_inspect(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("#<") {
        out.push_str(&rest[..start]);
        let inner = &rest[start + 2..];
        let mut depth = 1usize;
        let mut end = None;
        let mut chars = inner.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '#' if chars.peek().is_some_and(|(_, n)| *n == '<') => {
                    chars.next();
                    depth += 1;
                }
                '>' => {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(i);
                        break;
                    }
                }
                _ => {}
            }
        }
        let class: String =
            inner.chars().take_while(|c| !matches!(c, ':' | ' ' | '>' | '#' | '\n')).collect();
        out.push_str("#<");
        out.push_str(&class);
        out.push('>');
        match end {
            Some(i) => rest = &inner[i + 1..],
            // Unterminated: everything after it may be the value.
            None => rest = "",
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inspect output loses its instance variables, nested ones included.
    #[test]
    fn clean_cuts_inspect_output_to_the_class() {
        let m = "undefined method `x' for #<Foo:0x0001 @pw=\"hunter2\" @o=#<Bar @k=1>> now";
        assert_eq!(clean(m, &[]), "undefined method `x' for #<Foo> now");
        assert_eq!(clean("a #<Foo @pw=\"x\"", &[]), "a #<Foo>");
    }

    /// Every listed string is replaced, a longer one before its substrings.
    #[test]
    fn clean_redacts_listed_strings() {
        let secrets = vec!["s3cret-long".to_owned(), "s3cret".to_owned()];
        let m = "invalid value for Integer(): \"s3cret-long\" and s3cret";
        assert_eq!(
            clean(m, &secrets),
            "invalid value for Integer(): \"<redacted>\" and <redacted>"
        );
    }
}
