//! Running job scripts: a clean environment, output kept as a bounded tail
//! (for exception messages and errand results) and appended to a log file
//! under `sys/log` (for `fetch_logs`), and the child killed if the task
//! running it is cancelled.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use crate::error::{Error, Result};

/// How much of each stream is kept in memory.
const TAIL_BYTES: usize = 8 * 1024;

/// What a finished command left behind.
#[derive(Debug, Clone, Default)]
pub struct Output {
    /// Exit code; -1 when killed by a signal.
    pub code: i32,
    /// The last [`TAIL_BYTES`] of stdout.
    pub stdout: String,
    /// The last [`TAIL_BYTES`] of stderr.
    pub stderr: String,
}

impl Output {
    /// The last few lines of stdout and stderr together, for messages.
    pub fn tail(&self) -> String {
        let mut lines: Vec<&str> = self.stdout.lines().collect();
        lines.extend(self.stderr.lines());
        let start = lines.len().saturating_sub(10);
        lines[start..].join("\n")
    }
}

/// A command to run.
pub struct Exec {
    cmd: Command,
    log: Option<PathBuf>,
}

impl Exec {
    /// Runs `program` with `args`, in a clean environment `env`.
    pub fn new(program: impl AsRef<Path>, env: &[(String, String)]) -> Exec {
        let mut cmd = Command::new(program.as_ref());
        cmd.env_clear()
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        Exec { cmd, log: None }
    }

    /// Runs `script` with `/bin/sh -c`.
    pub fn shell(script: &str, env: &[(String, String)]) -> Exec {
        let mut e = Exec::new("/bin/sh", env);
        e.cmd.arg("-c").arg(script);
        e
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Exec
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.cmd.args(args);
        self
    }

    /// Adds environment variables.
    pub fn envs(mut self, env: &[(String, String)]) -> Exec {
        self.cmd.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        self
    }

    /// Sets the working directory.
    pub fn cwd(mut self, dir: impl AsRef<Path>) -> Exec {
        self.cmd.current_dir(dir);
        self
    }

    /// Appends the output to `<prefix>.stdout.log` and `<prefix>.stderr.log`.
    pub fn log_to(mut self, prefix: PathBuf) -> Exec {
        self.log = Some(prefix);
        self
    }

    /// Runs to completion.
    pub async fn run(mut self) -> Result<Output> {
        let what = format!("{:?}", self.cmd.as_std().get_program());
        let mut child = self.cmd.spawn().map_err(Error::io("run", what))?;
        let (out_log, err_log) = match &self.log {
            Some(p) => (Some(suffixed(p, "stdout.log")), Some(suffixed(p, "stderr.log"))),
            None => (None, None),
        };
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let (status, stdout, stderr) =
            tokio::join!(child.wait(), collect(stdout, out_log), collect(stderr, err_log));
        let status = status.map_err(Error::io("wait for", "child"))?;
        Ok(Output { code: status.code().unwrap_or(-1), stdout, stderr })
    }
}

fn suffixed(prefix: &Path, suffix: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(".");
    s.push(suffix);
    PathBuf::from(s)
}

/// Reads a stream to its end, keeping the tail and appending to `log`.
async fn collect(mut r: impl AsyncRead + Unpin, log: Option<PathBuf>) -> String {
    let mut file = match log {
        Some(p) => {
            if let Some(dir) = p.parent() {
                let _ = tokio::fs::create_dir_all(dir).await;
            }
            tokio::fs::OpenOptions::new().create(true).append(true).open(p).await.ok()
        }
        None => None,
    };
    let mut tail: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 8192];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // Keep the reason with the output instead of losing both.
                tail.extend_from_slice(format!("\n[reading output failed: {e}]\n").as_bytes());
                break;
            }
        };
        if let Some(f) = file.as_mut() {
            let _ = f.write_all(&buf[..n]).await;
        }
        tail.extend_from_slice(&buf[..n]);
        if tail.len() > 2 * TAIL_BYTES {
            tail.drain(..tail.len() - TAIL_BYTES);
        }
    }
    if tail.len() > TAIL_BYTES {
        tail.drain(..tail.len() - TAIL_BYTES);
    }
    // tokio's File writes in the background; without a flush the log may
    // still be empty when the caller (or fetch_logs) reads it.
    if let Some(f) = file.as_mut() {
        let _ = f.flush().await;
    }
    String::from_utf8_lossy(&tail).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A command's exit code and output tails are reported, and its output is logged.
    #[tokio::test]
    async fn exit_code_and_output_are_captured_and_logged() {
        let dir = tempfile::tempdir().unwrap();
        let out = Exec::shell("echo hello; echo oops >&2; exit 3", &[])
            .log_to(dir.path().join("log/x"))
            .run()
            .await
            .unwrap();
        assert_eq!(out.code, 3);
        assert_eq!(out.stdout, "hello\n");
        assert_eq!(out.stderr, "oops\n");
        assert_eq!(out.tail(), "hello\noops");
        let logged = std::fs::read_to_string(dir.path().join("log/x.stdout.log")).unwrap();
        assert_eq!(logged, "hello\n");
    }

    /// Only the tail of a long output is kept in memory.
    #[tokio::test]
    async fn long_output_is_truncated_to_its_tail() {
        let out = Exec::shell("seq 1 100000", &[("PATH".into(), "/usr/bin:/bin".into())])
            .run()
            .await
            .unwrap();
        assert!(out.stdout.len() <= TAIL_BYTES);
        assert!(out.stdout.ends_with("100000\n"));
    }
}
