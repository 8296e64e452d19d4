"""Hostile raw-socket peers for the keepalive, the 1 KiB receive buffer and
the permessage-deflate answer: pings between compressed fragments, split
UTF-8, ping_interval switched off and on, what the pings count as."""
import asyncio
import json
import re
import os
import struct
import time
import zlib

from conftest import SCALE, WAIT
from test_keepalive import RawPeer, INTERVAL_S, keepalive_drops


def masked_frame(first, payload):
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = bytes([first, 0x80 | n])
    elif n < 65536:
        head = bytes([first, 0x80 | 126]) + struct.pack("!H", n)
    else:
        head = bytes([first, 0x80 | 127]) + struct.pack("!Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def open_deflate(cluster, token):
    reader, writer = await asyncio.open_connection("127.0.0.1", cluster.wsport)
    writer.write(("GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
                  "Authorization: Bearer %s\r\n\r\n" % token).encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
    assert head.startswith(b"HTTP/1.1 101"), head
    assert b"permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n" in head, head
    return RawPeer(reader, writer)


async def texts_until(peer, predicate, seconds=WAIT):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        opcode, payload = await asyncio.wait_for(peer.frame(), deadline - time.monotonic())
        if opcode == 0x8:
            raise AssertionError("closed: %r" % payload)
        if opcode == 0x1 and payload[:1] == b"{":
            m = json.loads(payload)
            if predicate(m):
                return m
    raise AssertionError("timed out")


async def texts_until_any(peer, ref):
    deadline = time.monotonic() + WAIT
    while True:
        opcode, payload = await asyncio.wait_for(peer.frame(), deadline - time.monotonic())
        assert opcode != 0x8, payload
        if opcode == 0x1:
            try:
                text = payload.decode()
            except UnicodeDecodeError:
                text = zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff").decode()
            if json.loads(text).get("ref") == ref:
                return


async def test_compressed_fragmented_long_utf8_message(cluster, user):
    u = user()
    peer = await open_deflate(cluster, u.token())
    # welcome may come compressed or not; the peer's texts are read raw, so skip
    sid = cluster.create_session(u)
    peer.writer.write(masked_frame(0x81, json.dumps({"type": "session_join", "sessionId": sid, "ref": "j"}).encode()))
    await texts_until_any(peer, "j")
    import random
    rng = random.Random(7)
    note = "".join(rng.choice("é€😀ñß漢字") for _ in range(1100))  # ~3.3 KB of multibyte characters
    msg = json.dumps({"type": "activity", "sessionId": sid, "activityType": "utf8",
                      "details": {"note": note}, "ref": "r1"}, ensure_ascii=False).encode()
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    data = c.compress(msg) + c.flush(zlib.Z_SYNC_FLUSH)
    assert data.endswith(b"\x00\x00\xff\xff")
    data = data[:-4]
    # odd-sized fragments so inflated chunks split characters anywhere
    pieces = [data[i:i + 97] for i in range(0, len(data), 97)]
    for i, piece in enumerate(pieces):
        first = (0x1 | 0x40) if i == 0 else 0x0
        if i == len(pieces) - 1:
            first |= 0x80
        # a client ping between fragments, as RFC 6455 allows
        peer.writer.write(masked_frame(first, piece))
        if i == 1:
            peer.writer.write(masked_frame(0x89, b"hi"))
    await peer.writer.drain()
    deadline = time.monotonic() + WAIT
    got_pong = False
    ack = None
    while time.monotonic() < deadline and ack is None:
        opcode, payload = await asyncio.wait_for(peer.frame(), deadline - time.monotonic())
        if opcode == 0xA:
            got_pong = payload == b"hi"
        elif opcode == 0x8:
            raise AssertionError("closed: %r" % payload)
        elif opcode == 0x1:
            try:
                text = payload.decode()
            except UnicodeDecodeError:
                text = zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff").decode()
            m = json.loads(text)
            if m.get("ref") == "r1":
                ack = m
    assert ack and ack["type"] == "ack", ack
    try:
        while not got_pong:
            opcode, payload = await asyncio.wait_for(peer.frame(), 2 * SCALE)
            if opcode == 0xA:
                got_pong = payload == b"hi"
    except asyncio.TimeoutError:
        pass
    assert got_pong, "a client's ping between fragments was not answered"
    rows = [r[2] for r in cluster.activity_rows(sid, "utf8")]
    assert rows and rows[-1]["note"] == note
    peer.close()


async def test_ping_interval_zero_and_back(cluster, gucs, user):
    gucs({"presence.ping_interval": "%dms" % (INTERVAL_S * 1000)})
    peer = await RawPeer.open(cluster, user().token())
    await peer.run(answer_pings=True, seconds=INTERVAL_S * 2.5)
    assert peer.pings and peer.closed_at is None
    gucs({"presence.ping_interval": "0"})
    n = len(peer.pings)
    await peer.run(answer_pings=True, seconds=INTERVAL_S * 3)
    assert len(peer.pings) <= n + 1 and peer.closed_at is None
    gucs({"presence.ping_interval": "%dms" % (INTERVAL_S * 1000)})
    await peer.run(answer_pings=True, seconds=INTERVAL_S * 4)
    assert peer.closed_at is None and len(peer.pings) > n
    peer.close()


def messages_out(cluster):
    body = cluster.http("GET", "/metrics")[2].decode()
    total = int(re.search(r"(?m)^presence_messages_out_total (\d+)", body).group(1))
    typed = sum(int(v) for v in re.findall(r"(?m)^presence_messages_out_by_type_total\{[^}]*\} (\d+)", body))
    return total, typed


async def test_keepalive_pings_are_not_counted_as_messages(cluster, gucs, user):
    """presence_messages_out_total (and stats().messages_out) counts the
    messages sent; keepalive pings are not messages, and lws's pings were
    never counted."""
    gucs({"presence.ping_interval": "%dms" % (INTERVAL_S * 1000)})
    peer = await RawPeer.open(cluster, user().token())
    await peer.run(answer_pings=True, seconds=INTERVAL_S * 0.5)   # the welcome
    before = messages_out(cluster)
    await peer.run(answer_pings=True, seconds=INTERVAL_S * 3.5)
    assert len(peer.pings) >= 2
    after = messages_out(cluster)
    peer.close()
    assert after[0] - before[0] == after[1] - before[1], (before, after, len(peer.pings))
