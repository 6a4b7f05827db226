//! Real `shoal-server` processes for the integration tests: format three
//! data dirs, start, `kill -9`, SIGTERM and restart replicas, scrape their
//! metrics, and kill whatever still runs when the test ends (the `Drop` of
//! `Cluster` runs on a panic too, so a failing test leaves no process behind).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use shoal_client::{Client, ClientConfig};

use crate::support::TempDir;

pub const CLUSTER: u128 = 0x5eed_c1a5;
pub const REPLICA_COUNT: u8 = 3;
/// The `--message-size-max` every test replica runs with.
pub const MESSAGE_SIZE_MAX_BYTES: u32 = 16 * 1024;
/// The `--idle-timeout-ms` every test replica runs with (shorter than the
/// default, so the stall tests wait less).
pub const IDLE_TIMEOUT_MS: u64 = 2_000;
/// Shards per replica unless a test sets `Cluster::shards`: two, so every
/// test runs groups on both sides of the shards' hop whatever the machine.
pub const SHARDS_DEFAULT: usize = 2;
const EXIT_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound on one metrics scrape.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Replica {
    pub data_dir: PathBuf,
    child: Option<Child>,
}

pub struct Cluster {
    _temp: TempDir,
    pub replica_addresses: Vec<SocketAddr>,
    pub client_addresses: Vec<SocketAddr>,
    pub metrics_addresses: Vec<SocketAddr>,
    pub replicas: Vec<Replica>,
    /// Shards per replica process (`--test-shard-count`, unpinned).
    pub shards: usize,
    /// `--message-size-max` of every replica started from now on.
    pub message_size_max_bytes: u32,
}

/// Where chosen ports start: below it are the well-known and registered
/// ports daemons may hold.
const TEST_PORT_LOW: u16 = 10_000;
/// Candidates tried per port before giving up (each a bind that failed).
const TEST_PORT_ATTEMPTS_MAX: usize = 1_000;

/// Ports free now, below the kernel's ephemeral range, all held until every
/// one is chosen. Not port 0: the kernel hands out ephemeral ports as the
/// source ports of outgoing connections too, so another test's client could
/// take one between this release and the server's bind (CI, session 30: a
/// replica failed "cannot listen on 127.0.0.1:37319: Address already in
/// use"). Below the range only another test choosing the same port, at
/// random among some twenty thousand, can collide.
fn free_addresses(count: usize) -> Vec<SocketAddr> {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    assert!(ephemeral_low > TEST_PORT_LOW + 1_000, "ephemeral ports start at {ephemeral_low}: too low to pick below");
    let span = u64::from(ephemeral_low - TEST_PORT_LOW);
    let mut draw = std::hash::BuildHasher::build_hasher(&std::collections::hash_map::RandomState::new());
    let mut listeners: Vec<TcpListener> = Vec::with_capacity(count);
    for attempt in 0..count * TEST_PORT_ATTEMPTS_MAX {
        if listeners.len() == count {
            break;
        }
        std::hash::Hasher::write_usize(&mut draw, attempt);
        let port = TEST_PORT_LOW + (std::hash::Hasher::finish(&draw) % span) as u16;
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            listeners.push(listener);
        }
    }
    assert_eq!(listeners.len(), count, "no {count} free ports below {ephemeral_low}");
    listeners.iter().map(|l| l.local_addr().unwrap()).collect()
}

impl Cluster {
    pub fn format(label: &str) -> Cluster {
        let temp = TempDir::new(label);
        let count = usize::from(REPLICA_COUNT);
        let mut addresses = free_addresses(3 * count);
        let metrics_addresses = addresses.split_off(2 * count);
        let client_addresses = addresses.split_off(count);
        let mut replicas = Vec::new();
        for index in 0..REPLICA_COUNT {
            let data_dir = temp.path().join(format!("replica-{index}"));
            let status = Command::new(env!("CARGO_BIN_EXE_shoal-server"))
                .args(["format", "--cluster", &CLUSTER.to_string(), "--replica", &index.to_string()])
                .args(["--replica-count", &REPLICA_COUNT.to_string()])
                .arg(&data_dir)
                .stderr(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success(), "format replica {index}");
            replicas.push(Replica { data_dir, child: None });
        }
        Cluster {
            _temp: temp,
            replica_addresses: addresses,
            client_addresses,
            metrics_addresses,
            replicas,
            shards: SHARDS_DEFAULT,
            message_size_max_bytes: MESSAGE_SIZE_MAX_BYTES,
        }
    }

