#!/usr/bin/env python3
"""Writes the seed inputs of the structure-aware decoder targets.

Each target reads its input front to back (see fuzz_targets/common.rs), so a
seed is a few leading bytes that pick the mode and sizes, then deterministic
filler for the fields. Run from fuzz/: python3 seeds/make_seeds.py
"""
import os
import random


def le(value, size):
    return value.to_bytes(size, "little")


def filler(seed, size):
    rng = random.Random(seed)
    return bytes(rng.randrange(256) for _ in range(size))


def header(op, body_len=0):
    # command, operation, op u64, view u16, commit u16, parent u64, client u16,
    # request u8, namespace u64, replica u8, body length u16, body
    return (bytes([1, 2]) + le(op, 8) + le(3, 2) + le(2, 2)
            + le(7, 8) + le(1, 2) + b"\x01" + le(4, 8) + b"\x00"
            + le(body_len, 2) + b"b" * body_len)


def sealed_header(command, operation, op, body):
    # header_decode's field order: command, cluster u64, operation, parent
    # 2 x u64, client, namespace, view, op, commit, timestamp, request, context
    # (u64 each), replica, reserved index and value, body length u16, body.
    return (bytes([command]) + le(1, 8) + bytes([operation]) + le(11, 8) + le(12, 8)
            + le(5, 8) + le(4, 8) + le(3, 8) + le(op, 8) + le(op - 1, 8) + le(10**9, 8)
            + le(2, 8) + le(0, 8) + b"\x01" + b"\x05\x00" + le(len(body), 2) + body)


def route_frame(selector, command, operation, namespace_index, origin=0, body=b""):
    # frame_route: selector (mod 8: 0-3 consensus, 4-5 forward, 6 reply, 7
    # lifecycle), origin shard, connection id, then the header: command and
    # operation indices into Command::ALL / Operation::ALL, namespace pool
    # index, op, body length u16, body.
    return (bytes([selector, origin, 1, command, operation, namespace_index, 1])
            + le(len(body), 2) + body)


# Command::ALL / Operation::ALL indices used by the frame_route seeds.
PING, REQUEST, PREPARE, COMMIT, START_VIEW_CHANGE = 0, 2, 3, 6, 7
OP_RESERVED, OP_REGISTER, OP_CREATE_STREAM, OP_SEND = 0, 2, 4, 8


def packed_request(client, operation_index, body):
    # packed_decode: client u16 (+1), session u16, request u64, operation
    # index into the packable operations, body length u16 + bytes.
    return le(client, 2) + le(3, 2) + le(client * 10, 8) + bytes([operation_index]) + le(len(body), 2) + body


def md_id(value):
    # metadata_decode: kind 2 picks a small id (value mod 6).
    return b"\x02" + bytes([value])


def md_name(text):
    # metadata_decode: 0 = any bytes (u16 length + bytes), made UTF-8.
    return b"\x00" + le(len(text), 2) + text


def md_create_stream(stream_id, name):
    return b"\x00" + md_id(stream_id) + md_name(name)


def md_create_topic(stream_id, topic_id, name, partitions):
    return b"\x02" + md_id(stream_id) + md_id(topic_id) + md_name(name) + b"\x01" + bytes([partitions])


CATALOGUE = (b"\x06" + md_create_stream(1, b"orders") + md_create_stream(2, b"audit")
             + md_create_topic(1, 1, b"eu", 3) + md_create_topic(1, 2, b"us", 4)
             + b"\x01" + md_id(2) + md_create_topic(5, 1, b"none", 1))


def journal(selector, slot_count, steps, crash, damage, read_only=False):
    # journal_recovery: selector (mod 8: 0 raw, 1 slots, 2 forged, 3..=7
    # model), slot count - 1, read-only flag, disk seed; then (model mode)
    # the step count and steps, the crash (0 none, 1 process, 2 power loss),
    # the damage count and damage.
    return (bytes([selector, slot_count - 1, int(read_only), 9]) + bytes([len(steps)]) + b"".join(steps)
            + bytes([crash, len(damage)]) + b"".join(damage))


def j_append(size_units):
    return bytes([0, size_units])  # body of 3 * size_units bytes


J_SYNC = b"\x04"


def j_drain(byte):
    return bytes([6, byte])


