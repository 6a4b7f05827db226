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


NO_MUTATION = b"\x00\x00"  # reseal off, zero mutations
FLIP = b"\x01\x01" + le(300, 2) + b"\x00\x03"  # reseal on, flip bit 3 of byte 300

SEEDS = {
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
}

for target, seeds in SEEDS.items():
    os.makedirs(f"seeds/{target}", exist_ok=True)
    for name, data in seeds.items():
        with open(f"seeds/{target}/{name}", "wb") as file:
            file.write(data)
