//! etcd: 3 members of Debian's `etcd-server`, one key per message.
//!
//! etcd's raft log fsyncs every batch of entries before the leader counts
//! its own vote and before a follower acknowledges, so an acknowledged put
//! is on disk on a quorum: the same promise as shoal's. A message is a put
//! of a 1 KiB value under a key made from its index; reads are linearizable
//! range reads in key order (one consensus round per batch, not per key).
//!
//! The client (`etcd-client`) is compiled only with the `etcd` feature: its
//! build script needs `protoc`. Without it, the row says how to get it.

use std::path::PathBuf;
#[cfg(feature = "etcd")]
use std::process::Command;
#[cfg(feature = "etcd")]
use std::time::{Duration, Instant};

#[cfg(feature = "etcd")]
use crate::cluster;
use crate::cluster::Cluster;
use crate::error::{BenchError, Unavailable};
use crate::install;
use crate::system::{ReadBatch, StartSettings, System};
#[cfg(feature = "etcd")]
use crate::workload::payload_index;

#[cfg(feature = "etcd")]
const MEMBERS_COUNT: usize = 3;
const SYSTEM_NAME: &str = "etcd";
const INSTALL_ARGS: [&str; 3] = ["install", "-y", "etcd-server"];
/// Keys are `shoal-bench/` then the message index, zero-padded so that key
/// order is index order and a range read returns messages in log order.
#[cfg_attr(not(feature = "etcd"), allow(dead_code))] // used by the driver and its tests
const KEY_PREFIX: &str = "shoal-bench/";
/// The first key after every `shoal-bench/...` key ('0' follows '/').
#[cfg(feature = "etcd")]
const KEY_RANGE_END: &str = "shoal-bench0";
#[cfg(feature = "etcd")]
const HEALTH_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Bound on one gRPC call while probing health (the workload bounds the others).
#[cfg(feature = "etcd")]
const HEALTH_CALL_TIMEOUT: Duration = Duration::from_secs(2);
#[cfg(feature = "etcd")]
const CLUSTER_TOKEN: &str = "shoal-bench-peers";

#[cfg_attr(not(feature = "etcd"), allow(dead_code))] // used by the driver and its tests
/// One member's place in the cluster.
#[derive(Debug, Clone)]
pub struct EtcdMember {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
}

/// Command-line flags of one member of a new cluster of `members`.
#[cfg_attr(not(feature = "etcd"), allow(dead_code))] // used by the driver and its tests
pub fn member_args(member: &EtcdMember, members: &[EtcdMember], cluster_token: &str) -> Vec<String> {
    assert!(members.iter().any(|other| other.name == member.name), "a member belongs to its cluster");
    let client_url = format!("http://127.0.0.1:{}", member.client_port);
    let peer_url = format!("http://127.0.0.1:{}", member.peer_port);
    let initial_cluster = members
        .iter()
        .map(|other| format!("{}=http://127.0.0.1:{}", other.name, other.peer_port))
        .collect::<Vec<_>>()
        .join(",");
    [
        ("--name", member.name.clone()),
        ("--data-dir", member.data_dir.display().to_string()),
        ("--listen-client-urls", client_url.clone()),
        ("--advertise-client-urls", client_url),
        ("--listen-peer-urls", peer_url.clone()),
        ("--initial-advertise-peer-urls", peer_url),
        ("--initial-cluster", initial_cluster),
        ("--initial-cluster-state", "new".to_owned()),
        ("--initial-cluster-token", cluster_token.to_owned()),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.to_owned(), value])
    .collect()
}

/// `3.4.23 (git abc1234)` from `etcd --version`; Debian's build records no SHA.
pub fn parse_version(output: &str) -> Option<String> {
    let field = |name: &str| {
        output.lines().find_map(|line| line.trim().strip_prefix(name).map(|value| value.trim().to_owned()))
    };
    let version = field("etcd Version:")?;
    match field("Git SHA:") {
        Some(sha) if !sha.is_empty() && !sha.starts_with("Not provided") => Some(format!("{version} (git {sha})")),
        _ => Some(format!("{version} (no git SHA in this build)")),
    }
}

#[cfg_attr(not(feature = "etcd"), allow(dead_code))] // used by the driver and its tests
pub fn key(index: u64) -> String {
    format!("{KEY_PREFIX}{index:020}")
}

#[derive(Default)]
pub struct Etcd {
    binary: Option<PathBuf>,
    version: String,
    cluster: Option<Cluster>,
    #[cfg(feature = "etcd")]
    client: Option<etcd_client::Client>,
    /// Index of the first message the next read asks for.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    read_from_index: u64,
}

// etcd_client::Client has no Debug.
impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd").field("binary", &self.binary).field("version", &self.version).finish_non_exhaustive()
    }
}

fn install_command() -> String {
    format!("apt-get {}", INSTALL_ARGS.join(" "))
}

impl System for Etcd {
    fn name(&self) -> String {
        SYSTEM_NAME.to_owned()
    }

    fn durability(&self) -> String {
        "fsync before ack (raft log, always)".to_owned()
    }

