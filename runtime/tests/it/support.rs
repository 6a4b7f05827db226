//! Temp directories and runtimes for the integration tests.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use shoal_runtime::{DriverChoice, RealIo, build_runtime};

/// A fresh directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let unique = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("shoal-it-{}-{label}-{unique}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Run `body` with a fresh `RealIo` on a runtime built with `choice`.
pub fn with_io<F, Fut>(choice: DriverChoice, body: F)
where
    F: FnOnce(RealIo) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let runtime = build_runtime(choice).expect("build compio runtime");
    runtime.block_on(async move {
        let io = RealIo::new();
        body(io).await;
    });
}

/// Both drivers this machine offers: `Auto` (io_uring or its fallback) and the
/// forced polling driver, so the fallback path is exercised everywhere.
pub const DRIVERS: [DriverChoice; 2] = [DriverChoice::Auto, DriverChoice::Polling];
