//! Finding server binaries, and installing them with the system's own
//! package manager when the benchmark runs as root.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::Unavailable;

pub fn is_root() -> bool {
    // The effective uid is the owner of /proc/self (std has no geteuid).
    std::fs::metadata("/proc/self").is_ok_and(|metadata| std::os::unix::fs::MetadataExt::uid(&metadata) == 0)
}

/// `program` in `extra_dirs` (first) or on PATH, if it is an executable file.
pub fn find_program(program: &str, extra_dirs: &[PathBuf]) -> Option<PathBuf> {
    let path_dirs =
        std::env::var_os("PATH").map(|path| std::env::split_paths(&path).collect::<Vec<_>>()).unwrap_or_default();
    extra_dirs.iter().chain(path_dirs.iter()).map(|dir| dir.join(program)).find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
}

/// Run an install command, echoing it first (the operator sees what the
/// benchmark does to the machine).
pub fn run_install(program: &str, args: &[&str]) -> Result<(), Unavailable> {
    let shown = std::iter::once(program).chain(args.iter().copied()).collect::<Vec<_>>().join(" ");
    eprintln!("$ {shown}");
    let status = Command::new(program)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .map_err(|error| Unavailable::InstallFailed { message: format!("cannot start `{shown}`: {error}") })?;
    if status.success() {
        Ok(())
    } else {
        Err(Unavailable::InstallFailed { message: format!("`{shown}` failed ({status})") })
    }
}

/// First line of `program --version` (or `args`), trimmed.
pub fn version_output(program: &Path, args: &[&str]) -> Option<String> {
    let output = Command::new(program).args(args).output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    Some(text.trim().to_owned()).filter(|text| !text.is_empty())
}
