//! The client port of a running 3-replica cluster under hostile bytes: each
//! bad connection is closed (EOF or reset, within a bound), its reason is
//! counted in `GET /metrics` (`shoal_bus_connections_closed_total{reason}`),
//! the server process survives, and a client appending in the background
//! keeps getting acknowledgements after every attack.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use shoal_client::Client;
use shoal_runtime::bus::{BUS_PROTOCOL_VERSION, Hello, Peer};
use shoal_shard::namespace::Namespace;
use shoal_vsr::header::{Command, HEADER_SIZE_BYTES, Header};

use crate::process::{CLUSTER, Cluster, IDLE_TIMEOUT_MS, MESSAGE_SIZE_MAX_BYTES, sample};

/// The replica whose client port is attacked: the primary of view 0, so
/// its surviving is what keeps the cluster committing without a view change.
const ATTACKED: usize = 0;
/// A refused connection must see EOF or a reset within this.
const CLOSE_BOUND: Duration = Duration::from_secs(5);
/// The stalled half-header waits for the server's idle timeout, then this.
const STALL_MARGIN: Duration = Duration::from_secs(5);
/// Appends acknowledged after an attack before the next one starts...
const ACKS_AFTER_ATTACK: u64 = 3;
/// ...within this (a retry timeout plus slack; no view change is expected).
const PROGRESS_BOUND: Duration = Duration::from_secs(30);
/// A counter the server bumped before closing is visible to a scrape within this.
const METRIC_BOUND: Duration = Duration::from_secs(2);
const APPENDER_CLIENT: u128 = 2;

fn closed_series(reason: &str) -> String {
    format!("shoal_bus_connections_closed_total{{reason=\"{reason}\"}}")
}

fn client_hello(cluster: u128, version: u16) -> Vec<u8> {
    Hello { version, cluster, peer: Peer::Client(0xbad), message_size_max_bytes: 0 }.encode().to_vec()
}

/// A well-formed, correctly checksummed prepare, as a backup would receive
/// from its primary.
fn forged_prepare() -> Vec<u8> {
    let mut header = Header::new(Command::Prepare, CLUSTER);
    header.namespace = Namespace::partition(1, 1, 0).unwrap().raw();
    header.op = 1_000_000;
    header.view = 0;
    header.replica = 1;
    let body = b"forged by a client";
    header.set_checksums(body);
    header.encode_message(body)
}

/// A header that says its frame is exactly one byte over the limit, with a
/// body to match.
fn oversized_frame() -> Vec<u8> {
    let size = MESSAGE_SIZE_MAX_BYTES + 1;
    let body = vec![0x42u8; size as usize - HEADER_SIZE_BYTES];
    let mut header = Header::new(Command::Request, CLUSTER);
    header.set_checksums(&body);
    assert_eq!(header.size, size);
    header.encode_message(&body)
}

/// The first half of a valid request header.
fn half_header() -> Vec<u8> {
    let mut header = Header::new(Command::Request, CLUSTER);
    header.set_checksums(&[]);
    header.encode()[..HEADER_SIZE_BYTES / 2].to_vec()
}

/// Open a connection to `address` and send `bytes`. A write may fail once
/// the server has closed (it need not read a refused frame to its end).
fn send_raw(address: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect_timeout(&address, CLOSE_BOUND).unwrap();
    stream.set_write_timeout(Some(CLOSE_BOUND)).unwrap();
    let _ = stream.write_all(bytes);
    stream
}

/// Read (the server's hello, then nothing) until EOF or a reset; panic if
/// the connection is still open after `bound` from `since`.
fn assert_closed(mut stream: TcpStream, since: Instant, bound: Duration, what: &str) {
    let deadline = since + bound;
    let mut buffer = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "{what}: the server kept the connection open for {bound:?}");
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buffer) {
            Ok(0) => return,
            Ok(_) => {}
            Err(error) if matches!(error.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => return,
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(error) => panic!("{what}: unexpected read error {error}"),
        }
    }
}

/// A client appending one message at a time until stopped, counting acks.
struct Appender {
    acked: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), String>>>,
}

