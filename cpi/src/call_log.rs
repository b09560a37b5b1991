//! What an external CPI call leaves behind (its stderr and the response's
//! `log`), and which task it belongs to.
//!
//! BOSH writes each task's CPI output to the task's own `cpi` log, which
//! `bosh task N --cpi` shows. A CPI call here does not know its task by
//! itself: the controller acting for a task runs its work inside
//! [`in_task`], a tokio task-local, so the task travels with the await
//! chain into whatever CPI wrapper sits between (fault injectors, counters)
//! without any signature carrying it. The director plugs a [`CallLogSink`]
//! into the external CPI to store the logs with the task.
//!
//! Logs are redacted before they leave the CPI ([`Redactor`]): a CPI that
//! echoes its request would otherwise put the agent's NATS password (in
//! `env.bosh.mbus.urls`, as `nats://user:password@host`), the blobstore
//! password and the cpi config's secrets into a task log anyone with read
//! access sees.

use std::future::Future;

use async_trait::async_trait;

/// What one CPI call left in its log (stderr and the response's `log`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallLog {
    /// The method called.
    pub method: String,
    /// The request id the call was made with (BOSH's `CPI request ID`).
    pub request_id: String,
    /// stderr, then the response's `log` field, redacted and bounded.
    pub text: String,
}

/// Where the logs of calls made during a task go.
#[async_trait]
pub trait CallLogSink: Send + Sync {
    /// Stores `log` with task `task`. Best effort: a lost log must not
    /// fail the call it describes.
    async fn write(&self, task: u64, log: CallLog);
}

tokio::task_local! {
    static TASK: u64;
}

/// Runs `fut` as work for `task` (none: outside any task): CPI calls made
/// in it are logged to that task.
pub async fn in_task<F: Future>(task: Option<u64>, fut: F) -> F::Output {
    match task {
        Some(t) => TASK.scope(t, fut).await,
        None => fut.await,
    }
}

/// The task the current work is for, if any.
pub fn current_task() -> Option<u64> {
    TASK.try_with(|t| *t).ok()
}

/// Largest log kept per call; the rest is cut with a marker (a CPI that
/// logs without bound must not grow the store).
pub const MAX_LOG_BYTES: usize = 16 * 1024;

/// `text` cut to at most `max` bytes on a character boundary, with a note
/// of how much was cut.
pub fn truncate(text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}\n[truncated: {} more bytes]", &text[..cut], text.len() - cut)
}

/// Whether a property name names a secret: BOSH's manifests call them
/// `password`, `secret_access_key`, `api_key`, `token`, `credentials`.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["password", "secret", "key", "token", "credential"].iter().any(|w| k.contains(w))
}

/// Whether a JSON key seen in free text names a secret. Narrower than
/// [`is_secret_key`]: in text, `"key"` alone is as often an object's name.
fn is_secret_text_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["password", "secret", "token", "credential", "private_key"].iter().any(|w| k.contains(w))
}

/// Shortest value redacted by value: shorter ones (`""`, `true`, a port)
/// would blank out unrelated text.
const MIN_SECRET_LEN: usize = 4;

/// Replaces secret values in CPI logs with `<redacted>`.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    values: Vec<String>,
}

impl Redactor {
    /// Adds every string under a secret-named key of `v` (at any depth).
    pub fn add_secrets_of(&mut self, v: &serde_json::Value) {
        collect(v, false, &mut self.values);
        self.values.sort_by_key(|s| std::cmp::Reverse(s.len()));
        self.values.dedup();
    }

    /// Adds one secret value.
    pub fn add(&mut self, secret: &str) {
        if secret.len() >= MIN_SECRET_LEN {
            self.values.push(secret.to_string());
            self.values.sort_by_key(|s| std::cmp::Reverse(s.len()));
            self.values.dedup();
        }
    }

    /// `text` with every known secret value, the value of every
    /// `"<secret-named key>": "..."` pair, and the password of every
    /// `scheme://user:password@host` replaced by `<redacted>`.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for v in &self.values {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), "<redacted>");
            }
        }
        redact_url_passwords(&redact_pairs(&out))
    }
}

/// The password of a `scheme://user:password@host...` URL at the start of
/// `s` (as written, percent-encoded), as a byte range of `s`.
fn url_password(s: &str) -> Option<std::ops::Range<usize>> {
    let start = s.find("://")? + 3;
    let rest = &s[start..];
    // The authority ends where a path, query or fragment starts, or where
    // the URL does in free text (a quote, a space, a bracket).
    let end = rest
        .find(|c: char| "/?#\"' <>[]{},\\".contains(c) || c.is_whitespace())
        .unwrap_or(rest.len());
    let at = rest[..end].rfind('@')?;
    let colon = rest[..at].find(':')?;
    Some(start + colon + 1..start + at)
}

