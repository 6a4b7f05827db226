//! `GET /metrics`: the server's counters in the Prometheus text format.
//!
//! Owns the process-wide metric set (`ServerMetrics`: commits, view changes,
//! storage latency histograms, per-group status), a collector that reads the
//! counters other layers keep as plain atomics at scrape time (the bus's
//! `BusMetrics`, the shards' `frame_drops_total`), and a deliberately small
//! HTTP endpoint: one bounded request per connection, `GET /metrics` or 404.
//! The encoding is `prometheus-client`'s; nothing here formats metrics by hand.
//!
//! Metrics never decide anything: reading them changes no state.

use std::net::SocketAddr;
use std::sync::Arc;

use compio::BufResult;
use compio::io::{AsyncRead, AsyncWriteExt};
use compio::net::{TcpListener, TcpStream};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use shoal_shard::metrics::FrameDrops;
use shoal_shard::owner_table::ShardId;

use crate::bus::BusMetrics;

/// The most bytes of a request read before it is answered or refused: the
/// request line and headers of a scrape fit easily, a flood does not.
pub const REQUEST_SIZE_MAX_BYTES: usize = 8 * 1024;
/// A scrape connection that sends no whole request line in this long is closed.
pub const REQUEST_TIMEOUT_MS: u64 = 5_000;
/// Latency buckets: 16 µs doubling to about 0.5 s.
const LATENCY_BUCKET_START_SECS: f64 = 16e-6;
const LATENCY_BUCKET_COUNT: u16 = 16;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StorageLabels {
    /// `write_prepare`, `write_superblock`, `checkpoint`, `truncate_log`;
    /// `compaction_window`: a journal compaction from its stage to its install.
    pub action: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabels {
    /// The group's namespace, in hex (`0x8000000000000000` is metadata).
    pub namespace: String,
    /// The shard of the process that runs the group.
    pub shard: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    /// The replica's drop reason (`request_queue_full`, `primary_catching_up`, ...).
    pub reason: &'static str,
    pub shard: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShardLabels {
    pub shard: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
    pub shard: u16,
    /// `replica` or `client`: who is on the other end.
    pub peer: &'static str,
}

/// What the node's hooks record; shared by every shard of the process.
#[derive(Debug)]
pub struct ServerMetrics {
    pub commits: Counter,
    /// Client requests committed: a packed op counts each of its requests,
    /// so `committed_requests / commits` is the requests per op.
    pub committed_requests: Counter,
    /// Journal flushes of prepares (one per group per group commit: one
    /// write per run of slots and one fdatasync) and the prepares they
    /// made durable: `flushed_prepares / journal_flushes` is the group
    /// commit's width.
    pub journal_flushes: Counter,
    pub flushed_prepares: Counter,
    /// Turns of the shards' serving loops (frames read in one go, then one
    /// group commit) and the frames they handed to the node.
    pub turns: Counter,
    pub turn_frames: Counter,
    /// Ops committed by the groups of each shard.
    pub shard_commits: Family<ShardLabels, Counter>,
    /// Connections each shard holds now (handshake done), by peer kind.
    pub shard_connections: Family<ConnectionLabels, Gauge>,
    pub view_changes: Counter,
    /// Seconds from a storage action's start to its durable completion.
    pub storage_latency_seconds: Family<StorageLabels, Histogram>,
    pub group_view: Family<GroupLabels, Gauge>,
    pub group_commit: Family<GroupLabels, Gauge>,
    /// 1 while the group's replica is in normal status, else 0.
    pub group_normal: Family<GroupLabels, Gauge>,
    /// Messages the replicas of a shard's groups dropped, by reason (summed
    /// over the groups at every tick; a group's count restarts with it).
    pub replica_drops: Family<DropLabels, Gauge>,
}

impl Default for ServerMetrics {
    fn default() -> Self {
        ServerMetrics {
            commits: Counter::default(),
            committed_requests: Counter::default(),
            journal_flushes: Counter::default(),
            flushed_prepares: Counter::default(),
            turns: Counter::default(),
            turn_frames: Counter::default(),
            shard_commits: Family::default(),
            shard_connections: Family::default(),
            view_changes: Counter::default(),
            storage_latency_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(LATENCY_BUCKET_START_SECS, 2.0, LATENCY_BUCKET_COUNT))
            }),
            group_view: Family::default(),
            group_commit: Family::default(),
            group_normal: Family::default(),
            replica_drops: Family::default(),
        }
    }
}

impl ServerMetrics {
    pub fn group_labels(namespace: u64, shard: ShardId) -> GroupLabels {
        GroupLabels { namespace: format!("{namespace:#x}"), shard: shard.0 }
    }

