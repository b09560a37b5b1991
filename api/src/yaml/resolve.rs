//! What a plain scalar means to go-yaml v2 (its `resolve.go`): whether a
//! string written without quotes would read back as something else, so the
//! printer knows to quote it (facts from go-yaml v2.4.0, not its code).

/// Whether `s`, written plain, would read back as something other than
/// this string under go-yaml v2's rules (so it must be quoted). go-yaml v2
/// also quotes YAML 1.1 base-60 numbers (`1:20`) though it reads them as
/// strings.
pub(crate) fn plain_reads_as_non_string(s: &str) -> bool {
    resolves_to_non_string(s) || is_base60_float(s)
}

fn resolves_to_non_string(s: &str) -> bool {
    // The first byte decides what the scalar might be.
    let Some(&first) = s.as_bytes().first() else {
        return true; // empty is null
    };
    match first {
        b'y' | b'Y' | b'n' | b'N' | b't' | b'T' | b'f' | b'F' | b'o' | b'O' | b'~' => {
            is_resolved_word(s)
        }
        b'.' => is_resolved_word(s) || go_parse_float(s).is_some(),
        b'+' | b'-' | b'0'..=b'9' => {
            is_resolved_word(s) || is_timestamp(s) || {
                let plain: String = s.chars().filter(|c| *c != '_').collect();
                go_parse_int(&plain).is_some()
                    || (is_yaml_style_float(&plain) && go_parse_float(&plain).is_some())
            }
        }
        _ => false,
    }
}

/// The spellings go-yaml v2 resolves by table: booleans, nulls, the
/// non-finite floats and the merge key.
fn is_resolved_word(s: &str) -> bool {
    matches!(
        s,
        "y" | "Y"
            | "yes"
            | "Yes"
            | "YES"
            | "true"
            | "True"
            | "TRUE"
            | "on"
            | "On"
            | "ON"
            | "n"
            | "N"
            | "no"
            | "No"
            | "NO"
            | "false"
            | "False"
            | "FALSE"
            | "off"
            | "Off"
            | "OFF"
            | "~"
            | "null"
            | "Null"
            | "NULL"
            | ".nan"
            | ".NaN"
            | ".NAN"
            | ".inf"
            | ".Inf"
            | ".INF"
            | "+.inf"
            | "+.Inf"
            | "+.INF"
            | "-.inf"
            | "-.Inf"
            | "-.INF"
            | "<<"
    )
}

/// Go's `strconv.ParseInt(s, 0, 64)` or `ParseUint(s, 0, 64)` succeeding:
/// optional sign (signed only), then `0x`/`0o`/`0b` (either case), a
/// leading `0` (octal) or decimal digits.
fn go_parse_int(s: &str) -> Option<i128> {
    let (neg, body) = match s.as_bytes().first()? {
        b'+' => (false, &s[1..]),
        b'-' => (true, &s[1..]),
        _ => (false, s),
    };
    let lower = body.to_ascii_lowercase();
    let (radix, digits) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, &lower[1..])
    } else {
        (10, lower.as_str())
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let n = u64::from_str_radix(digits, radix).ok()? as i128;
    let n = if neg { -n } else { n };
    // A signed value must fit int64; an unsigned one (no sign) uint64.
    let fits =
        if neg || s.starts_with('+') { i64::try_from(n).is_ok() } else { u64::try_from(n).is_ok() };
    fits.then_some(n)
}

/// go-yaml v2's `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`.
fn is_yaml_style_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    if matches!(b.first(), Some(b'+' | b'-')) {
        i += 1;
    }
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    if b.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    } else {
        if digits(&mut i) == 0 {
            return false;
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            digits(&mut i);
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// Go's `strconv.ParseFloat(s, 64)` succeeding, for the decimal forms a
/// scalar that gets this far can take (an overflow to infinity is a
/// failure in Go, so `1e999` stays a string).
fn go_parse_float(s: &str) -> Option<f64> {
    if !is_yaml_style_float(s) {
        return None;
    }
    let f: f64 = s.parse().ok()?;
    f.is_finite().then_some(f)
}

/// go-yaml v2 reads an unquoted `2001-12-14`, `2001-12-14 21:59:43.10` or
/// `2001-12-14T21:59:43.10-05:00` as a timestamp (Go's `time.Parse` with
/// the layouts in `resolve.go`).
fn is_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 5 || !b[..4].iter().all(u8::is_ascii_digit) || b[4] != b'-' {
        return false;
    }
    let mut p = Cursor { b, i: 5 };
    let year: u32 = s[..4].parse().unwrap_or(0);
    let Some(month) = p.num(1, 2) else { return false };
    if !p.eat(b'-') {
        return false;
    }
    let Some(day) = p.num(1, 2) else { return false };
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return false;
    }
    if p.done() {
        return true;
    }
    let zoned = match b[p.i] {
        b'T' | b't' => true,
        b' ' => false,
        _ => return false,
    };
    p.i += 1;
    let (Some(h), true, Some(m), true, Some(sec)) =
        (p.num(1, 2), p.eat(b':'), p.num(1, 2), p.eat(b':'), p.num(1, 2))
    else {
        return false;
    };
    if h > 23 || m > 59 || sec > 59 {
        return false;
    }
    // Any number of fraction digits, after `.` or `,`.
    if (p.eat(b'.') || p.eat(b',')) && p.digits() == 0 {
        return false;
    }
    if !zoned {
        return p.done();
    }
    if p.eat(b'Z') {
        return p.done();
    }
    if !(p.eat(b'+') || p.eat(b'-')) {
        return false;
    }
    let (Some(_), true, Some(_)) = (p.num(2, 2), p.eat(b':'), p.num(2, 2)) else {
        return false;
    };
    p.done()
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn num(&mut self, min: usize, max: usize) -> Option<u32> {
        let start = self.i;
        while self.i < self.b.len() && self.i - start < max && self.b[self.i].is_ascii_digit() {
            self.i += 1;
        }
        let n = self.i - start;
        (n >= min).then(|| std::str::from_utf8(&self.b[start..self.i]).ok()?.parse().ok())?
    }
    fn digits(&mut self) -> usize {
        let start = self.i;
        while self.i < self.b.len() && self.b[self.i].is_ascii_digit() {
            self.i += 1;
        }
        self.i - start
    }
    fn eat(&mut self, c: u8) -> bool {
        let hit = self.b.get(self.i) == Some(&c);
        self.i += usize::from(hit);
        hit
    }
    fn done(&self) -> bool {
        self.i == self.b.len()
    }
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// YAML 1.1 base-60 floats (`190:20:30.15`), which go-yaml v2 quotes.
fn is_base60_float(s: &str) -> bool {
    let b = s.as_bytes();
    if !s.contains(':') || !matches!(b.first(), Some(b'+' | b'-' | b'0'..=b'9')) {
        return false;
    }
    // ^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$
    let mut i = usize::from(matches!(b[0], b'+' | b'-'));
    if !b.get(i).is_some_and(u8::is_ascii_digit) {
        return false;
    }
    while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'_') {
        i += 1;
    }
    let mut groups = 0;
    while b.get(i) == Some(&b':') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() && i - start < 2 {
            i += 1;
        }
        let g = &b[start..i];
        let ok = match g {
            [d] => d.is_ascii_digit(),
            [a, d] => (b'0'..=b'5').contains(a) && d.is_ascii_digit(),
            _ => false,
        };
        if !ok {
            return false;
        }
        groups += 1;
    }
    if groups == 0 {
        return false;
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'_') {
            i += 1;
        }
    }
    i == b.len()
}
