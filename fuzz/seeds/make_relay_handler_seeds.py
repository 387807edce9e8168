#!/usr/bin/env python3
"""Writes the relay_handler seed inputs (fuzz/seeds/relay_handler/*.bin).

Each is a request sequence in the harness's input format (see the header of
fuzz/fuzz_targets/relay_handler.rs) that walks one happy path, so the fuzzer
starts from requests that get past authentication and signature checks.
Protobuf is encoded by hand to keep this script dependency-free.
"""
import os
import struct

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "relay_handler")

VERSION, SIGN, TARGET, SWEEP = 0x01, 0x02, 0x04, 0x08


def varint(n):
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def f(num, value):
    """A field: int -> varint, bytes -> length-delimited."""
    if isinstance(value, int):
        return varint(num << 3) + varint(value)
    return varint((num << 3) | 2) + varint(len(value)) + value


def request(kind_field, body=b""):
    return f(1, 1) + f(kind_field, body)


def op(ctl, sel, req):
    return bytes([ctl, sel]) + struct.pack(">H", len(req)) + req


def header(seed, exporter):
    return struct.pack(">Q", seed) + bytes([exporter])


EC_KEY = b"\x05" + bytes(range(1, 33))
KYBER = b"\x08" + b"k" * 64
CHALLENGE = op(VERSION, 0, request(10))


def signed_pre_key(i, pk):
    return f(1, i) + f(2, pk) + f(3, b"s" * 64)


seeds = {
    # Authenticate as alice, send to bob and to herself, read and ack, prekeys.
    "alice_session.bin": header(1, 1)
    + CHALLENGE
    + op(VERSION | SIGN | TARGET, 0, request(12, f(2, 1)))
    + op(VERSION | TARGET, 1, request(17, f(2, 1) + f(4, b"hello bob")))
    + op(VERSION | TARGET | 0x10, 0x10, request(17, f(2, 1) + f(4, b"note to self")))
    + op(VERSION, 0, request(18, f(1, 10)))
    + op(VERSION, 0, request(19, f(1, 1) + f(1, 2)))
    + op(VERSION, 0, request(14))
    + op(VERSION, 0, request(16))
    + op(VERSION | TARGET, 1, request(15, f(2, 1)))
    + op(VERSION | TARGET, 1, request(21))
    + op(VERSION | TARGET, 0, request(22, f(1, bytes([1, 0x04, 0x05]) + b"ciphertext") + f(2, 60000)))
    + op(VERSION | SWEEP | 0x50, 0, request(18)),
    # Register a new account, upload keys, reset the identity.
    "register.bin": header(2, 2)
    + CHALLENGE
    + op(
        VERSION | SIGN | TARGET,
        0,
        request(
            11,
            f(2, EC_KEY)
            + f(3, 4242)
            + f(5, signed_pre_key(1, EC_KEY))
            + f(6, signed_pre_key(999, KYBER))
            + f(7, f(1, 1) + f(2, EC_KEY))
            + f(8, signed_pre_key(1, KYBER)),
        ),
    )
    + op(VERSION | SIGN, 0, request(13, f(1, f(1, 2) + f(2, EC_KEY)) + f(2, signed_pre_key(2, KYBER))))
    + op(VERSION, 0, request(14))
    + CHALLENGE
    + op(
        VERSION | SIGN,
        0,
        request(
            20,
            f(1, EC_KEY)
            + f(2, 77)
            + f(4, signed_pre_key(1, EC_KEY))
            + f(5, signed_pre_key(999, KYBER)),
        ),
    ),
    # The fixture group: read, write, join requests.
    "group.bin": header(3, 3)
    + op(VERSION | SIGN | TARGET, 0, request(31))
    + op(VERSION | SIGN | TARGET, 0, request(32, f(2, b"let me in")))
    + op(VERSION | SIGN | TARGET, 0, request(33))
    + op(VERSION | SIGN | TARGET, 0, request(34, f(2, varint(1))))
    + op(VERSION | SIGN | TARGET, 0, request(30, f(2, 1) + f(3, b"new state") + f(4, EC_KEY) + f(5, EC_KEY)))
    + op(VERSION | SIGN, 0, request(30, f(1, b"G" * 16) + f(3, b"a new group") + f(4, EC_KEY))),
}

os.makedirs(HERE, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(HERE, name), "wb") as out:
        out.write(data)
    print(f"{name}: {len(data)} bytes")