    fn install(&mut self) -> Result<String, Unavailable> {
        if !cfg!(feature = "etcd") {
            return Err(Unavailable::NotBuilt {
                reason: "built without the `etcd` feature: run `cargo xtask bench peers` (it enables the \
                         feature; etcd-client needs protoc: `apt-get install -y protobuf-compiler`)"
                    .to_owned(),
            });
        }
        let binary = match install::find_program("etcd", &[]) {
            Some(binary) => binary,
            None if install::is_root() => {
                // A fresh machine may have no package lists yet: update once, then retry.
                if install::run_install("apt-get", &INSTALL_ARGS).is_err() {
                    install::run_install("apt-get", &["update"])?;
                    install::run_install("apt-get", &INSTALL_ARGS)?;
                }
                install::find_program("etcd", &[]).ok_or_else(|| Unavailable::NotFoundAfterInstall {
                    program: "etcd",
                    command: install_command(),
                    looked_in: "PATH".to_owned(),
                })?
            }
            None => return Err(Unavailable::NotInstalled { program: "etcd", command: install_command() }),
        };
        let output = install::version_output(&binary, &["--version"]).unwrap_or_default();
        self.version = parse_version(&output).unwrap_or(output);
        self.binary = Some(binary.clone());
        Ok(format!("etcd {} ({})", self.version, binary.display()))
    }

    #[cfg(feature = "etcd")]
    async fn start(&mut self, settings: &StartSettings) -> Result<(), BenchError> {
        let binary = self.binary.clone().expect("install() found the binary");
        let ports = cluster::free_ports(2 * MEMBERS_COUNT)?;
        let (client_ports, peer_ports) = ports.split_at(MEMBERS_COUNT);
        let mut cluster = Cluster::create(settings.dir.clone(), settings.keep_dir)?;
        let members: Vec<EtcdMember> = client_ports
            .iter()
            .zip(peer_ports)
            .enumerate()
            .map(|(index, (&client_port, &peer_port))| {
                let name = format!("e{}", index + 1);
                EtcdMember { data_dir: cluster.dir().join(&name), name, client_port, peer_port }
            })
            .collect();
        for member in &members {
            let mut command = Command::new(&binary);
            command.args(member_args(member, &members, CLUSTER_TOKEN));
            // Flags only: an ETCD_* variable in the caller's environment (Debian's
            // /etc/default/etcd is sourced by some shells' service wrappers) would
            // override or conflict with them.
            for (name, _) in std::env::vars_os() {
                if name.to_string_lossy().starts_with("ETCD_") {
                    command.env_remove(name);
                }
            }
            cluster.spawn(&member.name, command)?;
        }
        self.cluster = Some(cluster);
        let endpoints: Vec<String> = client_ports.iter().map(|port| format!("http://127.0.0.1:{port}")).collect();
        let client = wait_until_healthy(self.cluster.as_mut().expect("just set"), &endpoints, settings.timeout).await?;
        self.client = Some(client);
        self.read_from_index = 0;
        Ok(())
    }

    #[cfg(not(feature = "etcd"))]
    async fn start(&mut self, _settings: &StartSettings) -> Result<(), BenchError> {
        unreachable!("install() refuses to run etcd without the `etcd` feature")
    }

    fn version(&self) -> String {
        self.version.clone()
    }

    fn server_pids(&self) -> Vec<u32> {
        self.cluster.as_ref().map(Cluster::pids).unwrap_or_default()
    }

    #[cfg(feature = "etcd")]
    fn append(&self, payload: Vec<u8>) -> impl Future<Output = Result<(), BenchError>> + Send + 'static {
        let kv = self.client.as_ref().map(etcd_client::Client::kv_client);
        async move {
            let mut kv = kv.ok_or_else(|| BenchError::client(SYSTEM_NAME, "put", "cluster not started"))?;
            let index = payload_index(&payload).expect("the workload's payloads carry their index");
            kv.put(key(index), payload, None).await.map_err(|e| BenchError::client(SYSTEM_NAME, "put", e))?;
            Ok(())
        }
    }

    #[cfg(not(feature = "etcd"))]
    fn append(&self, _payload: Vec<u8>) -> impl Future<Output = Result<(), BenchError>> + Send + 'static {
        // Never called (install() refuses), but an error is safer than a panic.
        std::future::ready(Err(BenchError::client(SYSTEM_NAME, "put", "built without the `etcd` feature")))
    }

    #[cfg(feature = "etcd")]
    async fn read(&mut self, count: usize) -> Result<ReadBatch, BenchError> {
        let mut kv = self
            .client
            .as_ref()
            .map(etcd_client::Client::kv_client)
            .ok_or_else(|| BenchError::client(SYSTEM_NAME, "range", "cluster not started"))?;
        let limit = i64::try_from(count).unwrap_or(i64::MAX);
        let options = etcd_client::GetOptions::new().with_range(KEY_RANGE_END).with_limit(limit);
        let response = kv
            .get(key(self.read_from_index), Some(options))
            .await
            .map_err(|e| BenchError::client(SYSTEM_NAME, "range", e))?;
        let mut batch = ReadBatch::default();
        for entry in response.kvs() {
            let index = payload_index(entry.value()).ok_or(BenchError::ReadMismatch {
                system: SYSTEM_NAME,
                index: self.read_from_index,
                problem: "has a value shorter than its index",
            })?;
            if entry.key() != key(index).as_bytes() {
                return Err(BenchError::ReadMismatch {
                    system: SYSTEM_NAME,
                    index,
                    problem: "is stored under another key",
                });
            }
            batch.indices.push(index);
            batch.payload_bytes += entry.value().len() as u64;
            self.read_from_index = index + 1;
        }
        Ok(batch)
    }

    #[cfg(not(feature = "etcd"))]
    async fn read(&mut self, _count: usize) -> Result<ReadBatch, BenchError> {
        unreachable!("install() refuses to run etcd without the `etcd` feature")
    }

    fn stop(&mut self) {
        #[cfg(feature = "etcd")]
        {
            self.client = None;
        }
        if let Some(mut cluster) = self.cluster.take() {
            cluster.stop();
        }
    }
}

