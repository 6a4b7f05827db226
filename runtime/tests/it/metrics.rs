//! `GET /metrics` over a real loopback socket: a scrape gets the Prometheus
//! text with the live values, anything else a 404 or 400, and a flood of
//! header bytes is cut at the bound.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use shoal_runtime::bus::BusMetrics;
use shoal_runtime::metrics::{REQUEST_SIZE_MAX_BYTES, ServerMetrics, bind, registry, serve};
use shoal_runtime::{DriverChoice, build_runtime};
use shoal_shard::metrics::FrameDrops;

const TIMEOUT: Duration = Duration::from_secs(10);

/// Serve metrics on a thread of its own; returns the address and the
/// metrics the test bumps.
fn start() -> (SocketAddr, Arc<ServerMetrics>) {
    let metrics = Arc::new(ServerMetrics::default());
    let (ready, address) = mpsc::channel();
    let served = metrics.clone();
    std::thread::spawn(move || {
        let runtime = build_runtime(DriverChoice::Auto).expect("runtime");
        runtime.block_on(async move {
            let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
            ready.send(listener.local_addr().unwrap()).unwrap();
            let registry = registry(&served, Arc::new(BusMetrics::default()), vec![Arc::new(FrameDrops::new())]);
            serve(listener, Arc::new(registry)).await;
        });
    });
    (address.recv_timeout(TIMEOUT).unwrap(), metrics)
}

fn exchange(address: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect_timeout(&address, TIMEOUT).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    // The server may close before it read the whole flood: a reset is an answer too.
    let _ = stream.write_all(request);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    String::from_utf8_lossy(&response).into_owned()
}

#[test]
fn a_scrape_returns_live_values_and_other_requests_are_refused() {
    let (address, metrics) = start();
    metrics.commits.inc_by(41);
    metrics.commits.inc();
    let scrape = exchange(address, b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert!(scrape.starts_with("HTTP/1.1 200 OK\r\n"), "{scrape}");
    assert!(scrape.contains("text/plain; version=0.0.4"), "{scrape}");
    assert!(scrape.contains("shoal_commits_total 42"), "{scrape}");
    assert!(scrape.contains("# TYPE shoal_frame_drops counter"), "{scrape}");

    assert!(exchange(address, b"GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
    assert!(exchange(address, b"DELETE /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 400"));
    // A head that never ends gets no answer, and the next scrape still does.
    let flood = vec![b'a'; REQUEST_SIZE_MAX_BYTES * 2];
    assert_eq!(exchange(address, &flood), "");
    assert!(exchange(address, b"GET /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200 OK"));
}
