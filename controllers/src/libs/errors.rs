//! An error and its causes as one line, for conditions, events and task
//! results (which carry no secret values: the errors they render name
//! objects, files and exit codes, never credentials).

/// `e: cause: cause of cause ...`.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    /// Every cause appears, outermost first.
    #[test]
    fn chain_lists_every_cause() {
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(super::chain(&e), "outer: inner");
    }
}
