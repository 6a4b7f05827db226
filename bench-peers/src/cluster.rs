//! Server processes of one benchmark cluster, and the guard that removes them.
//!
//! Every server the benchmark starts is owned by a `Cluster`; dropping it
//! (normal return, `?` on an error, or a panic unwinding) kills the
//! processes, waits for them and removes their data directory. So a failed
//! run leaves no server holding ports or CPU for the next system.

use std::fs::File;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::error::BenchError;

/// Lines of a server's log quoted in an error when it dies during start.
const LOG_TAIL_LINES_MAX: usize = 15;

#[derive(Debug)]
struct ServerProcess {
    name: String,
    child: Child,
    log_path: PathBuf,
}

#[derive(Debug)]
pub struct Cluster {
    dir: PathBuf,
    servers: Vec<ServerProcess>,
    keep_dir: bool,
}

impl Cluster {
    /// Create (empty) `dir` for this cluster's data and logs. An old
    /// directory of the same name is a leftover of a killed run: removed.
    pub fn create(dir: PathBuf, keep_dir: bool) -> Result<Cluster, BenchError> {
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(|source| BenchError::io("remove the old data directory", &dir, source))?;
        }
        std::fs::create_dir_all(&dir).map_err(|source| BenchError::io("create the data directory", &dir, source))?;
        Ok(Cluster { dir, servers: Vec::new(), keep_dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Start one server; its stdout and stderr go to `<dir>/<name>.log`.
    pub fn spawn(&mut self, name: &str, mut command: Command) -> Result<(), BenchError> {
        let log_path = self.dir.join(format!("{name}.log"));
        let log =
            File::create(&log_path).map_err(|source| BenchError::io("create the server log", &log_path, source))?;
        let log_err =
            log.try_clone().map_err(|source| BenchError::io("duplicate the server log", &log_path, source))?;
        command.stdin(Stdio::null()).stdout(log).stderr(log_err);
        let program = command.get_program().to_string_lossy().into_owned();
        let child = command.spawn().map_err(|source| BenchError::Spawn { program, source })?;
        self.servers.push(ServerProcess { name: name.to_owned(), child, log_path });
        Ok(())
    }

    pub fn pids(&self) -> Vec<u32> {
        self.servers.iter().map(|server| server.child.id()).collect()
    }

    pub fn log_path(&self, name: &str) -> Option<&Path> {
        self.servers.iter().find(|server| server.name == name).map(|server| server.log_path.as_path())
    }

    /// An error for the first server that has exited, with its log's tail:
    /// waiting for health is pointless once a member is gone.
    pub fn check_alive(&mut self) -> Result<(), BenchError> {
        for server in &mut self.servers {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(BenchError::ServerExited {
                    name: server.name.clone(),
                    status: status.to_string(),
                    log_tail: log_tail(&server.log_path),
                });
            }
        }
        Ok(())
    }

    /// Kill and reap every server and remove the directory. Idempotent.
    pub fn stop(&mut self) {
        for server in &mut self.servers {
            // SIGKILL: nothing the servers hold is kept after the run, and a
            // graceful shutdown of a loaded server can take seconds.
            let _ = server.child.kill();
            let _ = server.child.wait();
        }
        self.servers.clear();
        if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES_MAX)..].join("\n")
}

/// `count` distinct free TCP ports on 127.0.0.1. All listeners are held
/// until every port is chosen, so the kernel cannot hand one out twice; a
/// port can still be taken by another process before the server binds it,
/// which then fails the start with the server's own message.
pub fn free_ports(count: usize) -> Result<Vec<u16>, BenchError> {
    let mut listeners = Vec::with_capacity(count);
    for _ in 0..count {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|source| BenchError::FreePort { source })?;
        listeners.push(listener);
    }
    listeners
        .iter()
        .map(|listener| listener.local_addr().map(|address| address.port()))
        .collect::<Result<_, _>>()
        .map_err(|source| BenchError::FreePort { source })
}

/// File-system type of the mount holding `path` (longest matching mount
/// point in /proc/mounts), e.g. "ext4" or "tmpfs".
pub fn filesystem_type(path: &Path) -> Option<String> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    let path = path.canonicalize().ok()?;
    filesystem_type_in(&mounts, &path)
}

fn filesystem_type_in(mounts: &str, path: &Path) -> Option<String> {
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_device, mount_point, fs_type) = (fields.next()?, fields.next()?, fields.next()?);
            path.starts_with(mount_point).then(|| (mount_point.len(), fs_type.to_owned()))
        })
        .max_by_key(|(mount_point_len, _)| *mount_point_len)
        .map(|(_, fs_type)| fs_type)
}

/// File systems where fsync returns without touching a disk: a durability
/// comparison measured there would be meaningless.
pub fn fsync_is_free_on(fs_type: &str) -> bool {
    matches!(fs_type, "tmpfs" | "ramfs")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTS: &str = "/dev/vda / ext4 rw,relatime 0 0\n\
                          tmpfs /tmp tmpfs rw,nosuid 0 0\n\
                          proc /proc proc rw 0 0\n";

    #[test]
    fn the_longest_mount_point_decides_the_file_system() {
        assert_eq!(filesystem_type_in(MOUNTS, Path::new("/tmp/shoal")).as_deref(), Some("tmpfs"));
        assert_eq!(filesystem_type_in(MOUNTS, Path::new("/work/target")).as_deref(), Some("ext4"));
        // A path component match, not a string prefix: /tmpdir is not under /tmp.
        assert_eq!(filesystem_type_in(MOUNTS, Path::new("/tmpdir")).as_deref(), Some("ext4"));
        assert!(fsync_is_free_on("tmpfs"));
        assert!(!fsync_is_free_on("ext4"));
    }

    #[test]
    fn free_ports_are_distinct() {
        let ports = free_ports(9).unwrap();
        let mut sorted = ports.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 9);
        assert!(ports.iter().all(|&port| port != 0));
    }

    #[test]
    fn dropping_a_cluster_kills_its_servers_and_removes_its_directory() {
        let dir = std::env::temp_dir().join(format!("shoal-bench-peers-test-{}", std::process::id()));
        let mut cluster = Cluster::create(dir.clone(), false).unwrap();
        let mut sleeper = Command::new("sleep");
        sleeper.arg("600");
        cluster.spawn("sleeper", sleeper).unwrap();
        let pid = cluster.pids()[0];
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        cluster.check_alive().unwrap();
        drop(cluster);
        assert!(!dir.exists());
        // Reaped, so the pid is gone (or reused by an unrelated process that is not `sleep 600`).
        let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert_ne!(cmdline, "sleep\x00600\x00");
    }

    #[test]
    fn a_server_that_exits_during_start_is_reported_with_its_log() {
        let dir = std::env::temp_dir().join(format!("shoal-bench-peers-test-exit-{}", std::process::id()));
        let mut cluster = Cluster::create(dir, false).unwrap();
        let mut failing = Command::new("sh");
        failing.args(["-c", "echo 'bad config line 3' >&2; exit 7"]);
        cluster.spawn("n1", failing).unwrap();
        let pid = cluster.pids()[0];
        // Bounded wait for the short-lived process to exit.
        for _ in 0..200 {
            if cluster.check_alive().is_err() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let error = cluster.check_alive().unwrap_err();
        let text = error.to_string();
        assert!(text.contains("n1") && text.contains("bad config line 3"), "{text} (pid {pid})");
    }
}