def j_truncate(byte):
    return bytes([7, byte])


def j_flip_prepare(window_index, offset, bit):
    return bytes([0, window_index]) + le(offset, 2) + bytes([bit])


def j_flip_copy(window_index, offset, bit):
    return bytes([1, window_index, offset, bit])


def j_tear(window_index, sectors_kept):
    return bytes([2, window_index, sectors_kept])


def j_zero_sector(sector):
    return b"\x03" + le(sector, 2)


def j_reseal_field(field, value):
    return bytes([6, value, field])


FIVE_SYNCED = [j_append(10), j_append(200), j_append(0), j_append(90), j_append(255), J_SYNC]


NO_MUTATION = b"\x00\x00"  # reseal off, zero mutations
FLIP = b"\x01\x01" + le(300, 2) + b"\x00\x03"  # reseal on, flip bit 3 of byte 300

SEEDS = {
    "identity_decode": {
        # format version u32, cluster 2 x u64, replica, replica count, cut
        # length, the extra byte of a long file, then edits (count, then
        # offset and value each) before the checksum is resealed.
        "plain": le(1, 4) + le(7, 8) + le(0, 8) + b"\x01\x03" + b"\x10\x00" + b"\x00",
        "reserved-edited": le(1, 4) + le(7, 8) + le(0, 8) + b"\x01\x03" + b"\x20\x00" + b"\x01\x0e\x55",
        "magic-and-replica-edited": le(2, 4) + le(9, 8) + le(1, 8) + b"\x02\x03" + b"\x2f\xff"
        + b"\x02\x00\x41\x0c\x09",
    },
    "journal_recovery": {
        "model-clean-power-loss": journal(3, 8, FIVE_SYNCED + [j_append(40), j_append(170)], 2, []),
        # the head (op 5) rots after it was synced: faulty, never torn
        "model-rotten-head": journal(4, 8, FIVE_SYNCED, 0, [j_flip_prepare(4, 300, 3)]),
        "model-copy-and-prepare": journal(5, 8, FIVE_SYNCED, 1, [j_flip_copy(2, 40, 0), j_flip_prepare(2, 20, 5)]),
        "model-copy-only": journal(6, 8, FIVE_SYNCED, 0, [j_flip_copy(1, 200, 7)], read_only=True),
        "model-drain-wrap-tear": journal(7, 4, [j_append(50)] * 4 + [J_SYNC, j_drain(1), j_append(255), j_append(255),
                                                                     J_SYNC, j_append(255)], 2, [j_tear(1, 1)]),
        "model-truncate-reappend": journal(3, 8, FIVE_SYNCED + [j_truncate(2), j_append(7), j_append(8), J_SYNC], 1,
                                           [j_zero_sector(17)]),
        "model-file-header-resealed": journal(4, 8, FIVE_SYNCED, 0, [j_reseal_field(2, 1)]),
        "model-file-header-flip": journal(5, 8, FIVE_SYNCED, 0, [bytes([5, 50, 2])]),
        "model-zero-sectors": journal(6, 16, FIVE_SYNCED * 2, 2, [j_zero_sector(1), j_zero_sector(8), j_zero_sector(20)]),
        # op 2's slot written over op 4's (a misdirected write)
        "model-misdirected": journal(7, 8, FIVE_SYNCED, 0, [bytes([7, 1, 3])]),
        # two faults on op 1's slot: a truncated slot (header zeroed, stale
        # body) misdirected over it, and its ring copy flipped; op 1 is the
        # head, so it may vanish (the journal's documented gap)
        "model-two-faults-at-head": journal(3, 8, [j_append(100), j_append(100), J_SYNC, j_truncate(1)], 0,
                                            [bytes([7, 1, 0]), j_flip_copy(0, 20, 1)]),
        "raw-filler": b"\x00\x03\x00\x01" + filler(7, 2000),
        "slots-filler": b"\x01\x07\x00\x01" + filler(8, 6000),
        "forged-chain": b"\x02\x07\x00\x01" + b"\x06" + b"".join(
            bytes([op, 0, flags, 10]) + filler(op, 30) for op, flags in
            [(1, 32), (2, 32), (3, 0), (4, 36), (5, 16), (6, 40)]),
    },
    "metadata_decode": {
        # mode byte mod 3: 0 reply, 1 request body, 2 snapshot
        "reply-ok": b"\x00\x00" + b"\x00",
        "reply-topic-name-exists": b"\x00\x02" + le(1, 4) + le(2, 4) + b"\x08" + md_name(b"orders") + b"\x00",
        "reply-name-invalid-flipped": b"\x00\x02" + le(1, 4) + le(2, 4) + b"\x0b" + le(300, 8)
        + b"\x01" + le(3, 2) + b"\x00\x02",
        "request-create-topic": b"\x01" + md_create_topic(1, 3, b"eu-west", 3) + b"\x00",
        "request-delete-stream-truncated": b"\x01\x01" + md_id(4) + b"\x01" + le(2, 2) + b"\x04",
        "snapshot-catalogue": b"\x02" + CATALOGUE + b"\x00\x00",
        "snapshot-flip-resealed": b"\x02" + CATALOGUE + b"\x01" + le(30, 2) + b"\x00\x01" + b"\x01",
        "snapshot-count-resealed": b"\x02" + CATALOGUE + b"\x01" + le(8, 2) + b"\x02" + le(5, 2) + b"\x00" + b"\x01",
    },
    "frame_route": {
        # 4 shards, inbox (capacity, state) pairs (state 0 forced full, 1
        # closed), namespaces (kind 0 metadata, 1 unset, 4 partition ids),
        # then frames.
        "four-shards-mixed": b"\x03" + b"\x05\x02" * 4 + b"\x00" + b"\x01"
        + b"\x04" + le(7, 2) + b"\x01" + le(3, 2) + b"\x04" + le(9, 2) + b"\x02" + le(0, 2)
        + b"\x07"
        + route_frame(0, PREPARE, OP_SEND, 2) + route_frame(1, START_VIEW_CHANGE, OP_RESERVED, 1)
        + route_frame(2, PING, OP_RESERVED, 2) + route_frame(4, REQUEST, OP_SEND, 3, body=b"m")
        + route_frame(5, REQUEST, OP_CREATE_STREAM, 0) + route_frame(6, REQUEST, OP_RESERVED, 0, origin=2)
        + route_frame(3, COMMIT, OP_REGISTER, 3),
        # 2 shards, shard 0's inbox full, shard 1's closed: every route is a
        # counted drop; a lifecycle frame broadcast from shard 1.
        "two-shards-refusing": b"\x01" + b"\x00\x00" + b"\x00\x01" + b"\x04" + le(5, 2) + b"\x01" + le(1, 2)
        + b"\x00" + b"\x01" + b"\x03"
        + route_frame(0, PREPARE, OP_SEND, 0) + route_frame(7, PING, OP_RESERVED, 0) + b"\x01\x01"
        + route_frame(6, REQUEST, OP_RESERVED, 1, origin=9),
        # The finding: namespace 0x80031ff has stream id 0, so it is not a
        # partition, yet it is routed to a partition shard (see
        # STREAM_ZERO_ROUTES_AS_PARTITION in the target).
        "bug-stream-zero-namespace": b"\x01" + b"\x05\x02" * 2 + b"\x03" + le(0x80031FF, 4) + b"\x03"
        + le(0x80031FF, 4) + b"\x03" + le(0x80031FF, 4) + b"\x03" + le(0x80031FF, 4) + b"\x00"
        + route_frame(0, PREPARE, OP_RESERVED, 0),
        "filler": filler(6, 400),
    },
    "header_decode": {
        # mode byte mod 3: 0 raw, 1 every single-bit flip, 2 edits + reseal
        "raw-filler": b"\x00" + filler(5, 300),
        "flips-prepare": b"\x01" + sealed_header(4, 32, 9, b"payload-bytes"),
        "flips-empty-body": b"\x01" + sealed_header(1, 0, 1, b""),
        # edits: count, then (kind, value...): command 200, size = body, body
        # grows to 40 bytes; body and header resealed.
        "edits-bad-command-resealed": b"\x02" + sealed_header(4, 32, 9, b"abc") + b"\x03"
        + b"\x00\xc8" + b"\x05" + le(40, 2) + b"z" + b"\x03\x02" + b"\x01\x01",
        # edits: version 2, operation 99, a reserved byte; header resealed only.
        "edits-version-operation": b"\x02" + sealed_header(2, 1, 3, b"x") + b"\x03"
        + b"\x02\x02" + b"\x01\x63" + b"\x04\xf0\x07" + b"\x00\x01",
        # edits: size near the maximum, nothing resealed.
        "edits-size-unsealed": b"\x02" + sealed_header(3, 16, 7, b"") + b"\x01" + b"\x03\x01\x80" + b"\x00\x00",
    },
    "view_headers_decode": {
        "three-headers": b"\x03" + header(5) + header(6) + header(7) + NO_MUTATION,
        "three-headers-flip-resealed": b"\x03" + header(5) + header(6) + header(7) + FLIP,
        "filler": filler(1, 600),
    },
    "checkpoint_decode": {
        # anchor (no body), snapshot length u16 + bytes, then the mode byte.
        "copy": header(42) + le(16, 2) + b"s" * 16 + b"\x00" + NO_MUTATION,
        "body-flip-resealed": header(42) + le(16, 2) + b"s" * 16 + b"\x01" + FLIP,
        "file-one-copy-damaged": header(42) + le(5000, 2) + filler(2, 5000) + b"\x02\x01\x00\x02"
        + le(100, 2) + b"\x01\xff" + le(9, 2) + b"\x04",
    },
    "superblock_decode": {
        # writes, then per write: view, log_view, commit steps, header count, headers, rejoining
        "two-writes": b"\x02" + b"\x01\x00\x01\x02" + header(1) + header(2) + b"\x00"
        + b"\x02\x01\x01\x01" + header(3) + b"\x01" + NO_MUTATION + b"\x00",
        "resealed-both": b"\x01" + b"\x01\x00\x01\x01" + header(1) + b"\x00" + b"\x01\x01"
        + b"\x01" + le(96, 2) + b"\x02" + le(49, 2) + b"\x02"
        + b"\x01" + le(52, 2) + b"\x01\x07" + b"\x01",
        "filler": filler(3, 2000),
    },
    "snapshot_decode": {
        "log-and-sessions": b"\x01\x03" + le(2, 2) + b"ab" + le(0, 2) + le(3, 2)
        + b"xyz" + b"\x04\x04" + b"\x00\x05" + header(9, 2) + b"\x00\x06" + header(10) + b"\x01\x05" + header(11, 1)
        + b"\x00\x07" + header(12) + NO_MUTATION,
        "reply-name": b"\x00\x02" + le(5, 2) + b"topic" + b"\x03" + NO_MUTATION,
        "reply-rejected": b"\x00\x02\x00\x00\x07" + le(1, 4) + le(2, 4) + b"\x01\x05\x00\x04",
        "filler": filler(4, 1500),
    },
    "batch_decode": {
        # bool (reply mode) first; then a message count, each message a u16
        # length and its bytes, then mutations: count, then (at u16, kind, ...)
        "reply-12-bytes": b"\x01" + le(7, 4) + le(3, 8),
        "reply-short": b"\x01" + b"\x05\x06",
        "three-messages": b"\x00\x02" + le(3, 2) + b"abc" + le(0, 2) + le(20, 2) + filler(9, 20) + b"\x00",
        "three-messages-count-rewritten": b"\x00\x02" + le(3, 2) + b"abc" + le(0, 2) + le(20, 2) + filler(9, 20)
        + b"\x01" + le(0, 2) + b"\x02" + le(9, 2) + b"\x02",
        "sixteen-messages-flipped": b"\x00\x0f" + b"".join(le(n, 2) + filler(n, n) for n in range(16))
        + b"\x02" + le(40, 2) + b"\x00\x05" + le(7, 2) + b"\x04",
    },
    "partition_log_scan": {
        # disk seed u16, segment size byte (0: 64 MiB, else small), batch
        # count, each batch (count, per message length + bytes, synced bit),
        # then mutations (count, then kind and arguments).
        "one-segment-synced-torn-tail": le(3, 2) + b"\x00" + b"\x03"
        + b"\x01" + b"\x05hello" + b"\x01"
        + b"\x02" + b"\x03abc" + b"\x02xy" + b"\x01"
        + b"\x00" + b"\x04ping" + b"\x00"
        + b"\x02" + b"\x01" + le(2, 2) + b"\x05" + b"\x03" + le(1, 2),
        "rolled-segments-rot": le(9, 2) + b"\x02" + b"\x05"
        + b"".join(bytes([1]) + bytes([m]) + filler(m, m) + bytes([m & 1]) for m in (10, 20, 30, 40, 50, 60))
        + b"\x01" + b"\x00\x00" + le(50, 2) + b"\x03",
        "filler": filler(12, 500),
    },
    "read_decode": {
        # mode byte (even: request, odd: reply)
        # request: offset u64, count u32, size u32, then mutations
        "request-clean": b"\x00" + le(41, 8) + le(99, 4) + le(5000, 4) + b"\x00",
        "request-count-rewritten": b"\x00" + le(41, 8) + le(99, 4) + le(5000, 4)
        + b"\x01" + le(8, 2) + b"\x02" + le(0, 2) + b"\x02",
        "request-truncated": b"\x00" + le(7, 8) + le(1, 4) + le(1, 4) + b"\x01" + le(15, 2) + b"\x04",
        # reply: read offset, client, namespace, read id (u64 each), answer
        # kind, its fields, replica, mutations, then three (bool, value) rewrites
        "reply-messages": b"\x01" + le(1, 8) + le(2, 8) + le(3, 8) + le(4, 8)
        + b"\x00\x02" + le(3, 2) + b"abc" + le(1, 2) + b"d" + le(0, 2) + le(100, 8) + le(5, 2)
        + b"\x01" + b"\x00" + b"\x00\x00\x00",
        "reply-messages-end-rewritten": b"\x01" + le(1, 8) + le(2, 8) + le(3, 8) + le(4, 8)
        + b"\x00\x01" + le(3, 2) + b"abc" + le(4, 2) + b"defg" + le(100, 8) + le(0, 2)
        + b"\x02" + b"\x00" + b"\x00" + b"\x00" + b"\x01" + le(101, 8),
        "reply-too-large-status-rewritten": b"\x01" + le(1, 8) + le(2, 8) + le(3, 8) + le(4, 8)
        + b"\x04" + le(9, 8) + le(70000, 4) + b"\x00" + b"\x00" + b"\x01\x01",
        "reply-beyond-end": b"\x01" + le(1, 8) + le(2, 8) + le(3, 8) + le(4, 8) + b"\x02" + le(77, 8)
        + b"\x00" + b"\x01" + le(0, 2) + b"\x05" + b"\x02\x00",
    },
    "packed_decode": {
        # mode byte (0 built + mutations, 1 built + one forged field +
        # mutations, 2 raw), then count - 2, then per request: client u16,
        # session u16, request u64, operation index (0 register, 5 send),
        # body length u16 + bytes; then the forge (entry, kind, arguments)
        # and the mutations (count, then at u16, kind, arguments).
        "two-requests-clean": b"\x00\x00" + packed_request(1, 5, b"hello") + packed_request(2, 0, b"") + b"\x00",
        "five-requests-flipped": b"\x00\x03"
        + b"".join(packed_request(c, 5, filler(c, 3 * c)) for c in range(1, 6)) + b"\x01" + le(50, 2) + b"\x00\x03",
        "duplicate-client": b"\x01\x01" + packed_request(7, 5, b"ab") + packed_request(8, 5, b"cd")
        + packed_request(9, 0, b"") + b"\x02\x01\x00" + b"\x00",
        "count-rewritten": b"\x01\x00" + packed_request(1, 5, b"x") + packed_request(2, 5, b"y") + b"\x00\x00\x03"
        + b"\x00",
        "size-grown": b"\x01\x00" + packed_request(1, 5, b"xyz") + packed_request(2, 5, b"w") + b"\x00\x06\x04\x01"
        + b"\x00",
        "forbidden-operation": b"\x01\x00" + packed_request(1, 5, b"") + packed_request(2, 5, b"") + b"\x01\x03\x04"
        + b"\x00",
        "raw-filler": b"\x02" + le(2, 4) + le(0, 4) + filler(21, 120),
    },
}

for target, seeds in SEEDS.items():
    os.makedirs(f"seeds/{target}", exist_ok=True)
    for name, data in seeds.items():
        with open(f"seeds/{target}/{name}", "wb") as file:
            file.write(data)
