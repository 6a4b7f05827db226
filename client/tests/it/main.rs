//! The client over real loopback sockets against a scripted replica: the
//! handshake both ways, framing, reply matching, and what happens when the
//! replica is of another cluster or drops the connection. What a real cluster
//! answers is tested where shoal-server runs (issue 11, part 5); here the
//! replica side is the server's own wire decoder plus a few lines that answer
//! like a one-replica group would.
#![allow(clippy::disallowed_methods)] // a listener thread stands in for the server process

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::rc::Rc;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use shoal_client::{BatchReply, Client, ClientConfig, ClientError, Connection, ConnectionError};
use shoal_shard::message_batch::{decode_batch, encode_batch};
use shoal_shard::namespace::Namespace;
use shoal_shard::state_machine::{MetadataError, MetadataReply, MetadataRequest};
use shoal_shard::wire::{CloseReason, ConnectionDecoder, Decoded, DecoderConfig, Expect, Hello, Peer};
use shoal_vsr::header::{Command, MESSAGE_SIZE_MAX_BYTES, Operation, Refusal};
use shoal_vsr::message::Message;

const CLUSTER: u128 = 0x5eed;
const CLIENT: u128 = 0xc11e;

/// A request as the scripted replica received it (`Message` is not `Send`).
#[derive(Debug)]
struct Seen {
    header: shoal_vsr::header::Header,
    body: Vec<u8>,
}

/// How the scripted replica behaves.
#[derive(Debug, Clone, Copy)]
enum Script {
    /// Answer like a healthy one-replica group: a register opens session
    /// `op`, an append gets offset `op - 2`.
    Answer,
    /// Close the first connection after reading the first request.
    DropFirstConnection,
    /// A replica behind its metadata group: it refuses the first
    /// `refusals` frames to a partition as "no such partition", then
    /// answers. Its catalogue (what a `LookupPartition` commits against)
    /// has the partition when `in_catalogue`.
    BehindTopicCreation { refusals: usize, in_catalogue: bool },
}

/// A one-replica "group" on a loopback port; returns its address and a
/// channel of every request frame it received.
fn scripted_replica(cluster: u128, script: Script) -> (SocketAddr, mpsc::Receiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let (seen, received) = mpsc::channel();
    thread::spawn(move || {
        let mut op = 0u64;
        let mut refusals_left = match script {
            Script::BehindTopicCreation { refusals, .. } => refusals,
            _ => 0,
        };
        for (index, stream) in listener.incoming().enumerate() {
            let Ok(stream) = stream else { return };
            let drop_after_first = matches!(script, Script::DropFirstConnection) && index == 0;
            let in_catalogue = !matches!(script, Script::BehindTopicCreation { in_catalogue: false, .. });
            let mut replica = Replica { op: &mut op, refusals_left: &mut refusals_left, in_catalogue };
            serve(stream, cluster, drop_after_first, &mut replica, &seen);
        }
    });
    (address, received)
}

/// The scripted replica's state across connections.
struct Replica<'a> {
    op: &'a mut u64,
    refusals_left: &'a mut usize,
    in_catalogue: bool,
}

impl Replica<'_> {
    fn answer(&mut self, request: &Message) -> Message {
        let header = request.header;
        if Namespace(header.namespace).is_partition() && *self.refusals_left > 0 {
            *self.refusals_left -= 1;
            return Message::empty(Refusal::PartitionMissing.header(&header, 0, 0));
        }
        *self.op += 1;
        if header.operation == Operation::LookupPartition && !self.in_catalogue {
            let MetadataRequest::LookupPartition { stream_id, topic_id, partition_id } =
                MetadataRequest::decode_body(header.operation, &request.body).unwrap()
            else {
                unreachable!()
            };
            let reply = MetadataReply::Rejected(MetadataError::PartitionNotFound { stream_id, topic_id, partition_id });
            return Message::new(answer(request, *self.op).header, Rc::from(reply.encode()));
        }
        answer(request, *self.op)
    }
}

fn serve(
    mut stream: TcpStream,
    cluster: u128,
    drop_after_first: bool,
    replica: &mut Replica<'_>,
    seen: &mpsc::Sender<Seen>,
) {
    let mut decoder = ConnectionDecoder::new(DecoderConfig {
        cluster,
        expect: Expect::Inbound { local_replica: Some(0), clients: true },
        message_size_max_bytes: MESSAGE_SIZE_MAX_BYTES,
    });
    stream.write_all(&Hello::new(cluster, Peer::Replica(0)).encode()).unwrap();
    let mut buffer = vec![0u8; 4096];
    loop {
        let Ok(read) = stream.read(&mut buffer) else { return };
        if read == 0 {
            return;
        }
        let mut decoded = Vec::new();
        if decoder.decode_all(&buffer[..read], &mut decoded).is_err() {
            return;
        }
        for item in decoded {
            let Decoded::Frame(frame) = item else { continue };
            let request = Message::from_verified_frame(frame.header, Rc::from(frame.body()));
            let _ = seen.send(Seen { header: frame.header, body: frame.body().to_vec() });
            if drop_after_first {
                return;
            }
            let _ = stream.write_all(&replica.answer(&request).encode());
        }
    }
}