/// Replaces the password of every URL with userinfo in `text`.
fn redact_url_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    // `url_password` looks at the first `://` of what it is given: the
    // one found here.
    while let Some(scheme_end) = rest.find("://") {
        match url_password(rest) {
            Some(r) => {
                out.push_str(&rest[..r.start]);
                out.push_str("<redacted>");
                rest = &rest[r.end..];
            }
            None => {
                out.push_str(&rest[..scheme_end + 3]);
                rest = &rest[scheme_end + 3..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn collect(v: &serde_json::Value, secret: bool, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) if secret && s.len() >= MIN_SECRET_LEN => out.push(s.clone()),
        // A URL's password, under any key (`env.bosh.mbus.urls`), as
        // written and as a CPI that parsed the URL would log it.
        serde_json::Value::String(s) if s.contains("://") => {
            if let Some(r) = url_password(s) {
                let written = &s[r];
                let decoded = percent_encoding::percent_decode_str(written).decode_utf8_lossy();
                for p in [written, decoded.as_ref()] {
                    if p.len() >= MIN_SECRET_LEN {
                        out.push(p.to_string());
                    }
                }
            }
        }
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                collect(v, secret || is_secret_key(k), out);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect(v, secret, out)),
        _ => {}
    }
}

/// The end (exclusive) of the JSON string starting at `start` (a `"`).
fn string_end(b: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// Redacts the string value of every `"<secret-named key>" : "value"`.
fn redact_pairs(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'"' {
            i += 1;
            continue;
        }
        let Some(key_end) = string_end(b, i) else { break };
        let key = &text[i + 1..key_end - 1];
        let mut j = key_end;
        while j < b.len() && b[j].is_ascii_whitespace() {
            j += 1;
        }
        if j < b.len() && b[j] == b':' && is_secret_text_key(key) {
            j += 1;
            while j < b.len() && b[j].is_ascii_whitespace() {
                j += 1;
            }
            if j < b.len() && b[j] == b'"' {
                let value_end = string_end(b, j).unwrap_or(b.len());
                out.push_str(&text[copied..j]);
                out.push_str("\"<redacted>\"");
                copied = value_end;
                i = value_end;
                continue;
            }
        }
        i = key_end;
    }
    out.push_str(&text[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Secrets by name, by value and in `"password": "..."` pairs go;
    /// everything else stays.
    #[test]
    fn redacts_secret_values_and_pairs() {
        let mut r = Redactor::default();
        r.add_secrets_of(&json!({"access_key_id": "AKIA1234", "region": "eu-west-1",
            "nested": {"credentials": {"user": "admin-user"}}, "port": 22}));
        r.add("nats-pass-1");
        let text = r#"connecting with AKIA1234 to eu-west-1 as admin-user
{"mbus": {"password":"nats-pass-1"}, "db_password" : "x\"y", "name": "web"}"#;
        let out = r.redact(text);
        assert!(!out.contains("AKIA1234") && !out.contains("admin-user"), "{out}");
        assert!(!out.contains("nats-pass-1") && !out.contains("x\\\"y"), "{out}");
        assert!(out.contains("eu-west-1") && out.contains(r#""name": "web""#), "{out}");
        assert!(out.contains(r#""db_password" : "<redacted>""#), "{out}");
    }

    /// A URL's password goes, from the text and by value (as written and
    /// percent-decoded, as a CPI that parsed the URL logs it), wherever
    /// the URL sits in the request; the rest of the URL stays.
    #[test]
    fn redacts_passwords_in_url_userinfo() {
        let mut r = Redactor::default();
        r.add_secrets_of(&json!({"env": {"bosh": {"mbus": {"urls":
            ["nats://agent.a-1:s3cr%40t-pw@10.0.0.6:4222"]}}}}));
        let text = "create_vm request: {\"urls\":[\"nats://agent.a-1:s3cr%40t-pw@10.0.0.6:4222\"]}\n\
            connecting as agent.a-1 with s3cr@t-pw\n\
            other nats://u:unknown-pw@h:4222/x and https://host/path?a=b@c and tcp://h:1";
        let out = r.redact(text);
        assert!(!out.contains("s3cr"), "{out}");
        assert!(!out.contains("unknown-pw"), "{out}");
        assert!(out.contains("nats://agent.a-1:<redacted>@10.0.0.6:4222"), "{out}");
        assert!(out.contains("with <redacted>"), "{out}");
        assert!(out.contains("nats://u:<redacted>@h:4222/x"), "{out}");
        assert!(out.contains("https://host/path?a=b@c and tcp://h:1"), "{out}");
        // A user without a password, and a URL cut short, stay as they are.
        assert_eq!(r.redact("nats://user@h:1 and nats://"), "nats://user@h:1 and nats://");
    }

    #[test]
    fn truncates_with_a_marker() {
        assert_eq!(truncate("short".into(), 10), "short");
        let t = truncate("é".repeat(10), 5);
        assert!(t.starts_with("éé\n[truncated: 16 more bytes]"), "{t}");
    }
}
