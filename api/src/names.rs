//! The one rule for names: what a deployment, instance group, job, package,
//! release, stemcell, network, AZ, vm/disk type, link or variable may be
//! called.
//!
//! Names end up as path components on the director and on VMs
//! (`/var/vcap/jobs/<job>`), in etcd keys (`<deployment>/<group>/<id>`), in
//! URL segments and in shell command lines. A name that is not a plain word
//! (`../../x`, `a/b`, `x y;rm -rf`) is accepted by nothing downstream, so it
//! must be refused where it enters: manifest and config validation, release
//! and stemcell upload, and API routes. Every one of those calls
//! [`check_name`] (or [`check_version`], [`check_variable_name`]), so the
//! rule and its message are the same everywhere.
//!
//! The character set is the BOSH director's (`Models::VALID_ID`: letters,
//! digits, `-`, `_`, `+`, `.`), which every real release, job, package,
//! deployment and stemcell name already satisfies. On top of it a name may
//! not start with `.` (so never `.` or `..`, nor a hidden file) or `-`/`+`
//! (so never a command-line option), and is at most [`MAX_NAME_LEN`]
//! characters, which keeps it one file name and one DNS label's worth of
//! room in a key.

/// Most characters a name (or version) may have.
pub const MAX_NAME_LEN: usize = 128;

/// The rule for names, as told to users.
pub const NAME_RULE: &str = "use letters, digits, '-', '_', '+' and '.', starting with a letter, \
     digit or '_' (so not '.' or '..'), at most 128 characters";

/// The rule for variable names, as told to users.
pub const VARIABLE_RULE: &str = "a name, or an absolute config-server path of names \
     ('/director/deployment/name'); each name uses letters, digits, '-', '_', '+' and '.', \
     starting with a letter, digit or '_', at most 128 characters";

/// Which rule a string was checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// A name ([`check_name`]).
    Name,
    /// A release, job, package or stemcell version ([`check_version`]).
    Version,
    /// A variable name, possibly an absolute path ([`check_variable_name`]).
    Variable,
}

impl NameKind {
    /// The word for the checked string in messages.
    pub fn noun(self) -> &'static str {
        match self {
            NameKind::Name => "name",
            NameKind::Version => "version",
            NameKind::Variable => "variable name",
        }
    }

    /// The rule, as told to users.
    pub fn rule(self) -> &'static str {
        match self {
            NameKind::Name | NameKind::Version => NAME_RULE,
            NameKind::Variable => VARIABLE_RULE,
        }
    }
}

/// A string that breaks the name rule. The message quotes the value (escaped,
/// and shortened when long) and states the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{shown} is not a valid {}: {}", kind.noun(), kind.rule())]
pub struct NameError {
    /// The offending value.
    pub value: String,
    /// The rule it broke.
    pub kind: NameKind,
    /// The value as quoted in the message: Rust-escaped (control characters
    /// visible), cut after 64 characters so a hostile value cannot flood logs.
    shown: String,
}

impl NameError {
    fn new(value: &str, kind: NameKind) -> NameError {
        let shown = if value.chars().count() > 64 {
            let head: String = value.chars().take(64).collect();
            format!("{head:?}... ({} characters)", value.chars().count())
        } else {
            format!("{value:?}")
        };
        NameError { value: value.to_string(), kind, shown }
    }
}

/// Whether `s` follows the name rule (see the module docs).
pub fn is_valid_name(s: &str) -> bool {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'+' | b'.');
    let first_ok = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    match s.as_bytes() {
        [] => false,
        bytes @ [first, ..] => {
            bytes.len() <= MAX_NAME_LEN && first_ok(*first) && bytes.iter().all(|b| allowed(*b))
        }
    }
}

/// Checks a name: deployment, instance group, job, package, release,
/// stemcell, network, AZ, vm type, vm extension, disk type, link.
pub fn check_name(s: &str) -> Result<(), NameError> {
    if is_valid_name(s) { Ok(()) } else { Err(NameError::new(s, NameKind::Name)) }
}

