//! The decoder on real sockets (compio): a bounded accept loop, and a
//! connection that reads into its `ConnectionDecoder`, hands verified frames
//! to a callback, and writes its `Outbox`.
//!
//! One connection lives on the shard (thread) that runs it; its frames are
//! handed to the callback on that thread. The owner table records which
//! shard holds each replica's connection. A listener may hand what it
//! accepts to another shard (`Listener::accept_hellos`): it reads the
//! peer's hello first, so the caller can pick the shard by who the peer is,
//! and an `Accepted` crosses threads as a plain socket.

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use compio::BufResult;
use compio::buf::{IntoInner, IoBuf};
use compio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use compio::net::{TcpListener, TcpStream};
use shoal_shard::owner_table::{OwnerError, ReplicaOwnerTable, ShardId};

use super::backoff::Backoff;
use super::decoder::{CloseReason, ConnectionDecoder, Decoded, DecoderConfig, Expect, Frame};
use super::hello::{HELLO_SIZE_BYTES, Hello, Peer};
use super::metrics::BusMetrics;
use super::send_queue::{OutFrame, Outbox, SEND_QUEUE_BYTES_MAX, SEND_QUEUE_FRAMES_MAX, outbox};

/// Connections one listener holds at once; past it, new ones are closed at accept.
pub const CONNECTIONS_PER_LISTENER_MAX: usize = 1024;
/// How long a connection may sit with an incomplete hello or frame before it
/// is closed: a stalled half-frame pins a receive buffer, so it must not last.
pub const IDLE_TIMEOUT_MS: u64 = 10_000;
/// The most bytes one socket read asks for.
pub const READ_CHUNK_BYTES: usize = 64 * 1024;

/// What every connection of one bus endpoint shares.
#[derive(Debug, Clone)]
pub struct BusConfig {
    pub cluster: u128,
    /// Who this endpoint says it is in its hello.
    pub local: Peer,
    pub message_size_max_bytes: u32,
    pub connections_max: usize,
    pub idle_timeout: Duration,
    pub send_queue_frames_max: usize,
    pub send_queue_bytes_max: usize,
}

impl BusConfig {
    pub fn new(cluster: u128, local: Peer) -> BusConfig {
        BusConfig {
            cluster,
            local,
            message_size_max_bytes: shoal_vsr::header::MESSAGE_SIZE_MAX_BYTES,
            connections_max: CONNECTIONS_PER_LISTENER_MAX,
            idle_timeout: Duration::from_millis(IDLE_TIMEOUT_MS),
            send_queue_frames_max: SEND_QUEUE_FRAMES_MAX,
            send_queue_bytes_max: SEND_QUEUE_BYTES_MAX,
        }
    }
}

/// Which shard holds replica connections, so one replica has one owner.
#[derive(Debug, Clone)]
pub struct Ownership {
    pub table: Arc<ReplicaOwnerTable>,
    pub shard: ShardId,
}

/// What a connection reports to its owner.
// Passed by value to the callback once per frame; boxing the frame would add
// an allocation per frame only to shrink the rare variants.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum BusEvent<'a> {
    /// The peer's hello was accepted; `outbox` sends to it.
    Connected {
        peer: Peer,
        outbox: &'a Outbox,
    },
    Frame {
        peer: Peer,
        frame: Frame,
        outbox: &'a Outbox,
    },
    /// The connection ended: `reason` is `None` for a clean close or an I/O error.
    Closed {
        peer: Option<Peer>,
        reason: Option<CloseReason>,
    },
}

