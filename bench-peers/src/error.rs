//! Why a benchmark step failed, and why a system is not run at all.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("cannot {what} {path}: {source}")]
    Io { what: &'static str, path: String, source: std::io::Error },
    #[error("cannot start `{program}`: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("cannot reserve a free TCP port on 127.0.0.1: {source}")]
    FreePort { source: std::io::Error },
    #[error("server {name} exited during the run ({status}); the end of its log:\n{log_tail}")]
    ServerExited { name: String, status: String, log_tail: String },
    #[error(
        "{system} was not healthy after {waited_s} s (raise --start-timeout-s if the machine is busy); last error: {last_error}"
    )]
    NotHealthy { system: String, waited_s: u64, last_error: String },
    #[error("{system}: {operation} failed: {message}")]
    Client { system: &'static str, operation: &'static str, message: String },
    #[error("{system}: an append got no acknowledgement within {timeout_s} s (is the cluster partitioned or stuck?)")]
    AppendTimeout { system: &'static str, timeout_s: u64 },
    #[error("{system}: a read got no answer within {timeout_s} s")]
    ReadTimeout { system: &'static str, timeout_s: u64 },
    #[error("{system}: read back message {index}, which {problem}")]
    ReadMismatch { system: &'static str, index: u64, problem: &'static str },
    #[error("a load task panicked or was cancelled: {message}")]
    Task { message: String },
    #[error(transparent)]
    Cpu(#[from] crate::cpu::CpuError),
    #[error(
        "data directory {path} is on {fs_type}, where fsync costs nothing: pass --data-dir on a disk-backed file system"
    )]
    DataDirWithoutDisk { path: String, fs_type: String },
}

impl BenchError {
    pub fn io(what: &'static str, path: &Path, source: std::io::Error) -> BenchError {
        BenchError::Io { what, path: path.display().to_string(), source }
    }

    pub fn client(system: &'static str, operation: &'static str, error: impl std::fmt::Display) -> BenchError {
        BenchError::Client { system, operation, message: error.to_string() }
    }
}

/// Why a system gets a row without numbers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    #[error("{program} not found and not running as root: run `{command}`, then rerun")]
    NotInstalled { program: &'static str, command: String },
    #[error("{reason}")]
    NotBuilt { reason: String },
    #[error("{program} not found after `{command}`; looked in {looked_in}")]
    NotFoundAfterInstall { program: &'static str, command: String, looked_in: String },
    #[error("install failed: {message}")]
    InstallFailed { message: String },
}