    pub fn shard_labels(shard: ShardId) -> ShardLabels {
        ShardLabels { shard: shard.0 }
    }
}

/// Reads the bus and frame-drop atomics at scrape time.
#[derive(Debug)]
struct AtomicsCollector {
    bus: Arc<BusMetrics>,
    /// Indexed by shard.
    drops: Vec<Arc<FrameDrops>>,
}

impl Collector for AtomicsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let bus = self.bus.snapshot();
        let (allocations, allocated_bytes) = crate::alloc_count::snapshot();
        let counters = [
            ("bus_connections_accepted", "Connections accepted by the bus listeners", bus.connections_accepted),
            ("bus_connections_dialed", "Connections this replica dialed to peers", bus.connections_dialed),
            ("bus_handshakes_completed", "Connections whose hello was accepted", bus.handshakes_completed),
            ("bus_frames_received", "Verified frames received", bus.frames_received),
            ("bus_frames_sent", "Frames written to sockets", bus.frames_sent),
            ("bus_send_frames_dropped", "Frames refused by a full send queue", bus.send_frames_dropped),
            ("bus_owner_conflicts", "Replica connections refused by the owner table", bus.owner_conflicts),
            (
                "bus_handoffs_dropped",
                "Accepted connections closed because their shard's queue of connections to take was full",
                bus.handoffs_dropped,
            ),
            ("process_allocations", "Heap allocations made by this process (0: not counted)", allocations),
            ("process_allocated_bytes", "Bytes of heap allocations made by this process", allocated_bytes),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)?;
        }
        let mut closed = encoder.encode_descriptor(
            "bus_connections_closed",
            "Connections the bus closed, by reason",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (reason, count) in bus.closed {
            ConstCounter::new(count).encode(closed.encode_family(&[("reason", reason)])?)?;
        }
        let mut drops = encoder.encode_descriptor(
            "frame_drops",
            "Frames dropped between shards or at delivery, by shard, variant and reason",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (shard, shard_drops) in self.drops.iter().enumerate() {
            let shard = shard.to_string();
            for ((variant, reason), count) in shard_drops.snapshot() {
                let labels = [("shard", shard.as_str()), ("variant", variant.name()), ("reason", reason.name())];
                ConstCounter::new(count).encode(drops.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// The registry a scrape encodes: the server metrics plus the atomics.
/// `drops` holds one set of frame-drop counters per shard, indexed by shard.
pub fn registry(metrics: &ServerMetrics, bus: Arc<BusMetrics>, drops: Vec<Arc<FrameDrops>>) -> Registry {
    let mut registry = Registry::with_prefix("shoal");
    registry.register("commits", "Ops committed by this replica's groups", metrics.commits.clone());
    registry.register(
        "committed_requests",
        "Client requests committed by this replica's groups (a packed op counts each)",
        metrics.committed_requests.clone(),
    );
    registry.register(
        "journal_flushes",
        "Group commits of prepares (one fdatasync each)",
        metrics.journal_flushes.clone(),
    );
    registry.register(
        "flushed_prepares",
        "Prepares made durable by the journal flushes",
        metrics.flushed_prepares.clone(),
    );
    registry.register("turns", "Turns of the shards' serving loops (one group commit each)", metrics.turns.clone());
    registry.register("turn_frames", "Frames handed to the node in the shards' turns", metrics.turn_frames.clone());
    registry.register("shard_commits", "Ops committed by the groups of each shard", metrics.shard_commits.clone());
    registry.register(
        "shard_connections",
        "Connections each shard holds (handshake done), by peer kind",
        metrics.shard_connections.clone(),
    );
    registry.register("view_changes", "Views entered by this replica's groups", metrics.view_changes.clone());
    registry.register(
        "storage_latency_seconds",
        "Storage action latency until durable, by action",
        metrics.storage_latency_seconds.clone(),
    );
    registry.register("group_view", "The view of each group's replica", metrics.group_view.clone());
    registry.register("group_commit", "The commit number of each group's replica", metrics.group_commit.clone());
    registry.register("group_normal", "1 while the group's replica is in normal status.", metrics.group_normal.clone());
    registry.register(
        "replica_drops",
        "Messages the replicas of each shard's groups dropped, by reason",
        metrics.replica_drops.clone(),
    );
    registry.register_collector(Box::new(AtomicsCollector { bus, drops }));
    registry
}

/// The text a scrape returns.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry).expect("writing to a String cannot fail");
    out
}

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot listen for metrics on {address}: {source}; pick a free network.metrics_address")]
    Bind { address: SocketAddr, source: std::io::Error },
}

/// Bind the metrics address (before the shards serve, so a taken port is a
/// start-up error, not a silent gap in monitoring).
pub async fn bind(address: SocketAddr) -> Result<TcpListener, MetricsError> {
    TcpListener::bind(address).await.map_err(|source| MetricsError::Bind { address, source })
}

/// Answer scrapes until the listener fails; one connection at a time (a
/// scrape is small and rare, and this keeps memory bounded).
pub async fn serve(listener: TcpListener, registry: Arc<Registry>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { return };
        let timeout = std::time::Duration::from_millis(REQUEST_TIMEOUT_MS);
        if compio::time::timeout(timeout, answer(stream, &registry)).await.is_err() {
            tracing::debug!("metrics: a scrape connection timed out");
        }
    }
}

async fn answer(mut stream: TcpStream, registry: &Registry) {
    let Some(request) = read_request_head(&mut stream).await else { return };
    let response = match request_target(&request) {
        Some("/metrics") => {
            let body = render(registry);
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        }
        Some(_) => not_found(),
        None => "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string(),
    };
    let BufResult(_, _) = stream.write_all(response.into_bytes()).await;
}

fn not_found() -> String {
    let body = "only GET /metrics is served here\n";
    format!("HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
}

/// Bytes up to the end of the request head, or `None` if the peer closed
/// or sent more than `REQUEST_SIZE_MAX_BYTES` without ending it.
async fn read_request_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    while head.len() < REQUEST_SIZE_MAX_BYTES {
        let buffer = Vec::with_capacity(REQUEST_SIZE_MAX_BYTES - head.len());
        let BufResult(result, buffer) = stream.read(buffer).await;
        match result {
            Ok(0) | Err(_) => return None,
            Ok(_) => head.extend_from_slice(&buffer),
        }
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            return Some(head);
        }
    }
    None
}

/// The target of a `GET` request line; `None` for anything else.
fn request_target(head: &[u8]) -> Option<&str> {
    let line = head.split(|&b| b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    (method == "GET" && version.starts_with("HTTP/1") && parts.next().is_none()).then_some(target)
}

#[cfg(test)]
mod tests {
    use shoal_shard::frame::FrameVariant;
    use shoal_shard::metrics::DropReason;

    use super::*;

    #[test]
    fn request_lines_are_parsed_strictly() {
        assert_eq!(request_target(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), Some("/metrics"));
        assert_eq!(request_target(b"POST /metrics HTTP/1.1\r\n\r\n"), None);
        assert_eq!(request_target(b"GET /metrics\r\n\r\n"), None);
        assert_eq!(request_target(b"GET /metrics HTTP/1.1 extra\r\n\r\n"), None);
        assert_eq!(request_target(b"\xff\xfe\r\n\r\n"), None);
    }

    #[test]
    fn the_rendered_text_carries_every_family_with_its_values() {
        let metrics = ServerMetrics::default();
        let bus = Arc::new(BusMetrics::default());
        let drops = vec![Arc::new(FrameDrops::new()), Arc::new(FrameDrops::new())];
        metrics.commits.inc_by(7);
        metrics.committed_requests.inc_by(9);
        metrics.journal_flushes.inc();
        metrics.turns.inc_by(2);
        metrics.view_changes.inc();
        metrics.storage_latency_seconds.get_or_create(&StorageLabels { action: "write_prepare" }).observe(0.001);
        metrics.group_view.get_or_create(&ServerMetrics::group_labels(1 << 63, ShardId(0))).set(3);
        metrics.shard_commits.get_or_create(&ServerMetrics::shard_labels(ShardId(1))).inc_by(5);
        BusMetrics::bump(&bus.frames_received);
        drops[1].bump(FrameVariant::Consensus, DropReason::InboxFull);
        let text = render(&registry(&metrics, bus, drops));
        for expected in [
            "shoal_commits_total 7",
            "shoal_committed_requests_total 9",
            "shoal_journal_flushes_total 1",
            "shoal_turns_total 2",
            "shoal_view_changes_total 1",
            "shoal_storage_latency_seconds_count{action=\"write_prepare\"} 1",
            "shoal_group_view{namespace=\"0x8000000000000000\",shard=\"0\"} 3",
            "shoal_shard_commits_total{shard=\"1\"} 5",
            "shoal_bus_frames_received_total 1",
            "shoal_frame_drops_total{shard=\"1\",variant=\"consensus\",reason=\"inbox_full\"} 1",
            "shoal_frame_drops_total{shard=\"0\",variant=\"consensus\",reason=\"inbox_full\"} 0",
        ] {
            assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
        }
    }
}