pub type OnEvent = Rc<dyn Fn(BusEvent<'_>)>;

/// Run one connection to its end. `preread` holds bytes already read from
/// the socket (a hello a listener read to place the connection), decoded
/// before anything else. Returns why the bus closed it (`None`: the peer
/// closed cleanly or the socket failed).
pub async fn run_connection(
    stream: TcpStream,
    expect: Expect,
    preread: &[u8],
    config: &BusConfig,
    metrics: &Arc<BusMetrics>,
    ownership: Option<&Ownership>,
    on_event: &OnEvent,
) -> Option<CloseReason> {
    let _ = stream.set_nodelay(true);
    let mut decoder = ConnectionDecoder::new(DecoderConfig {
        cluster: config.cluster,
        expect,
        message_size_max_bytes: config.message_size_max_bytes,
    });
    let fed = decoder.feed(preread);
    assert_eq!(fed, preread.len(), "a hello fits any receive buffer");
    let (outbox, receiver) = outbox(config.send_queue_frames_max, config.send_queue_bytes_max, metrics.clone());
    // Our hello goes first, ahead of any queued frame; it states our frame
    // limit, so a client learns it before it sends a request past it.
    let hello = Hello::new(config.cluster, config.local)
        .stating_message_size_max(config.message_size_max_bytes)
        .encode()
        .to_vec();
    let _ = outbox.send(OutFrame::new(hello));
    let writer = {
        let mut stream = stream.clone();
        let metrics = metrics.clone();
        compio::runtime::spawn(async move {
            while let Some(frame) = receiver.recv().await {
                let BufResult(result, _) = stream.write_all(frame).await;
                if result.is_err() {
                    break;
                }
                BusMetrics::bump(&metrics.frames_sent);
            }
        })
    };
    let mut peer = None;
    let mut stream = stream;
    let reason = loop {
        match decoder.poll() {
            Decoded::Hello(hello_peer) => {
                peer = Some(hello_peer);
                BusMetrics::bump(&metrics.handshakes_completed);
                if let (Peer::Replica(replica), Some(ownership)) = (hello_peer, ownership) {
                    claim(ownership, replica, metrics);
                }
                on_event(BusEvent::Connected { peer: hello_peer, outbox: &outbox });
                continue;
            }
            Decoded::Frame(frame) => {
                BusMetrics::bump(&metrics.frames_received);
                let peer = peer.expect("frames follow the hello");
                on_event(BusEvent::Frame { peer, frame, outbox: &outbox });
                continue;
            }
            Decoded::Closed(reason) => break Some(reason),
            Decoded::NeedMore => {}
        }
        let incomplete = decoder.peer().is_none() || decoder.buffered_bytes() > 0;
        // The read lands in the decoder's own buffer, after the bytes it
        // holds: no chunk to allocate per read and copy from. A timed-out
        // read takes the buffer with it, and the connection closes.
        let read_bytes_max = decoder.read_bytes_max(READ_CHUNK_BYTES);
        let buffer = decoder.lend_buffer(read_bytes_max);
        let held_bytes = buffer.len();
        let read = stream.read(buffer.slice(held_bytes..held_bytes + read_bytes_max));
        let BufResult(result, buffer) = if incomplete {
            match compio::time::timeout(config.idle_timeout, read).await {
                Ok(read) => read,
                Err(_) => break Some(CloseReason::IdleTimeout),
            }
        } else {
            read.await
        };
        let read_bytes = decoder.return_buffer(buffer.into_inner());
        match result {
            Ok(0) => break decoder.finish(),
            Ok(read) => debug_assert_eq!(read, read_bytes, "the read appended what it reports"),
            Err(error) => {
                tracing::debug!(?peer, %error, "bus connection read failed");
                break None;
            }
        }
    };
    drop(writer);
    if let Some(reason) = &reason {
        metrics.record_close(reason);
        tracing::warn!(?peer, reason = reason.label(), "closing bus connection: {reason}");
    }
    if let (Some(Peer::Replica(replica)), Some(ownership)) = (peer, ownership) {
        // A newer connection may have taken the slot over: then this clear
        // fails, harmlessly, and the newer owner stays.
        if let Err(error) = ownership.table.clear(replica, ownership.shard) {
            tracing::debug!(replica, %error, "owner slot already taken over");
        }
    }
    on_event(BusEvent::Closed { peer, reason: reason.clone() });
    let _ = stream.close().await;
    reason
}

/// Stamp the owner slot; a newer connection replaces an older one held by
/// another shard.
fn claim(ownership: &Ownership, replica: u8, metrics: &BusMetrics) {
    match ownership.table.stamp(replica, ownership.shard) {
        Ok(()) => {}
        Err(OwnerError::AlreadyOwned { owner, .. }) => {
            if let Err(error) = ownership.table.take_over(replica, owner, ownership.shard) {
                BusMetrics::bump(&metrics.owner_conflicts);
                tracing::warn!(replica, %error, "cannot take over the replica's owner slot");
            }
        }
        Err(error) => {
            BusMetrics::bump(&metrics.owner_conflicts);
            tracing::warn!(replica, %error, "cannot stamp the replica's owner slot");
        }
    }
}

/// One place in a listener's connection limit, held by a connection until
/// it ends, on whichever shard runs it.
#[derive(Debug)]
pub struct OpenSlot {
    open: Arc<AtomicUsize>,
}

impl OpenSlot {
    /// Take one more place of the count `open` (the caller checked the limit).
    pub(crate) fn take(open: &Arc<AtomicUsize>) -> OpenSlot {
        open.fetch_add(1, Ordering::AcqRel);
        OpenSlot { open: open.clone() }
    }
}

impl Drop for OpenSlot {
    fn drop(&mut self) {
        let before = self.open.fetch_sub(1, Ordering::AcqRel);
        assert!(before > 0, "a slot is released once");
    }
}

/// A connection a listener accepted and read the hello of, not run yet: a
/// plain socket, so it may be handed to the shard that will run it.
#[derive(Debug)]
pub struct Accepted {
    pub stream: std::net::TcpStream,
    /// The peer's first `HELLO_SIZE_BYTES`, fed to the connection's
    /// decoder first (it checks cluster, version and role).
    pub hello: [u8; HELLO_SIZE_BYTES],
    /// Who the hello names, if it decodes at all.
    pub peer: Option<Peer>,
    pub expect: Expect,
    pub slot: OpenSlot,
}

impl Accepted {
    /// Run the connection on this thread's runtime to its end.
    pub async fn run(
        self,
        config: &BusConfig,
        metrics: &Arc<BusMetrics>,
        ownership: Option<&Ownership>,
        on_event: &OnEvent,
    ) {
        let Accepted { stream, hello, expect, slot, .. } = self;
        match TcpStream::from_std(stream) {
            Ok(stream) => {
                run_connection(stream, expect, &hello, config, metrics, ownership, on_event).await;
            }
            Err(error) => tracing::warn!(%error, "cannot run an accepted connection on this shard"),
        }
        drop(slot);
    }
}

/// A bound listener with a connection limit.
#[derive(Debug)]
pub struct Listener {
    listener: TcpListener,
    expect: Expect,
    config: BusConfig,
    metrics: Arc<BusMetrics>,
    /// Connections accepted and not ended yet, on any shard.
    open: Arc<AtomicUsize>,
}

impl Listener {
    pub async fn bind(
        address: SocketAddr,
        expect: Expect,
        config: BusConfig,
        metrics: Arc<BusMetrics>,
    ) -> std::io::Result<Listener> {
        assert!(matches!(expect, Expect::Inbound { .. }), "a listener expects inbound peers");
        let listener = TcpListener::bind(address).await?;
        Ok(Listener { listener, expect, config, metrics, open: Arc::new(AtomicUsize::new(0)) })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Accept one connection within the limit: its slot, or `None` when
    /// the listener is full (the connection is closed, counted).
    async fn accept_within_limit(&self) -> (TcpStream, SocketAddr, Option<OpenSlot>) {
        loop {
            let (stream, address) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    // EMFILE and friends: back off briefly rather than spin.
                    tracing::warn!(%error, "accept failed");
                    compio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            // Only this task increments, so load-then-add cannot pass the limit.
            if self.open.load(Ordering::Acquire) >= self.config.connections_max {
                let reason = CloseReason::ListenerFull;
                self.metrics.record_close(&reason);
                tracing::warn!(%address, reason = reason.label(), "refusing bus connection: {reason}");
                return (stream, address, None);
            }
            BusMetrics::bump(&self.metrics.connections_accepted);
            return (stream, address, Some(OpenSlot::take(&self.open)));
        }
    }

    /// Accept until the returned future is dropped. Each connection runs as
    /// its own task on this thread.
    pub async fn serve(&self, ownership: Option<Ownership>, on_event: OnEvent) {
        loop {
            let (stream, _address, slot) = self.accept_within_limit().await;
            let Some(slot) = slot else { continue };
            let (expect, config, metrics, ownership, on_event) =
                (self.expect, self.config.clone(), self.metrics.clone(), ownership.clone(), on_event.clone());
            compio::runtime::spawn(async move {
                run_connection(stream, expect, &[], &config, &metrics, ownership.as_ref(), &on_event).await;
                drop(slot);
            })
            .detach();
        }
    }

    /// Accept until the returned future is dropped, read each connection's
    /// hello (a task per connection, bounded by the idle timeout), and hand
    /// it to `place`, which runs it here or on another shard. A connection
    /// that closes or stalls before a whole hello is closed (a stall is
    /// counted as an idle timeout).
    pub async fn accept_hellos(&self, place: Rc<dyn Fn(Accepted)>) {
        loop {
            let (stream, address, slot) = self.accept_within_limit().await;
            let Some(slot) = slot else { continue };
            let (expect, idle_timeout, metrics, place) =
                (self.expect, self.config.idle_timeout, self.metrics.clone(), place.clone());
            compio::runtime::spawn(async move {
                let Some(accepted) = read_hello(stream, expect, idle_timeout, &metrics, slot).await else {
                    tracing::debug!(%address, "bus connection closed before its hello");
                    return;
                };
                place(accepted);
            })
            .detach();
        }
    }
}

/// Read `stream`'s first `HELLO_SIZE_BYTES` within `idle_timeout` and turn
/// it into a plain socket (a duplicate of its descriptor: the runtime's own
/// handle is closed here).
async fn read_hello(
    mut stream: TcpStream,
    expect: Expect,
    idle_timeout: Duration,
    metrics: &BusMetrics,
    slot: OpenSlot,
) -> Option<Accepted> {
    let read = stream.read_exact([0u8; HELLO_SIZE_BYTES]);
    let hello = match compio::time::timeout(idle_timeout, read).await {
        Err(_) => {
            metrics.record_close(&CloseReason::IdleTimeout);
            return None;
        }
        Ok(BufResult(Err(_), _)) => return None,
        Ok(BufResult(Ok(()), hello)) => hello,
    };
    let peer = Hello::decode(&hello).ok().map(|hello| hello.peer);
    let owned = match stream.as_fd().try_clone_to_owned() {
        Ok(owned) => owned,
        Err(error) => {
            tracing::warn!(%error, "cannot duplicate an accepted socket (out of descriptors?)");
            return None;
        }
    };
    Some(Accepted { stream: std::net::TcpStream::from(owned), hello, peer, expect, slot })
}

/// Dial replica `remote` until the returned future is dropped: run each
/// connection to its end, then wait a jittered, exponentially growing delay
/// (`Backoff`) before the next attempt. The delay starts over after a
/// connection whose handshake completed, so a peer restart is redialled fast.
#[allow(clippy::too_many_arguments)]
pub async fn dial_forever(
    address: SocketAddr,
    remote: u8,
    config: &BusConfig,
    metrics: &Arc<BusMetrics>,
    ownership: Option<&Ownership>,
    on_event: &OnEvent,
    backoff: &mut Backoff,
) {
    loop {
        let handshakes_before = metrics.handshakes_completed.load(std::sync::atomic::Ordering::Relaxed);
        match dial(address, remote, config, metrics, ownership, on_event).await {
            Ok(reason) => tracing::info!(remote, ?reason, "connection to replica ended; redialling"),
            Err(error) => tracing::debug!(remote, %address, %error, "cannot reach replica"),
        }
        // Shared counters: another connection's handshake may also count, which
        // only resets the delay early (never lengthens it).
        if metrics.handshakes_completed.load(std::sync::atomic::Ordering::Relaxed) > handshakes_before {
            backoff.reset();
        }
        compio::time::sleep(Duration::from_millis(backoff.next_delay_ms())).await;
    }
}

/// Dial replica `remote` and run the connection to its end.
pub async fn dial(
    address: SocketAddr,
    remote: u8,
    config: &BusConfig,
    metrics: &Arc<BusMetrics>,
    ownership: Option<&Ownership>,
    on_event: &OnEvent,
) -> std::io::Result<Option<CloseReason>> {
    let stream = TcpStream::connect(address).await?;
    BusMetrics::bump(&metrics.connections_dialed);
    let expect = Expect::Outbound { remote_replica: remote };
    Ok(run_connection(stream, expect, &[], config, metrics, ownership, on_event).await)
}