/// Checks a version string (release, job, package, stemcell). Versions use
/// the same rule as names: `1.2.3`, `0+dev.4`, `621.74` and `latest` pass;
/// `/`, whitespace and `..` do not.
pub fn check_version(s: &str) -> Result<(), NameError> {
    if is_valid_name(s) { Ok(()) } else { Err(NameError::new(s, NameKind::Version)) }
}

/// Checks a variable name: a name, or an absolute config-server path whose
/// parts are names (`/dns_healthcheck_tls_ca`, `/bosh/cf/admin_password`),
/// as real runtime configs use.
pub fn check_variable_name(s: &str) -> Result<(), NameError> {
    let ok = match s.strip_prefix('/') {
        Some(rest) => rest.split('/').all(is_valid_name),
        None => is_valid_name(s),
    };
    if ok { Ok(()) } else { Err(NameError::new(s, NameKind::Variable)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names from real releases, manifests and cloud configs pass.
    #[test]
    fn real_bosh_names_are_valid() {
        for ok in [
            "cf",
            "zookeeper",
            "bosh-dns-aliases",
            "routing_api",
            "nats-tls",
            "garden-runc",
            "bosh-warden-boshlite-ubuntu-jammy-go_agent",
            "default",
            "z1",
            "_internal",
            "1password",
            "golang-1.22-linux",
            "openjdk_17.0",
            "uaa.db",
            &"a".repeat(MAX_NAME_LEN),
        ] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
    }

    /// Path separators, whitespace, shell metacharacters, control
    /// characters, dot names, leading option characters, non-ASCII, empty and
    /// over-long names are refused.
    #[test]
    fn names_that_are_not_names_are_refused() {
        let long = "a".repeat(MAX_NAME_LEN + 1);
        for bad in [
            "",
            ".",
            "..",
            "../../x",
            ".hidden",
            "a/b",
            "/abs",
            "a\\b",
            "x y;rm -rf",
            "a b",
            "tab\there",
            "new\nline",
            "nul\0",
            "semi;colon",
            "pipe|x",
            "amp&x",
            "$(id)",
            "`id`",
            "star*",
            "quote'",
            "dq\"",
            "-rf",
            "+x",
            "ü",
            "a:b",
            "((var))",
            long.as_str(),
        ] {
            let err = check_name(bad).unwrap_err();
            assert_eq!(err.value, bad);
            assert_eq!(err.kind, NameKind::Name);
        }
    }

    /// Release and stemcell versions pass; paths and whitespace do not.
    #[test]
    fn versions_follow_the_name_rule() {
        for ok in ["1.2.3", "0+dev.4", "621.74", "1.0.0-rc.1", "latest", "27"] {
            assert_eq!(check_version(ok), Ok(()), "{ok}");
        }
        for bad in ["", "1/2", "1 2", "..", "../1", "1\n"] {
            assert_eq!(check_version(bad).unwrap_err().kind, NameKind::Version, "{bad:?}");
        }
    }

    /// Variable names may be absolute config-server paths of names.
    #[test]
    fn variable_names_may_be_absolute_paths() {
        for ok in ["admin_password", "/dns_healthcheck_tls_ca", "/bosh/cf/nats_ca"] {
            assert_eq!(check_variable_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", "/", "a/b", "//x", "/a//b", "/a/../b", "/a b", "x;y"] {
            assert!(check_variable_name(bad).is_err(), "{bad:?}");
        }
    }

    /// The message quotes the value (escaped) and states the rule.
    #[test]
    fn the_message_names_the_value_and_the_rule() {
        let msg = check_name("../../x").unwrap_err().to_string();
        assert_eq!(msg, format!(r#""../../x" is not a valid name: {NAME_RULE}"#));
        let msg = check_name("a\nb").unwrap_err().to_string();
        assert!(msg.starts_with(r#""a\nb" is not"#), "{msg}");
        let msg = check_name(&"x".repeat(10_000)).unwrap_err().to_string();
        assert!(msg.len() < 400 && msg.contains("(10000 characters)"), "{msg}");
    }
}
