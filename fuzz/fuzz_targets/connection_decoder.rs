//! The bus connection decoder on streams built from the input: a hello and
//! valid, sealed frames (fuzz-chosen role, commands and bodies), then
//! fuzz-chosen byte corruptions, a truncation and read splits.
//!
//! Fails on a wrong answer, not only a panic: the frames yielded must be
//! exactly a prefix of the frames sent (every byte is under a checksum, so a
//! corruption may close the connection early but never forge a frame); an
//! undamaged stream must yield every frame, or stop exactly at the first
//! oversized frame (`frame_size_max_bytes`: a replica's do_view_change and
//! start_view may pass `message_size_max`) or replica-only command of a
//! client; the receive buffer
//! never exceeds its bound.
#![no_main]

#[path = "common.rs"]
mod common;

use common::Input;
use libfuzzer_sys::fuzz_target;
use shoal_runtime::bus::{
    CloseReason, ConnectionDecoder, Decoded, DecoderConfig, Expect, Hello, Peer, client_may_send,
};
use shoal_vsr::header::{Command, HEADER_SIZE_BYTES, Header, Operation};
use shoal_vsr::replica::frame_size_max_bytes;

const CLUSTER: u128 = 0xf022;
const MESSAGE_SIZE_MAX_BYTES: u32 = 2048;
const FRAMES_MAX: usize = 8;
const CORRUPTIONS_MAX: usize = 4;

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let peer = match input.byte() % 3 {
        0 => Peer::Replica(input.byte() % 2),
        1 => Peer::Client(u128::from(input.u16())),
        _ => Peer::Replica(input.byte()),
    };
    let mut stream = Hello::new(CLUSTER, peer).encode().to_vec();
    let mut sent: Vec<Vec<u8>> = Vec::new();
    let mut boundaries = vec![stream.len()];
    for _ in 0..usize::from(input.byte()) % (FRAMES_MAX + 1) {
        let command = Command::ALL[usize::from(input.byte()) % Command::ALL.len()];
        // Up to 64 bytes over the limit, so oversized frames are built too.
        let body_size_bytes = usize::from(input.u16()) % (MESSAGE_SIZE_MAX_BYTES as usize - HEADER_SIZE_BYTES + 64);
        let body: Vec<u8> = (0..body_size_bytes).map(|_| input.byte()).collect();
        let mut header = Header::new(command, CLUSTER);
        header.op = u64::from(input.byte());
        header.operation = Operation::ALL[usize::from(input.byte()) % Operation::ALL.len()];
        header.set_checksums(&body);
        let frame = header.encode_message(&body);
        stream.extend_from_slice(&frame);
        boundaries.push(stream.len());
        sent.push(frame);
    }
    let mut corrupted = false;
    for _ in 0..usize::from(input.byte()) % (CORRUPTIONS_MAX + 1) {
        let at = usize::from(input.u16()) % stream.len();
        let xor = input.byte();
        corrupted |= xor != 0;
        stream[at] ^= xor;
    }
    let cut = input.u16();
    let truncated_to = if cut % 4 == 0 { usize::from(cut) % (stream.len() + 1) } else { stream.len() };
    stream.truncate(truncated_to);

    let expect = Expect::Inbound { local_replica: Some(2), clients: true };
    let mut decoder = ConnectionDecoder::new(DecoderConfig {
        cluster: CLUSTER,
        expect,
        message_size_max_bytes: MESSAGE_SIZE_MAX_BYTES,
    });
    let mut decoded = Vec::new();
    let mut rest = &stream[..];
    let mut result = Ok(());
    while !rest.is_empty() && result.is_ok() {
        let split = 1 + usize::from(input.u16()) % rest.len();
        result = decoder.decode_all(&rest[..split], &mut decoded);
        assert!(decoder.buffered_bytes() <= decoder.buffer_bytes_max());
        rest = &rest[split..];
    }
    let close = match result {
        Err(reason) => Some(reason),
        Ok(()) => decoder.finish(),
    };
    let frames: Vec<&[u8]> = decoded
        .iter()
        .filter_map(|item| match item {
            Decoded::Frame(frame) => Some(&frame.bytes[..]),
            _ => None,
        })
        .collect();
    assert!(frames.len() <= sent.len());
    for (got, want) in frames.iter().zip(&sent) {
        assert_eq!(got, want, "a frame was yielded that was not sent");
    }
    if corrupted {
        return;
    }
    // Undamaged: the only reasons to stop early are the peer's role, an
    // oversized frame, a replica-only command from a client, and the truncation.
    if !matches!(peer, Peer::Replica(0 | 1) | Peer::Client(_)) {
        let stopped = matches!(close, Some(CloseReason::UnexpectedPeer { .. } | CloseReason::TruncatedAtEof { .. }));
        assert!(stopped || (close.is_none() && truncated_to == 0), "{close:?}");
        assert!(frames.is_empty());
        return;
    }
    // The first frame the decoder must refuse: too large (a replica's view
    // change frames may pass `message_size_max`: `frame_size_max_bytes`),
    // or a replica-only command from a client.
    let forbidden = sent.iter().position(|frame| {
        let header = Header::decode(frame).expect("sealed");
        let limit = match peer {
            Peer::Replica(_) => frame_size_max_bytes(header.command, MESSAGE_SIZE_MAX_BYTES),
            Peer::Client(_) => MESSAGE_SIZE_MAX_BYTES,
        };
        frame.len() > limit as usize || (matches!(peer, Peer::Client(_)) && !client_may_send(header.command))
    });
    let whole = boundaries.iter().skip(1).take_while(|end| **end <= truncated_to).count();
    let expected = forbidden.map_or(whole, |index| index.min(whole));
    assert_eq!(frames.len(), expected, "close {close:?}");
    match close {
        None => {
            assert!(truncated_to == 0 || boundaries.contains(&truncated_to));
            assert!(forbidden.is_none_or(|index| index >= whole));
        }
        Some(CloseReason::ClientSentReplicaCommand { .. } | CloseReason::FrameTooLarge { .. }) => {
            assert!(forbidden.is_some_and(|index| index <= whole));
        }
        Some(CloseReason::TruncatedAtEof { .. }) => assert!(!boundaries.contains(&truncated_to) || truncated_to == 0),
        Some(other) => panic!("undamaged stream closed with {other:?}"),
    }
});