fn answer(request: &Message, op: u64) -> Message {
    let mut header = request.header;
    header.command = Command::Reply;
    header.op = op;
    header.replica = 0;
    if header.operation == Operation::Register {
        header.context = op;
        return Message::empty(header);
    }
    let body = if header.operation == Operation::SendMessages {
        // Op 1 is the register: the script's first append lands at offset
        // 0 (its offsets are right while each test sends one batch at most).
        let count = decode_batch(&request.body).map_or(0, |messages| messages.len() as u32);
        BatchReply { first_offset: op - 2, count }.encode().to_vec()
    } else {
        vec![0] // MetadataReply::Ok
    };
    Message::new(header, Rc::from(body))
}

fn config(addresses: Vec<SocketAddr>) -> ClientConfig {
    let mut config = ClientConfig::new(CLUSTER, addresses).with_client_id(CLIENT);
    config.tick = Duration::from_millis(5);
    config.retry_timeout_ticks = 4;
    config.request_timeout_ticks = 400;
    config
}

fn partition() -> Namespace {
    Namespace::partition(1, 1, 0).unwrap()
}

#[test]
fn appends_register_once_then_carry_the_session_and_take_their_offsets() {
    let (address, seen) = scripted_replica(CLUSTER, Script::Answer);
    let mut client = Client::new(config(vec![address])).unwrap();
    assert_eq!(client.append(partition(), b"first").unwrap(), 0);
    assert_eq!(client.append(partition(), b"second").unwrap(), 1);
    let requests: Vec<_> = seen.try_iter().collect();
    let shape: Vec<_> = requests.iter().map(|m| (m.header.operation, m.header.request, m.header.context)).collect();
    assert_eq!(
        shape,
        vec![(Operation::Register, 0, 0), (Operation::SendMessages, 1, 1), (Operation::SendMessages, 2, 1),]
    );
    assert_eq!(requests[2].body, encode_batch(&[b"second"]).unwrap(), "one message is a batch of one");
    assert!(requests.iter().all(|m| m.header.client == CLIENT && m.header.namespace == partition().raw()));
}

#[test]
fn a_batch_is_one_request_and_its_reply_names_every_offset() {
    let (address, seen) = scripted_replica(CLUSTER, Script::Answer);
    let mut client = Client::new(config(vec![address])).unwrap();
    let reply = client.append_batch(partition(), &[&b"a"[..], b"b", b"c"]).unwrap();
    assert_eq!(reply, BatchReply { first_offset: 0, count: 3 });
    let last = seen.try_iter().last().unwrap();
    assert_eq!(decode_batch(&last.body).unwrap(), vec![&b"a"[..], b"b", b"c"]);
    let empty: [&[u8]; 0] = [];
    assert!(matches!(client.append_batch(partition(), &empty), Err(ClientError::Batch(_))));
}

#[test]
fn metadata_changes_go_to_the_metadata_group() {
    let (address, seen) = scripted_replica(CLUSTER, Script::Answer);
    let mut client = Client::new(config(vec![address])).unwrap();
    client.create_stream(1, "orders").unwrap();
    let last = seen.try_iter().last().unwrap();
    assert_eq!((last.header.namespace, last.header.operation), (Namespace::METADATA.raw(), Operation::CreateStream));
}

#[test]
fn a_dropped_connection_is_redialed_and_the_request_resent_with_its_number() {
    let (address, seen) = scripted_replica(CLUSTER, Script::DropFirstConnection);
    let mut client = Client::new(config(vec![address])).unwrap();
    assert_eq!(client.append(partition(), b"m").unwrap(), 0);
    let requests: Vec<_> = seen.try_iter().map(|m| (m.header.operation, m.header.request)).collect();
    // The register was sent, lost with the connection, and sent again.
    assert_eq!(requests[..2], [(Operation::Register, 0), (Operation::Register, 0)]);
}

#[test]
fn a_replica_of_another_cluster_is_refused_by_the_client() {
    let (address, _) = scripted_replica(CLUSTER + 1, Script::Answer);
    let mut connection =
        Connection::connect(address, 0, CLUSTER, CLIENT, MESSAGE_SIZE_MAX_BYTES, Duration::from_secs(1)).unwrap();
    let error = loop {
        match connection.poll(Duration::from_millis(50)) {
            Ok(_) => continue,
            Err(error) => break error,
        }
    };
    assert!(matches!(error, ConnectionError::Refused { reason: CloseReason::WrongCluster { .. }, .. }), "{error}");
}

