//! The bus on real loopback sockets: two endpoints exchange frames, and the
//! wire test, where each kind of bad peer is closed with its counted reason
//! while the listener keeps serving good connections.

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use shoal_runtime::bus::net::{BusConfig, BusEvent, Listener, OnEvent, dial};
use shoal_runtime::bus::{BusMetrics, Expect, HELLO_SIZE_BYTES, Hello, OutFrame, Peer};
use shoal_runtime::{DriverChoice, build_runtime};
use shoal_vsr::header::{Command, HEADER_SIZE_BYTES, Header, Operation};

const CLUSTER: u128 = 0x5ca1ab1e;
const TEST_TIMEOUT: Duration = Duration::from_secs(10);
const IDLE_TIMEOUT: Duration = Duration::from_millis(300);
const MESSAGE_SIZE_MAX_BYTES: u32 = 4096;

fn frame(cluster: u128, command: Command, op: u64, body: &[u8]) -> Vec<u8> {
    let mut header = Header::new(command, cluster);
    header.op = op;
    header.operation = if command == Command::Request { Operation::SendMessages } else { Operation::Reserved };
    header.set_checksums(body);
    header.encode_message(body)
}

fn config(local: Peer) -> BusConfig {
    BusConfig {
        idle_timeout: IDLE_TIMEOUT,
        message_size_max_bytes: MESSAGE_SIZE_MAX_BYTES,
        ..BusConfig::new(CLUSTER, local)
    }
}