impl Appender {
    fn start(cluster: &Cluster) -> Appender {
        let config = cluster.client_config(APPENDER_CLIENT);
        let acked = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (acked, stop) = (acked.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut client = Client::new(config).map_err(|error| error.to_string())?;
                let partition = Namespace::partition(1, 1, 0).unwrap();
                let mut last_offset = None;
                while !stop.load(Ordering::Relaxed) {
                    let index = acked.load(Ordering::Relaxed);
                    let offset = client
                        .append(partition, format!("steady-{index}").as_bytes())
                        .map_err(|error| format!("append {index}: {error}"))?;
                    if last_offset.is_some_and(|last| offset <= last) {
                        return Err(format!("append {index} acknowledged at offset {offset} after {last_offset:?}"));
                    }
                    last_offset = Some(offset);
                    acked.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            })
        };
        Appender { acked, stop, thread: Some(thread) }
    }

    /// Wait (bounded) until `ACKS_AFTER_ATTACK` more appends are acknowledged.
    fn assert_progress(&mut self, after: &str) {
        let start = self.acked.load(Ordering::Relaxed);
        let deadline = Instant::now() + PROGRESS_BOUND;
        while self.acked.load(Ordering::Relaxed) < start + ACKS_AFTER_ATTACK {
            if self.thread.as_ref().is_some_and(JoinHandle::is_finished) {
                self.finish();
            }
            assert!(Instant::now() < deadline, "no progress within {PROGRESS_BOUND:?} after {after}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stop and surface the appender's error, if it had one.
    fn finish(&mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("appender panicked").unwrap_or_else(|error| panic!("appender: {error}"));
        }
        self.acked.load(Ordering::Relaxed)
    }
}

impl Drop for Appender {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The reason counter of the attacked replica, 0 when it has not been reported yet.
fn closed_count(cluster: &Cluster, reason: &str) -> u64 {
    let scrape = cluster.scrape(ATTACKED);
    assert!(scrape.contains("shoal_bus_connections_closed_total"), "no close counters in:\n{scrape}");
    sample(&scrape, &closed_series(reason)).unwrap_or(0)
}

fn assert_counted(cluster: &Cluster, reason: &str, before: u64) {
    let deadline = Instant::now() + METRIC_BOUND;
    loop {
        let now = closed_count(cluster, reason);
        if now > before {
            return;
        }
        assert!(Instant::now() < deadline, "{} stayed at {now} (was {before})", closed_series(reason));
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn hostile_client_connections_are_closed_counted_and_the_cluster_keeps_committing() {
    let mut cluster = Cluster::format("wire");
    cluster.start_all();
    let mut admin = cluster.client(1);
    admin.create_stream(1, "orders").unwrap();
    admin.create_topic(1, 1, "events", 1).unwrap();
    let mut appender = Appender::start(&cluster);
    appender.assert_progress("start-up");
    let address = cluster.client_addresses[ATTACKED];

    // The stall goes first: it runs out the server's idle timeout while the
    // other attacks are made.
    let stall_before = closed_count(&cluster, "idle_timeout");
    let stall_started = Instant::now();
    let stalled = send_raw(address, &[client_hello(CLUSTER, BUS_PROTOCOL_VERSION), half_header()].concat());
    // And one that connects and never says hello: the same bound is its
    // handshake timeout.
    let silent = send_raw(address, &[]);

    let garbage: Vec<u8> = (0..512u32).map(|i| (i.wrapping_mul(0x9e37_79b9) >> 24) as u8).collect();
    let hello = client_hello(CLUSTER, BUS_PROTOCOL_VERSION);
    let attacks: [(&str, Vec<u8>, &str); 6] = [
        ("garbage instead of a hello", garbage.clone(), "bad_hello"),
        ("garbage after a valid hello", [hello.clone(), garbage].concat(), "bad_header_checksum"),
        ("a forged prepare", [hello.clone(), forged_prepare()].concat(), "client_sent_replica_command"),
        ("a hello of another cluster", client_hello(CLUSTER + 1, BUS_PROTOCOL_VERSION), "wrong_cluster"),
        ("a frame one byte over the limit", [hello, oversized_frame()].concat(), "frame_too_large"),
        (
            "a hello of another protocol version",
            client_hello(CLUSTER, BUS_PROTOCOL_VERSION + 1),
            "wrong_protocol_version",
        ),
    ];
    for (what, bytes, reason) in attacks {
        let before = closed_count(&cluster, reason);
        let started = Instant::now();
        assert_closed(send_raw(address, &bytes), started, CLOSE_BOUND, what);
        assert_counted(&cluster, reason, before);
        assert!(cluster.is_running(ATTACKED), "the replica exited after {what}");
        appender.assert_progress(what);
    }

    let idle_timeout = Duration::from_millis(IDLE_TIMEOUT_MS);
    assert_closed(stalled, stall_started, idle_timeout + STALL_MARGIN, "a half header that stalls");
    assert_closed(silent, stall_started, idle_timeout + STALL_MARGIN, "a connection that never says hello");
    assert!(stall_started.elapsed() >= idle_timeout, "closed before the idle timeout ran out");
    assert_counted(&cluster, "idle_timeout", stall_before + 1);
    appender.assert_progress("a half header that stalls");

    let acked = appender.finish();
    assert!(acked >= 8 * ACKS_AFTER_ATTACK, "only {acked} appends acknowledged");
    for index in 0..cluster.replicas.len() {
        assert!(cluster.is_running(index), "replica {index} exited");
    }
    cluster.stop_all();
}
