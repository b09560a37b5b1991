//! BOSH's semi-semantic release versions (cppforlife/go-semi-semantic).
//!
//! A version is `release[-pre_release][+post_release]`, each segment a
//! dot-separated list of integers and `[0-9A-Za-z_-]` strings. Dev releases
//! count in the post-release segment: the first dev release after nothing is
//! `0+dev.1`, after final `3` it is `3+dev.1`, then `3+dev.2`.
//!
//! This is the one version order of bosh-rs: release and stemcell versions
//! are compared with [`compare`], and `latest` is resolved with [`latest`]
//! or [`pick`], wherever they are (the director's lookups, its upload API,
//! the release indexes), so the director and the CLI agree on what is newest.

use std::{cmp::Ordering, fmt};

/// One dot-separated component.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Comp {
    Int(u64),
    Str(String),
}

/// A dot-separated segment (`1.2`, `dev.3`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Segment(Vec<Comp>);

impl Segment {
    fn parse(s: &str) -> Result<Self, String> {
        s.split('.')
            .map(|p| {
                if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) {
                    p.parse().map(Comp::Int).map_err(|e| format!("component '{p}' of '{s}': {e}"))
                } else if !p.is_empty()
                    && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                {
                    Ok(Comp::Str(p.to_string()))
                } else {
                    Err(format!("component '{p}' of '{s}' is neither an integer nor a word"))
                }
            })
            .collect::<Result<_, _>>()
            .map(Segment)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn increment(&self) -> Result<Self, String> {
        let mut c = self.0.clone();
        match c.last_mut() {
            Some(Comp::Int(i)) => *i += 1,
            _ => return Err(format!("the last component of '{self}' is not an integer")),
        }
        Ok(Segment(c))
    }

    fn all_zeros(c: &[Comp]) -> bool {
        c.iter().all(|x| *x == Comp::Int(0))
    }

    fn compare(&self, other: &Self) -> Ordering {
        let (a, b) = (&self.0, &other.0);
        let n = a.len().min(b.len());
        for (x, y) in a[..n].iter().zip(&b[..n]) {
            let o = match (x, y) {
                (Comp::Str(_), Comp::Int(_)) => Ordering::Greater,
                (Comp::Int(_), Comp::Str(_)) => Ordering::Less,
                (Comp::Int(x), Comp::Int(y)) => x.cmp(y),
                (Comp::Str(x), Comp::Str(y)) => x.cmp(y),
            };
            if o != Ordering::Equal {
                return o;
            }
        }
        if a.len() > n && !Self::all_zeros(&a[n..]) {
            Ordering::Greater
        } else if b.len() > n && !Self::all_zeros(&b[n..]) {
            Ordering::Less
        } else {
            Ordering::Equal
        }
    }
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            match c {
                Comp::Int(n) => write!(f, "{n}")?,
                Comp::Str(s) => f.write_str(s)?,
            }
        }
        Ok(())
    }
}

/// A release version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    release: Segment,
    pre: Segment,
    post: Segment,
}

impl Version {
    /// Parses `release[-pre][+post]`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (rest, post) = match s.split_once('+') {
            Some((r, p)) => (r, Segment::parse(p)?),
            None => (s, Segment::default()),
        };
        // The release segment may not contain '-'; the first '-' starts the pre-release.
        let (rel, pre) = match rest.split_once('-') {
            Some((r, p)) => (r, Segment::parse(p)?),
            None => (rest, Segment::default()),
        };
        if rel.is_empty() || rel.contains('-') {
            return Err(format!("version '{s}' has no release segment"));
        }
        let release = Segment::parse(rel)?;
        Ok(Version { release, pre, post })
    }

    /// The next final version: the release segment's last number plus one, nothing after it.
    pub fn increment_release(&self) -> Result<Self, String> {
        Ok(Version {
            release: self.release.increment()?,
            pre: Segment::default(),
            post: Segment::default(),
        })
    }

    /// The next dev version: `+dev.1` when there is no post-release, else its last number plus one.
    pub fn increment_post_release(&self) -> Result<Self, String> {
        let post = if self.post.is_empty() {
            Segment(vec![Comp::Str("dev".into()), Comp::Int(1)])
        } else {
            self.post.increment()?
        };
        Ok(Version { post, ..self.clone() })
    }

    /// Replaces the post-release with `dev.<timestamp>` (`--timestamp-version`).
    pub fn with_timestamp(&self, unix_secs: u64) -> Self {
        Version {
            post: Segment(vec![Comp::Str("dev".into()), Comp::Int(unix_secs)]),
            ..self.clone()
        }
    }

    /// The version before any dev or final release: `0+dev.0`.
    pub fn default_dev() -> Self {
        Version::parse("0+dev.0").expect("valid")
    }

    /// The first final version: `1`.
    pub fn default_final() -> Self {
        Version::parse("1").expect("valid")
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        let r = self.release.compare(&other.release);
        if r != Ordering::Equal {
            return r;
        }
        // A pre-release sorts before the bare release; a post-release after it.
        let pre = match (self.pre.is_empty(), other.pre.is_empty()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            (false, false) => self.pre.compare(&other.pre),
        };
        if pre != Ordering::Equal {
            return pre;
        }
        match (self.post.is_empty(), other.post.is_empty()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Less,
            (false, true) => Ordering::Greater,
            (false, false) => self.post.compare(&other.post),
        }
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.release)?;
        if !self.pre.is_empty() {
            write!(f, "-{}", self.pre)?;
        }
        if !self.post.is_empty() {
            write!(f, "+{}", self.post)?;
        }
        Ok(())
    }
}

