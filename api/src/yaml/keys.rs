//! Map keys as go-yaml v2 sees them: what a key string stands for (a
//! boolean, null or number key is stored as its canonical spelling) and the
//! order `yaml.Marshal` prints keys in (its `sorter.go`).

use serde_json::Value;

use super::float::go_float;

/// A map key as go-yaml v2 saw it. Go's `reflect.Kind` numbers order the
/// kinds: bool 1, int 2, uint64 11, float64 14, nil interface 20, string 24.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Key<'a> {
    Bool(bool),
    Int(i128),
    Uint(u64),
    Float(f64),
    Null,
    Str(&'a str),
}

impl<'a> Key<'a> {
    /// Reads a key string: the canonical spelling of a boolean, null or
    /// number (as [`super::parse_value`] writes such keys) is that value.
    pub(crate) fn of(k: &'a str) -> Key<'a> {
        match k {
            "true" => return Key::Bool(true),
            "false" => return Key::Bool(false),
            "null" => return Key::Null,
            ".inf" => return Key::Float(f64::INFINITY),
            "-.inf" => return Key::Float(f64::NEG_INFINITY),
            ".nan" => return Key::Float(f64::NAN),
            "-0" => return Key::Float(-0.0),
            _ => {}
        }
        if let Ok(i) = k.parse::<i64>()
            && i.to_string() == k
        {
            return Key::Int(i.into());
        }
        if let Ok(u) = k.parse::<u64>()
            && u.to_string() == k
        {
            return Key::Uint(u);
        }
        if k.bytes().any(|c| matches!(c, b'.' | b'e'))
            && let Ok(f) = k.parse::<f64>()
            && go_float(f) == k
        {
            return Key::Float(f);
        }
        Key::Str(k)
    }

    fn kind(&self) -> u8 {
        match self {
            Key::Bool(_) => 1,
            Key::Int(_) => 2,
            Key::Uint(_) => 11,
            Key::Float(_) => 14,
            Key::Null => 20,
            Key::Str(_) => 24,
        }
    }

    fn number(&self) -> Option<f64> {
        match *self {
            Key::Bool(b) => Some(if b { 1.0 } else { 0.0 }),
            Key::Int(i) => Some(i as f64),
            Key::Uint(u) => Some(u as f64),
            Key::Float(f) => Some(f),
            _ => None,
        }
    }
}

/// go-yaml v2's key order (`keyList.Less`).
pub(crate) fn key_less(a: &Key<'_>, b: &Key<'_>) -> bool {
    if let (Some(af), Some(bf)) = (a.number(), b.number()) {
        if af != bf {
            return af < bf;
        }
        if a.kind() != b.kind() {
            return a.kind() < b.kind();
        }
        return match (a, b) {
            (Key::Bool(x), Key::Bool(y)) => !x && *y,
            (Key::Int(x), Key::Int(y)) => x < y,
            (Key::Uint(x), Key::Uint(y)) => x < y,
            _ => false,
        };
    }
    let (Key::Str(a), Key::Str(b)) = (a, b) else {
        return a.kind() < b.kind();
    };
    natural_less(a, b)
}

/// Strings in go-yaml v2's order: letters by code point, any non-letter
/// before any letter, and runs of digits by their value.
fn natural_less(a: &str, b: &str) -> bool {
    let ar: Vec<char> = a.chars().collect();
    let br: Vec<char> = b.chars().collect();
    let digit = |c: char| c.is_ascii_digit();
    for i in 0..ar.len().min(br.len()) {
        if ar[i] == br[i] {
            continue;
        }
        let (al, bl) = (ar[i].is_alphabetic(), br[i].is_alphabetic());
        if al && bl {
            return ar[i] < br[i];
        }
        if al || bl {
            return bl;
        }
        // Neither is a letter: compare the digit runs starting here. A
        // `0` continuing a number that is not all zeros counts as a digit
        // of that number rather than a leading zero.
        let (mut an, mut bn): (i64, i64) = (0, 0);
        if ar[i] == '0' || br[i] == '0' {
            for j in (0..i).rev() {
                if !digit(ar[j]) {
                    break;
                }
                if ar[j] != '0' {
                    an = 1;
                    bn = 1;
                    break;
                }
            }
        }
        let mut ai = i;
        while ai < ar.len() && digit(ar[ai]) {
            an = an.wrapping_mul(10).wrapping_add(i64::from(ar[ai] as u8 - b'0'));
            ai += 1;
        }
        let mut bi = i;
        while bi < br.len() && digit(br[bi]) {
            bn = bn.wrapping_mul(10).wrapping_add(i64::from(br[bi] as u8 - b'0'));
            bi += 1;
        }
        if an != bn {
            return an < bn;
        }
        if ai != bi {
            return ai < bi;
        }
        return ar[i] < br[i];
    }
    ar.len() < br.len()
}

/// A map's keys in the order go-yaml v2 prints them.
///
/// go-yaml v2's comparison is not transitive for some strings whose digit
/// runs differ only in leading zeros (`a010` < `a01b` < `a10` < `a010`),
/// and it sorts Go's randomly ordered map keys, so bosh itself prints such
/// keys in no fixed order. A merge sort gives one fixed order here without
/// needing a total order (the standard sorts may panic without one); for
/// every other set of keys it is go-yaml v2's order.
pub(crate) fn sorted_keys(m: &serde_json::Map<String, Value>) -> Vec<&String> {
    let keys: Vec<(&String, Key<'_>)> = m.keys().map(|k| (k, Key::of(k))).collect();
    merge_sort(keys).into_iter().map(|(k, _)| k).collect()
}

fn merge_sort<'a>(mut v: Vec<(&'a String, Key<'a>)>) -> Vec<(&'a String, Key<'a>)> {
    if v.len() <= 1 {
        return v;
    }
    let right = v.split_off(v.len() / 2);
    let (left, right) = (merge_sort(v), merge_sort(right));
    let mut out = Vec::with_capacity(left.len() + right.len());
    let (mut l, mut r) = (left.into_iter().peekable(), right.into_iter().peekable());
    while let (Some(a), Some(b)) = (l.peek(), r.peek()) {
        // Take from the right only when it is strictly less: stable.
        if key_less(&b.1, &a.1) {
            out.extend(r.next());
        } else {
            out.extend(l.next());
        }
    }
    out.extend(l);
    out.extend(r);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Map keys sort as go-yaml v2's `keyList.Less` orders them: numbers
    /// and booleans by value (`false` 0, `true` 1; equal values int before
    /// float), then null, then strings with non-letters before letters and
    /// digit runs by value (`sorter.go`; orders checked by running it).
    #[test]
    fn keys_sort_like_go_yaml_v2() {
        let cases: &[(&[&str], &[&str])] = &[
            (&["b", "a", "C", "A"], &["A", "C", "a", "b"]),
            (&["key10", "key9", "key1"], &["key1", "key9", "key10"]),
            (&["a", "_x", "-y", "1", "z1"], &["1", "-y", "_x", "a", "z1"]),
            (
                &["name", "null", "true", "-1", "1.5", "false", "16"],
                &["-1", "false", "true", "1.5", "16", "null", "name"],
            ),
            (
                &["azs", "instances", "name", "jobs", "vm_type", "networks", "stemcell"],
                &["azs", "instances", "jobs", "name", "networks", "stemcell", "vm_type"],
            ),
            (&["web-10", "web-9", "web_1", "web"], &["web", "web-9", "web-10", "web_1"]),
            (&["-.inf", ".inf", "0"], &["-.inf", "0", ".inf"]),
            (&["é", "e", "f"], &["e", "f", "é"]),
        ];
        for (keys, want) in cases {
            let m: serde_json::Map<String, Value> =
                keys.iter().map(|k| (k.to_string(), Value::Null)).collect();
            let got: Vec<&str> = sorted_keys(&m).into_iter().map(String::as_str).collect();
            assert_eq!(got, *want, "{keys:?}");
        }
    }
}
