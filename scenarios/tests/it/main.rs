//! Integration tests of `shoal-sim`: the built binary (exit codes, output,
//! files it writes) over the real simulator, and the CLI library over the
//! fake simulator for the failure paths the real one cannot yet produce.

mod binary;
mod buggify;
mod fake_cli;
mod k8s;
mod liveness_seeds;
mod slices;

use std::path::PathBuf;

/// A fresh directory under the target dir for one test's files.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("shoal-sim-it-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