    /// Replica `index` lost its disk (it must not run): wipe its data dir
    /// and format it again with `--rejoin`, as an operator replacing the
    /// disk of a running cluster does.
    pub fn wipe_and_format_rejoining(&mut self, index: usize) {
        assert!(self.replicas[index].child.is_none(), "replica {index} still runs");
        let data_dir = &self.replicas[index].data_dir;
        std::fs::remove_dir_all(data_dir).unwrap();
        let status = Command::new(env!("CARGO_BIN_EXE_shoal-server"))
            .args(["format", "--rejoin", "--cluster", &CLUSTER.to_string(), "--replica", &index.to_string()])
            .args(["--replica-count", &REPLICA_COUNT.to_string()])
            .arg(data_dir)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "format --rejoin replica {index}");
    }

    pub fn start(&mut self, index: usize) {
        assert!(self.replicas[index].child.is_none(), "replica {index} is already running");
        let list = |addresses: &[SocketAddr]| addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(",");
        let mut child = Command::new(env!("CARGO_BIN_EXE_shoal-server"))
            .arg("start")
            .arg("--data-dir")
            .arg(&self.replicas[index].data_dir)
            .args(["--cluster", &CLUSTER.to_string(), "--replica", &index.to_string()])
            .args(["--replica-count", &REPLICA_COUNT.to_string()])
            .args(["--replica-addresses", &list(&self.replica_addresses)])
            .args(["--client-address", &self.client_addresses[index].to_string()])
            .args(["--metrics-address", &self.metrics_addresses[index].to_string()])
            // Small journals: 128 slots of 16 KiB, 2 MiB per group.
            .args(["--message-size-max", &self.message_size_max_bytes.to_string(), "--journal-slot-count", "128"])
            .args(["--idle-timeout-ms", &IDLE_TIMEOUT_MS.to_string()])
            .arg("--no-pin")
            .args(["--test-shard-count", &self.shards.to_string()])
            .env("RUST_LOG", std::env::var("SHOAL_TEST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start shoal-server");
        // Keep the pipe drained (and the log visible under --nocapture).
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[replica {index}] {line}");
            }
        });
        self.replicas[index].child = Some(child);
        self.wait_until_serving(index);
    }

    /// Wait (bounded) until replica `index` serves metrics, which it binds
    /// after installing its signal handler: a SIGTERM sent earlier would
    /// kill it by the default action instead of stopping it cleanly. A
    /// replica that exits on its own is left for the test to judge.
    fn wait_until_serving(&mut self, index: usize) {
        let deadline = Instant::now() + EXIT_TIMEOUT;
        while self.try_scrape(index).is_err() && self.is_running(index) {
            assert!(Instant::now() < deadline, "replica {index} did not serve metrics within {EXIT_TIMEOUT:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn start_all(&mut self) {
        for index in 0..self.replicas.len() {
            self.start(index);
        }
    }

    /// `kill -9`: no flush, no goodbye.
    pub fn crash(&mut self, index: usize) {
        let mut child = self.replicas[index].child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM and wait for the clean exit.
    pub fn stop(&mut self, index: usize) {
        let mut child = self.replicas[index].child.take().expect("running");
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "replica {index} exited with {status} after SIGTERM");
                return;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("replica {index} did not stop within {EXIT_TIMEOUT:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop_all(&mut self) {
        for index in 0..self.replicas.len() {
            self.stop(index);
        }
    }

    /// Wait (bounded by `timeout`) for replica `index` to exit on its own,
    /// and return how it exited; `None` if it still runs (it is left
    /// running).
    pub fn wait_for_exit(&mut self, index: usize, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.replicas[index].child.as_mut().expect("running");
            if let Some(status) = child.try_wait().unwrap() {
                self.replicas[index].child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether replica `index`'s process still runs (it did not exit on its own).
    pub fn is_running(&mut self, index: usize) -> bool {
        match self.replicas[index].child.as_mut() {
            Some(child) => child.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    pub fn client_config(&self, id: u128) -> ClientConfig {
        let mut config = ClientConfig::new(CLUSTER, self.client_addresses.clone()).with_client_id(id);
        // 30 s: a view change after a crash, and process start-up, fit well.
        config.request_timeout_ticks = 3_000;
        config
    }

    pub fn client(&self, id: u128) -> Client {
        Client::new(self.client_config(id)).unwrap()
    }

    /// `GET /metrics` of replica `index`: the whole response, headers included.
    pub fn scrape(&self, index: usize) -> String {
        self.try_scrape(index).unwrap()
    }

    /// `scrape`, or why it failed (a replica still starting is not serving
    /// metrics yet).
    pub fn try_scrape(&self, index: usize) -> std::io::Result<String> {
        let mut stream = TcpStream::connect_timeout(&self.metrics_addresses[index], SCRAPE_TIMEOUT)?;
        stream.set_read_timeout(Some(SCRAPE_TIMEOUT))?;
        stream.write_all(b"GET /metrics HTTP/1.1\r\n\r\n")?;
        let mut text = String::new();
        stream.read_to_string(&mut text)?;
        Ok(text)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for replica in &mut self.replicas {
            if let Some(mut child) = replica.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// The value of one sample line `name{labels} value` (or `name value`) in a
/// Prometheus text scrape; `None` when the sample is absent.
pub fn sample(scrape: &str, series: &str) -> Option<u64> {
    scrape.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}