/// Orders two version strings as BOSH does (semi-semantic).
///
/// A string that is not a semi-semantic version (which upload checks do not
/// rule out) sorts below every version that is, and such strings order
/// among themselves as text, so the order stays total and `latest` never
/// picks an unreadable version over a readable one.
pub fn compare(a: &str, b: &str) -> Ordering {
    match (Version::parse(a), Version::parse(b)) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        (Ok(_), Err(_)) => Ordering::Greater,
        (Err(_), Ok(_)) => Ordering::Less,
        (Err(_), Err(_)) => a.cmp(b),
    }
}

/// The highest of `versions` in BOSH's order ([`compare`]); `None` when empty.
///
/// Among versions that compare equal (`1` and `1.0`) the last one wins.
pub fn latest<'a>(versions: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    versions.into_iter().max_by(|a, b| compare(a, b))
}

/// `wanted` among `versions`: itself if present, the highest for `latest`.
pub fn pick<'a>(versions: &[&'a str], wanted: &str) -> Option<&'a str> {
    if wanted == "latest" {
        latest(versions.iter().copied())
    } else {
        versions.iter().copied().find(|v| *v == wanted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    /// Dev versions count up from `0+dev.1`, and from a final version as `N+dev.1`.
    #[test]
    fn dev_versions_count_like_bosh() {
        let first = Version::default_dev().increment_post_release().unwrap();
        assert_eq!(first.to_string(), "0+dev.1");
        assert_eq!(first.increment_post_release().unwrap().to_string(), "0+dev.2");
        assert_eq!(v("3").increment_post_release().unwrap().to_string(), "3+dev.1");
        assert_eq!(v("3+dev.9").increment_release().unwrap().to_string(), "4");
        assert_eq!(v("1.2-rc.1").to_string(), "1.2-rc.1");
    }

    /// Versions order like go-semi-semantic: pre < release < post, numbers numerically.
    #[test]
    fn versions_order_like_go_semi_semantic() {
        let mut vs: Vec<_> = ["0+dev.10", "1", "0+dev.2", "1-rc.1", "1.0.1", "1+dev.1", "1.0"]
            .into_iter()
            .map(v)
            .collect();
        vs.sort();
        let s: Vec<_> = vs.iter().map(ToString::to_string).collect();
        assert_eq!(s, ["0+dev.2", "0+dev.10", "1-rc.1", "1", "1.0", "1+dev.1", "1.0.1"]);
        assert_eq!(v("1").cmp(&v("1.0")), Ordering::Equal);
        assert!(Version::parse("a b").is_err());
    }

    /// The string order: each row's versions ascend, whatever their form.
    #[test]
    fn compare_orders_every_form_of_version_string() {
        let table: &[(&str, &str, Ordering)] = &[
            ("0+dev.2", "0+dev.10", Ordering::Less),
            ("0+dev.9", "1", Ordering::Less),
            ("1-rc.1", "1", Ordering::Less),
            ("1", "1+dev.1", Ordering::Less),
            ("1+dev.1", "1.0.1", Ordering::Less),
            ("621.74", "621.125", Ordering::Less),
            ("621.9", "1000", Ordering::Less),
            ("1.2-alpha", "1.2-beta", Ordering::Less),
            ("1", "1.0", Ordering::Equal),
            ("3", "3", Ordering::Equal),
            // Unreadable strings sort below readable ones, and as text among themselves.
            ("1.", "0", Ordering::Less),
            ("a+b+c", "b+c+d", Ordering::Less),
        ];
        for (a, b, want) in table {
            assert_eq!(compare(a, b), *want, "{a} vs {b}");
            assert_eq!(compare(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    /// `latest` is the highest version, found by [`pick`]; other wants match exactly.
    #[test]
    fn pick_resolves_latest_and_exact_versions() {
        let vs = ["0+dev.2", "0+dev.10", "0+dev.9", "1-rc.1"];
        assert_eq!(pick(&vs, "latest"), Some("1-rc.1"));
        assert_eq!(pick(&vs[..3], "latest"), Some("0+dev.10"));
        assert_eq!(pick(&vs, "0+dev.9"), Some("0+dev.9"));
        assert_eq!(pick(&vs, "1"), None);
        assert_eq!(pick(&[], "latest"), None);
        assert_eq!(latest(["1", "1.", "0"]), Some("1"));
    }
}
