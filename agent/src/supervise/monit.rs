//! Parsing the common form of a job's `monit` file:
//!
//! ```text
//! check process web
//!   with pidfile /var/vcap/sys/run/web/web.pid
//!   start program "/var/vcap/jobs/web/bin/ctl start" with timeout 60 seconds
//!   stop program "/var/vcap/jobs/web/bin/ctl stop"
//!   group vcap
//! ```
//!
//! Statements monit knows but the agent does not act on (`if failed ...`,
//! `depends on`, `mode`, `check file`, ...) are skipped, so real releases'
//! monit files parse.

use std::time::Duration;

/// One `check process` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitProcess {
    /// The process name.
    pub name: String,
    /// The pidfile, as written.
    pub pidfile: Option<String>,
    /// The start program (a shell command).
    pub start: String,
    /// How long the start program may take to produce a live pidfile.
    pub start_timeout: Duration,
    /// The stop program, if any (otherwise the pid gets SIGTERM).
    pub stop: Option<String>,
    /// How long stopping may take before SIGKILL.
    pub stop_timeout: Duration,
    /// Monit groups (usually `vcap`).
    pub groups: Vec<String>,
}

/// monit's default program timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Splits monit syntax into words and quoted strings, dropping comments.
fn tokens(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() || c == ',' {
            chars.next();
        } else if c == '#' {
            while chars.next().is_some_and(|c| c != '\n') {}
        } else if c == '"' || c == '\'' {
            chars.next();
            let mut s = String::new();
            loop {
                match chars.next() {
                    Some(q) if q == c => break,
                    Some(ch) => s.push(ch),
                    None => return Err("unterminated quoted string".into()),
                }
            }
            out.push(s);
        } else {
            let mut s = String::new();
            while let Some(&ch) = chars.peek() {
                if ch.is_whitespace() || ch == '"' || ch == '\'' || ch == '#' || ch == ',' {
                    break;
                }
                s.push(ch);
                chars.next();
            }
            out.push(s);
        }
    }
    Ok(out)
}

/// Parses `with timeout N second(s)` after a program, if present.
fn timeout_after(t: &[String], i: &mut usize) -> Option<Duration> {
    let word = |k: usize| t.get(k).map(|s| s.to_ascii_lowercase());
    let mut j = *i;
    if word(j).as_deref() == Some("with") {
        j += 1;
    }
    if word(j).as_deref() != Some("timeout") {
        return None;
    }
    let n: u64 = t.get(j + 1)?.parse().ok()?;
    j += 2;
    if word(j).is_some_and(|w| w.starts_with("second") || w.starts_with("cycle")) {
        j += 1;
    }
    *i = j;
    Some(Duration::from_secs(n))
}

/// Parses a monit file into its `check process` blocks.
pub fn parse(text: &str) -> Result<Vec<MonitProcess>, String> {
    let t = tokens(text)?;
    let lower: Vec<String> = t.iter().map(|s| s.to_ascii_lowercase()).collect();
    let mut procs: Vec<MonitProcess> = Vec::new();
    let mut in_process = false;
    let mut i = 0;
    while i < t.len() {
        match lower[i].as_str() {
            "check" => {
                let kind = lower.get(i + 1).cloned().unwrap_or_default();
                let name = t.get(i + 2).cloned().ok_or("`check` without a name")?;
                in_process = kind == "process";
                if in_process {
                    procs.push(MonitProcess {
                        name,
                        pidfile: None,
                        start: String::new(),
                        start_timeout: DEFAULT_TIMEOUT,
                        stop: None,
                        stop_timeout: DEFAULT_TIMEOUT,
                        groups: Vec::new(),
                    });
                }
                i += 3;
            }
            "pidfile" if in_process => {
                let p = t.get(i + 1).ok_or("`pidfile` without a path")?;
                procs.last_mut().expect("in process").pidfile = Some(p.clone());
                i += 2;
            }
            "start" | "stop"
                if in_process && lower.get(i + 1).map(String::as_str) == Some("program") =>
            {
                let mut j = i + 2;
                if t.get(j).map(String::as_str) == Some("=") {
                    j += 1;
                }
                let cmd = t.get(j).cloned().ok_or("program without a command")?;
                j += 1;
                // `as uid X and gid Y`: accepted, but the agent runs jobs as itself.
                if lower.get(j).map(String::as_str) == Some("as") {
                    j += 3;
                    if lower.get(j).map(String::as_str) == Some("and") {
                        j += 3;
                    }
                }
                let timeout = timeout_after(&t, &mut j);
                let p = procs.last_mut().expect("in process");
                if lower[i] == "start" {
                    p.start = cmd;
                    p.start_timeout = timeout.unwrap_or(DEFAULT_TIMEOUT);
                } else {
                    p.stop = Some(cmd);
                    p.stop_timeout = timeout.unwrap_or(DEFAULT_TIMEOUT);
                }
                i = j;
            }
            "group" if in_process => {
                if let Some(g) = t.get(i + 1) {
                    procs.last_mut().expect("in process").groups.push(g.clone());
                }
                i += 2;
            }
            _ => i += 1,
        }
    }
    for p in &procs {
        if p.start.is_empty() {
            return Err(format!("process {} has no start program", p.name));
        }
    }
    Ok(procs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The common BOSH form parses, with timeouts, groups and comments.
    #[test]
    fn common_bosh_monit_file_parses() {
        let text = r#"
# the web server
check process web
  with pidfile /var/vcap/sys/run/web/web.pid
  start program "/var/vcap/jobs/web/bin/ctl start" with timeout 60 seconds
  stop program "/var/vcap/jobs/web/bin/ctl stop"
  group vcap

check process worker
  with pidfile /var/vcap/sys/run/web/worker.pid
  start program = "/bin/sh -c 'worker &'" as uid vcap and gid vcap
  stop program = "/bin/kill worker"
  if failed port 80 then restart
  depends on web
  group vcap
"#;
        let p = parse(text).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].name, "web");
        assert_eq!(p[0].pidfile.as_deref(), Some("/var/vcap/sys/run/web/web.pid"));
        assert_eq!(p[0].start, "/var/vcap/jobs/web/bin/ctl start");
        assert_eq!(p[0].start_timeout, Duration::from_secs(60));
        assert_eq!(p[0].stop.as_deref(), Some("/var/vcap/jobs/web/bin/ctl stop"));
        assert_eq!(p[0].groups, ["vcap"]);
        assert_eq!(p[1].start, "/bin/sh -c 'worker &'");
        assert_eq!(p[1].start_timeout, DEFAULT_TIMEOUT);
        assert_eq!(p[1].stop.as_deref(), Some("/bin/kill worker"));
    }

    /// `check file` blocks are skipped and an empty file means no processes.
    #[test]
    fn non_process_checks_and_empty_files_give_no_processes() {
        assert!(parse("").unwrap().is_empty());
        let p =
            parse("check file cfg with path /etc/x\n if changed checksum then alert\n").unwrap();
        assert!(p.is_empty());
    }

    /// A process without a start program is an error naming it.
    #[test]
    fn process_without_start_program_is_refused() {
        let err = parse("check process x\n with pidfile /p\n").unwrap_err();
        assert!(err.contains("process x"), "{err}");
        assert!(parse("check process y\n start program \"oops").is_err());
    }
}
