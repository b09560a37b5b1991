//! The agent's error type: every failure a method can report, each naming
//! what it failed on so the director's exception message is actionable.

use std::path::PathBuf;

/// A boxed error from a crate whose error type the agent only passes on.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Everything an agent method can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file system operation failed.
    #[error("failed to {what} {}", path.display())]
    Io {
        /// What was being done (`read`, `create`, ...).
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The settings file is missing or malformed.
    #[error("invalid settings file {}", path.display())]
    Settings {
        /// The settings file.
        path: PathBuf,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// A method's arguments do not have the documented shape.
    #[error("invalid arguments for {method}: {message}")]
    Arguments {
        /// The method.
        method: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A blob could not be downloaded, verified or uploaded.
    #[error("blob {sha256} ({what})")]
    Blob {
        /// The blob's sha256 (or `upload`).
        sha256: String,
        /// What the blob was for, e.g. `package nginx`.
        what: String,
        /// The blobstore client's error.
        #[source]
        source: BoxError,
    },
    /// An archive was refused or could not be written.
    #[error("archive {name} refused")]
    Archive {
        /// Which archive (e.g. `package nginx`).
        name: String,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// A job script or packaging script exited non-zero.
    #[error("{job}: {script} exited with code {code}; output tail: {tail}")]
    Script {
        /// The job (or `package <name>`).
        job: String,
        /// The script, e.g. `bin/pre-start`.
        script: String,
        /// Its exit code (-1 when killed by a signal).
        code: i32,
        /// The last lines of its output.
        tail: String,
    },
    /// A script could not be started or printed something unexpected.
    #[error("{job}: {script}: {message}")]
    ScriptProtocol {
        /// The job.
        job: String,
        /// The script.
        script: String,
        /// What went wrong.
        message: String,
    },
    /// A job's monit file could not be parsed.
    #[error("job {job}: invalid monit file: {message}")]
    Monit {
        /// The job.
        job: String,
        /// What is wrong.
        message: String,
    },
    /// A supervised process could not be started or stopped.
    #[error("process {process}: {message}")]
    Process {
        /// The process name.
        process: String,
        /// What went wrong.
        message: String,
    },
    /// A disk operation was refused.
    #[error("disk {cid}: {message}")]
    Disk {
        /// The disk CID.
        cid: String,
        /// Why.
        message: String,
    },
    /// `ssh` refused or failed (bad parameters, an agent that does not own
    /// its machine, an account tool or sshd that failed).
    #[error("ssh {command}: {message}")]
    Ssh {
        /// `setup` or `cleanup`.
        command: String,
        /// Why.
        message: String,
    },
    /// `get_task` / `cancel_task` for a task the agent does not know.
    #[error("task {0} not found")]
    TaskNotFound(String),
    /// The task was cancelled by `cancel_task`.
    #[error("task {0} was cancelled")]
    Cancelled(String),
    /// Talking to NATS failed.
    #[error("NATS: {0}")]
    Nats(#[source] BoxError),
}

impl Error {
    /// An [`Error::Io`] constructor for `map_err`.
    pub fn io(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { what, path, source }
    }

    /// The message with every source appended, as sent in exceptions.
    pub fn chain(&self) -> String {
        let mut s = self.to_string();
        let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(self);
        while let Some(e) = cur {
            s.push_str(": ");
            s.push_str(&e.to_string());
            cur = e.source();
        }
        s
    }
}

/// The agent's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