#[test]
fn two_replicas_exchange_frames_over_loopback() {
    let runtime = build_runtime(DriverChoice::Auto).expect("runtime");
    runtime.block_on(async {
        let metrics = Arc::new(BusMetrics::default());
        let inbound = Expect::Inbound { local_replica: Some(1), clients: false };
        let listener =
            Listener::bind("127.0.0.1:0".parse().unwrap(), inbound, config(Peer::Replica(1)), metrics.clone())
                .await
                .unwrap();
        let address = listener.local_addr().unwrap();
        // Replica 1 echoes every frame back on the same connection.
        let echo: OnEvent = Rc::new(|event| {
            if let BusEvent::Frame { frame, outbox, .. } = event {
                outbox.send(OutFrame::new(frame.bytes)).unwrap();
            }
        });
        let server = compio::runtime::spawn(async move { listener.serve(None, echo).await });

        let sent: Vec<Vec<u8>> = (1..=3).map(|op| frame(CLUSTER, Command::Prepare, op, &[op as u8; 100])).collect();
        let received = Rc::new(RefCell::new(Vec::new()));
        let on_event: OnEvent = {
            let sent = sent.clone();
            let received = received.clone();
            Rc::new(move |event| match event {
                BusEvent::Connected { peer, outbox } => {
                    assert_eq!(peer, Peer::Replica(1));
                    for bytes in &sent {
                        outbox.send(OutFrame::new(bytes.clone())).unwrap();
                    }
                }
                BusEvent::Frame { frame, .. } => received.borrow_mut().push(frame.bytes),
                BusEvent::Closed { .. } => {}
            })
        };
        let client_metrics = Arc::new(BusMetrics::default());
        let dialer = compio::runtime::spawn({
            let client_metrics = client_metrics.clone();
            async move { dial(address, 1, &config(Peer::Replica(0)), &client_metrics, None, &on_event).await }
        });
        let deadline = Instant::now() + TEST_TIMEOUT;
        while received.borrow().len() < sent.len() {
            assert!(Instant::now() < deadline, "echo incomplete: {} frames", received.borrow().len());
            compio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(*received.borrow(), sent);
        drop(dialer);
        drop(server);
        let snapshot = metrics.snapshot();
        assert_eq!(snapshot.handshakes_completed, 1);
        assert_eq!(snapshot.frames_received, 3);
        assert_eq!(snapshot.closed_total(), 0);
        assert_eq!(client_metrics.snapshot().frames_received, 3);
    });
}

/// A listener of replica 2 on its own thread, for peers speaking raw bytes.
struct TestListener {
    address: SocketAddr,
    metrics: Arc<BusMetrics>,
    frames: mpsc::Receiver<(Peer, Vec<u8>)>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestListener {
    fn start() -> TestListener {
        let metrics = Arc::new(BusMetrics::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (address_tx, address_rx) = mpsc::channel();
        let (frames_tx, frames) = mpsc::channel();
        let thread = std::thread::spawn({
            let (metrics, stop) = (metrics.clone(), stop.clone());
            move || {
                let runtime = build_runtime(DriverChoice::Auto).expect("runtime");
                runtime.block_on(async move {
                    let inbound = Expect::Inbound { local_replica: Some(2), clients: true };
                    let listener =
                        Listener::bind("127.0.0.1:0".parse().unwrap(), inbound, config(Peer::Replica(2)), metrics)
                            .await
                            .unwrap();
                    address_tx.send(listener.local_addr().unwrap()).unwrap();
                    let on_event: OnEvent = Rc::new(move |event| {
                        if let BusEvent::Frame { peer, frame, .. } = event {
                            let _ = frames_tx.send((peer, frame.bytes));
                        }
                    });
                    let server = compio::runtime::spawn(async move { listener.serve(None, on_event).await });
                    while !stop.load(Ordering::Relaxed) {
                        compio::time::sleep(Duration::from_millis(10)).await;
                    }
                    drop(server);
                });
            }
        });
        let address = address_rx.recv_timeout(TEST_TIMEOUT).expect("listener bound");
        TestListener { address, metrics, frames, stop, thread: Some(thread) }
    }

    fn connect(&self) -> std::net::TcpStream {
        let stream = std::net::TcpStream::connect(self.address).unwrap();
        stream.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
        stream
    }

    /// Send `bytes`, then read until the listener closes the connection;
    /// returns how long that took.
    fn closes_after(&self, bytes: &[u8]) -> Duration {
        let started = Instant::now();
        let mut stream = self.connect();
        stream.write_all(bytes).unwrap();
        let mut sink = [0u8; 4096];
        loop {
            match stream.read(&mut sink) {
                Ok(0) => break,
                Ok(_) => continue,
                // A reset also means closed (the listener closed with our bytes unread).
                Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(error) => panic!("the listener did not close the connection: {error}"),
            }
        }
        started.elapsed()
    }

    fn closed_by(&self, label: &str) -> u64 {
        self.metrics.snapshot().closed_by(label)
    }
}

impl Drop for TestListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn hello(cluster: u128, peer: Peer) -> Vec<u8> {
    Hello::new(cluster, peer).encode().to_vec()
}

#[test]
fn wire_test_each_bad_peer_is_closed_with_its_reason_and_the_listener_keeps_serving() {
    let listener = TestListener::start();

    listener.closes_after(b"GET /metrics HTTP/1.1\r\nHost: shoal\r\n\r\n-------------------------------------------");
    assert_eq!(listener.closed_by("bad_hello"), 1);

    let forged = [hello(CLUSTER, Peer::Client(9)), frame(CLUSTER, Command::Prepare, 1, b"forged")].concat();
    listener.closes_after(&forged);
    assert_eq!(listener.closed_by("client_sent_replica_command"), 1);

    listener.closes_after(&hello(CLUSTER + 1, Peer::Replica(0)));
    assert_eq!(listener.closed_by("wrong_cluster"), 1);

    let over = frame(CLUSTER, Command::Prepare, 1, &vec![1; MESSAGE_SIZE_MAX_BYTES as usize - HEADER_SIZE_BYTES + 1]);
    listener.closes_after(&[hello(CLUSTER, Peer::Replica(0)), over].concat());
    assert_eq!(listener.closed_by("frame_too_large"), 1);

    let half = frame(CLUSTER, Command::Commit, 1, &[]);
    let stalled =
        listener.closes_after(&[hello(CLUSTER, Peer::Replica(1)), half[..HEADER_SIZE_BYTES / 2].to_vec()].concat());
    assert_eq!(listener.closed_by("idle_timeout"), 1);
    assert!(stalled >= IDLE_TIMEOUT, "closed after {stalled:?}, before the idle timeout");

    // Nothing a bad peer sent reached the callback.
    assert!(listener.frames.try_recv().is_err());
    assert_eq!(listener.metrics.snapshot().closed_total(), 5);

    // A good replica connection is still served: the listener's hello comes
    // back, and our frame is delivered.
    let mut good = listener.connect();
    let prepare = frame(CLUSTER, Command::Prepare, 7, b"good");
    good.write_all(&[hello(CLUSTER, Peer::Replica(1)), prepare.clone()].concat()).unwrap();
    let mut their_hello = [0u8; HELLO_SIZE_BYTES];
    good.read_exact(&mut their_hello).unwrap();
    let their_hello = Hello::decode(&their_hello).unwrap();
    assert_eq!((their_hello.cluster, their_hello.peer), (CLUSTER, Peer::Replica(2)));
    let (peer, bytes) = listener.frames.recv_timeout(TEST_TIMEOUT).expect("the good frame is delivered");
    assert_eq!((peer, bytes), (Peer::Replica(1), prepare));
    assert_eq!(listener.metrics.snapshot().closed_total(), 5);
}

#[test]
fn a_newer_replica_connection_takes_the_owner_slot_over_and_the_old_clear_fails_harmlessly() {
    use shoal_runtime::bus::net::Ownership;
    use shoal_shard::owner_table::{ReplicaOwnerTable, ShardCount, ShardId};

    let runtime = build_runtime(DriverChoice::Auto).expect("runtime");
    runtime.block_on(async {
        let table = Arc::new(ReplicaOwnerTable::new(3, ShardCount::new(2).unwrap()));
        // An older connection of replica 0, held by shard 0, not yet seen closed.
        table.stamp(0, ShardId(0)).unwrap();
        let metrics = Arc::new(BusMetrics::default());
        let inbound = Expect::Inbound { local_replica: Some(1), clients: false };
        let listener =
            Listener::bind("127.0.0.1:0".parse().unwrap(), inbound, config(Peer::Replica(1)), metrics.clone())
                .await
                .unwrap();
        let address = listener.local_addr().unwrap();
        let ownership = Ownership { table: table.clone(), shard: ShardId(1) };
        let server = compio::runtime::spawn(async move { listener.serve(Some(ownership), Rc::new(|_| {})).await });

        let connected = Rc::new(Cell::new(false));
        let on_event: OnEvent = {
            let connected = connected.clone();
            Rc::new(move |event| {
                if let BusEvent::Connected { .. } = event {
                    connected.set(true);
                }
            })
        };
        let dialer = compio::runtime::spawn({
            let metrics = Arc::new(BusMetrics::default());
            async move { dial(address, 1, &config(Peer::Replica(0)), &metrics, None, &on_event).await }
        });
        let deadline = Instant::now() + TEST_TIMEOUT;
        while !(connected.get() && table.owner(0) == Some(ShardId(1))) {
            assert!(Instant::now() < deadline, "owner {:?}", table.owner(0));
            compio::time::sleep(Duration::from_millis(5)).await;
        }
        // The replaced connection's late clear changes nothing.
        assert!(table.clear(0, ShardId(0)).is_err());
        assert_eq!(table.owner(0), Some(ShardId(1)));
        // The newer connection closes: its shard releases the slot.
        drop(dialer);
        while table.owner(0).is_some() {
            assert!(Instant::now() < deadline, "slot not released");
            compio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(server);
        assert_eq!(metrics.snapshot().owner_conflicts, 0);
    });
}

#[test]
fn a_listener_at_its_connection_limit_closes_new_connections_and_counts_them() {
    use compio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

    let runtime = build_runtime(DriverChoice::Auto).expect("runtime");
    runtime.block_on(async {
        let metrics = Arc::new(BusMetrics::default());
        let inbound = Expect::Inbound { local_replica: Some(2), clients: true };
        let limited = BusConfig { connections_max: 1, ..config(Peer::Replica(2)) };
        let listener = Listener::bind("127.0.0.1:0".parse().unwrap(), inbound, limited, metrics.clone()).await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = compio::runtime::spawn(async move { listener.serve(None, Rc::new(|_| {})).await });

        let mut first = compio::net::TcpStream::connect(address).await.unwrap();
        let compio::BufResult(written, _) = first.write_all(hello(CLUSTER, Peer::Client(1))).await;
        written.unwrap();
        let compio::BufResult(read, _) = first.read_exact(vec![0u8; HELLO_SIZE_BYTES]).await;
        read.expect("the first connection is served");

        let mut second = compio::net::TcpStream::connect(address).await.unwrap();
        let compio::BufResult(read, _) =
            compio::time::timeout(TEST_TIMEOUT, second.read(Vec::with_capacity(64))).await.expect("closed in time");
        assert!(matches!(read, Ok(0) | Err(_)), "the second connection is closed: {read:?}");
        assert_eq!(metrics.snapshot().closed_by("listener_full"), 1);
        drop(server);
    });
}

#[test]
fn a_replica_redials_with_backoff_until_its_peer_listens() {
    use shoal_runtime::bus::Backoff;
    use shoal_runtime::bus::net::dial_forever;

    let runtime = build_runtime(DriverChoice::Auto).expect("runtime");
    runtime.block_on(async {
        // A port nobody listens on yet.
        let address = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let connected = Rc::new(Cell::new(false));
        let on_event: OnEvent = {
            let connected = connected.clone();
            Rc::new(move |event| {
                if let BusEvent::Connected { .. } = event {
                    connected.set(true);
                }
            })
        };
        let dial_metrics = Arc::new(BusMetrics::default());
        let dialer = compio::runtime::spawn({
            let dial_metrics = dial_metrics.clone();
            async move {
                let mut backoff = Backoff::new(7);
                dial_forever(address, 1, &config(Peer::Replica(0)), &dial_metrics, None, &on_event, &mut backoff).await
            }
        });
        compio::time::sleep(Duration::from_millis(300)).await;
        assert!(!connected.get());
        let inbound = Expect::Inbound { local_replica: Some(1), clients: false };
        let listener =
            Listener::bind(address, inbound, config(Peer::Replica(1)), Arc::new(BusMetrics::default())).await.unwrap();
        let server = compio::runtime::spawn(async move { listener.serve(None, Rc::new(|_| {})).await });
        let deadline = Instant::now() + TEST_TIMEOUT;
        while !connected.get() {
            assert!(Instant::now() < deadline, "never redialled");
            compio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(dial_metrics.snapshot().handshakes_completed, 1);
        drop(dialer);
        drop(server);
    });
}