#[test]
fn no_reply_within_the_timeout_is_reported_as_unknown_outcome() {
    // Nothing listens here: every dial fails.
    let address = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut config = config(vec![address]);
    config.request_timeout_ticks = 20;
    let mut client = Client::new(config).unwrap();
    let error = client.append(partition(), b"m").unwrap_err();
    assert!(matches!(error, ClientError::TimedOut { request: 0, ticks: 20, .. }), "{error}");
}

#[test]
fn a_request_over_message_size_max_is_refused_before_it_is_sent() {
    let (address, seen) = scripted_replica(CLUSTER, Script::Answer);
    let mut client = Client::new(ClientConfig { message_size_max_bytes: 4096, ..config(vec![address]) }).unwrap();
    let messages = [vec![7u8; 4096]];
    let error = client.append_batch(partition(), &messages).unwrap_err();
    assert!(matches!(error, ClientError::RequestTooLarge { max_bytes: 4096, .. }), "{error}");
    assert!(seen.try_recv().is_err(), "nothing reached the replica");
    // The client is still usable for requests that fit.
    assert_eq!(client.append_batch(partition(), &[vec![7u8; 100]]).unwrap().count, 1);
}

#[test]
fn reads_in_flight_are_bounded_and_time_out_one_by_one() {
    // Nothing listens here: every read stays unanswered.
    let unused = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut config = config(vec![unused]);
    config.request_timeout_ticks = 3;
    let mut client = Client::new(config).unwrap();
    let first = client.send_read(partition(), 0, 0, 1).unwrap();
    for offset in 1..shoal_client::READS_IN_FLIGHT_MAX as u64 {
        client.send_read(partition(), 0, offset, 1).unwrap();
    }
    assert_eq!(client.reads_in_flight(), shoal_client::READS_IN_FLIGHT_MAX);
    assert!(matches!(client.send_read(partition(), 0, 99, 1), Err(ClientError::ReadsInFlightFull { .. })));
    match client.next_read_answer() {
        Err(ClientError::ReadTimedOut { read_id, .. }) => assert_eq!(read_id, first, "the oldest times out first"),
        other => panic!("{other:?}"),
    }
    assert_eq!(client.reads_in_flight(), shoal_client::READS_IN_FLIGHT_MAX - 1);
    assert!(matches!(client.send_read(partition(), 1, 0, 1), Err(ClientError::UnknownReplica { .. })));
}

/// The requests of `seen` that looked partition (1, 1, 0) up in the catalogue.
fn lookups(seen: &mpsc::Receiver<Seen>) -> usize {
    let lookup = MetadataRequest::LookupPartition { stream_id: 1, topic_id: 1, partition_id: 0 };
    seen.try_iter()
        .filter(|m| m.header.operation == Operation::LookupPartition)
        .inspect(|m| {
            assert_eq!(m.header.namespace, Namespace::METADATA.raw(), "a lookup goes to the metadata group");
            assert_eq!(m.body, lookup.encode_body());
        })
        .count()
}

/// The story (issue 11): a replica behind the topic's creation says "no
/// such partition" exactly as one where it never happened. The client
/// used to take a majority saying so for the missing wait as final; now it
/// asks the metadata group's committed catalogue, which has the partition,
/// and keeps the append until the replica opens the group.
#[test]
fn replicas_behind_the_topic_creation_are_not_taken_at_their_word_when_the_catalogue_has_it() {
    let (address, seen) = scripted_replica(CLUSTER, Script::BehindTopicCreation { refusals: 40, in_catalogue: true });
    let mut config = config(vec![address]);
    config.partition_missing_wait_ticks = 8;
    let mut client = Client::new(config).unwrap();
    let appended = client.append(partition(), b"first");
    assert!(appended.is_ok(), "appended once the replica opened the group, not {appended:?}");
    assert!(lookups(&seen) >= 2, "a lookup for each suspicion (40 refusals span several missing waits)");
}

/// A partition the catalogue does not have is missing: the request ends
/// after one lookup, without waiting for the request timeout.
#[test]
fn a_partition_the_catalogue_lacks_is_missing_after_one_lookup() {
    let (address, seen) =
        scripted_replica(CLUSTER, Script::BehindTopicCreation { refusals: usize::MAX, in_catalogue: false });
    let mut config = config(vec![address]);
    config.partition_missing_wait_ticks = 8;
    let mut client = Client::new(config).unwrap();
    match client.append(partition(), b"nowhere") {
        Err(ClientError::PartitionMissing { namespace, request: 0 }) => assert_eq!(namespace, partition().raw()),
        other => panic!("an append to a partition the catalogue lacks: {other:?}"),
    }
    assert_eq!(lookups(&seen), 1);
}