/// Connect, then wait until all members have joined (a member that has not
/// started yet is listed without a name) and a put commits.
#[cfg(feature = "etcd")]
async fn wait_until_healthy(
    cluster: &mut Cluster,
    endpoints: &[String],
    timeout: Duration,
) -> Result<etcd_client::Client, BenchError> {
    let started = Instant::now();
    let mut last_error: String;
    let options =
        etcd_client::ConnectOptions::new().with_connect_timeout(HEALTH_CALL_TIMEOUT).with_timeout(HEALTH_CALL_TIMEOUT);
    loop {
        cluster.check_alive()?;
        match probe(endpoints, options.clone()).await {
            Ok(client) => return Ok(client),
            Err(error) => last_error = error,
        }
        if started.elapsed() > timeout {
            return Err(BenchError::NotHealthy {
                system: format!("{SYSTEM_NAME} ({MEMBERS_COUNT} members)"),
                waited_s: timeout.as_secs(),
                last_error,
            });
        }
        tokio::time::sleep(HEALTH_POLL_INTERVAL).await;
    }
}

#[cfg(feature = "etcd")]
async fn probe(endpoints: &[String], options: etcd_client::ConnectOptions) -> Result<etcd_client::Client, String> {
    let mut client =
        etcd_client::Client::connect(endpoints, Some(options)).await.map_err(|e| format!("connect: {e}"))?;
    let members = client.member_list().await.map_err(|e| format!("member list: {e}"))?;
    let started_count = members.members().iter().filter(|member| !member.name().is_empty()).count();
    if started_count < MEMBERS_COUNT {
        return Err(format!("{started_count} of {MEMBERS_COUNT} members started"));
    }
    client.put(format!("{KEY_PREFIX}health"), "ok", None).await.map_err(|e| format!("put: {e}"))?;
    client.delete(format!("{KEY_PREFIX}health"), None).await.map_err(|e| format!("delete: {e}"))?;
    // A client built with the probe's short timeouts would fail slow appends
    // under load; the workload bounds every operation itself.
    etcd_client::Client::connect(endpoints, None).await.map_err(|e| format!("connect: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members() -> Vec<EtcdMember> {
        (1..=3)
            .map(|n| EtcdMember {
                name: format!("e{n}"),
                client_port: 2400 + n,
                peer_port: 2500 + n,
                data_dir: PathBuf::from(format!("/data/e{n}")),
            })
            .collect()
    }

    #[test]
    fn a_member_listens_on_loopback_and_names_every_peer_in_the_initial_cluster() {
        let members = members();
        let args = member_args(&members[1], &members, "token-7");
        let expected = [
            "--name",
            "e2",
            "--data-dir",
            "/data/e2",
            "--listen-client-urls",
            "http://127.0.0.1:2402",
            "--advertise-client-urls",
            "http://127.0.0.1:2402",
            "--listen-peer-urls",
            "http://127.0.0.1:2502",
            "--initial-advertise-peer-urls",
            "http://127.0.0.1:2502",
            "--initial-cluster",
            "e1=http://127.0.0.1:2501,e2=http://127.0.0.1:2502,e3=http://127.0.0.1:2503",
            "--initial-cluster-state",
            "new",
            "--initial-cluster-token",
            "token-7",
        ];
        assert_eq!(args, expected);
    }

    #[test]
    fn keys_sort_in_index_order() {
        assert!(key(9) < key(10));
        assert!(key(999_999) < key(1_000_000));
        assert_eq!(key(42), "shoal-bench/00000000000000000042");
    }

    #[test]
    fn the_version_says_when_the_build_recorded_no_git_sha() {
        let debian =
            "etcd Version: 3.4.23\nGit SHA: Not provided (use ./build instead of go build)\nGo Version: go1.19.8\n";
        assert_eq!(parse_version(debian).as_deref(), Some("3.4.23 (no git SHA in this build)"));
        let upstream = "etcd Version: 3.5.17\nGit SHA: 507c0de\n";
        assert_eq!(parse_version(upstream).as_deref(), Some("3.5.17 (git 507c0de)"));
        assert_eq!(parse_version("command not found"), None);
    }
}
