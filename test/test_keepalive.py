"""Keepalive: the server pings connections it has not heard from for
presence.ping_interval, drops the ones that do not answer, and spreads the
pings of connections that opened together over the interval."""
import asyncio
import os
import re
import struct
import time

from conftest import SCALE, WAIT, wait_until

INTERVAL_S = 2.0 * SCALE


class RawPeer:
    """A WebSocket client written out by hand, so the test decides whether
    pings are answered, and sees when each one arrives."""

    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer
        self.pings = []          # monotonic arrival times
        self.texts = []
        self.closed_at = None

    @classmethod
    async def open(cls, cluster, token):
        reader, writer = await asyncio.open_connection("127.0.0.1", cluster.wsport)
        writer.write(("GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      "Sec-WebSocket-Version: 13\r\nAuthorization: Bearer %s\r\n\r\n" % token).encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    async def frame(self):
        first, second = await self.reader.readexactly(2)
        length = second & 0x7F
        if length == 126:
            length = struct.unpack("!H", await self.reader.readexactly(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", await self.reader.readexactly(8))[0]
        return first & 0x0F, await self.reader.readexactly(length)

    def send(self, opcode, payload=b""):
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.writer.write(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)

    async def run(self, answer_pings, seconds):
        """Reads frames for a while (or until the server closes)."""
        deadline = time.monotonic() + seconds
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                opcode, payload = await asyncio.wait_for(self.frame(), remaining)
                if opcode == 0x9:
                    self.pings.append(time.monotonic())
                    if answer_pings:
                        self.send(0xA, payload)
                elif opcode == 0x1:
                    self.texts.append(payload)
                elif opcode == 0x8:
                    self.closed_at = time.monotonic()
                    return
        except asyncio.TimeoutError:
            return
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed_at = time.monotonic()

    def close(self):
        self.writer.close()


def keepalive_drops(cluster):
    body = cluster.http("GET", "/metrics")[2].decode()
    return int(re.search(r"(?m)^presence_keepalive_drops_total (\d+)", body).group(1))


async def test_idle_peer_that_answers_is_pinged_and_kept(cluster, gucs, user):
    gucs({"presence.ping_interval": "%dms" % (INTERVAL_S * 1000)})
    peer = await RawPeer.open(cluster, user().token())
    await peer.run(answer_pings=True, seconds=INTERVAL_S * 5)
    try:
        assert peer.closed_at is None, "an idle peer that answers pings was dropped"
        assert len(peer.pings) >= 2, "pinged %d times in five intervals" % len(peer.pings)
        # one ping per quiet interval, not a stream of them
        assert len(peer.pings) <= 5, peer.pings
    finally:
        peer.close()


async def test_peer_that_sends_is_not_pinged(cluster, gucs, user):
    gucs({"presence.ping_interval": "%dms" % (INTERVAL_S * 1000)})
    peer = await RawPeer.open(cluster, user().token())
    try:
        for _ in range(8):
            peer.send(0x1, b'{"type":"heartbeat"}')
            await peer.run(answer_pings=False, seconds=INTERVAL_S / 2)
        assert peer.closed_at is None
        assert peer.pings == [], "a peer heard from every half interval was pinged"
    finally:
        peer.close()


async def test_peer_that_stops_answering_is_dropped_and_leaves(cluster, gucs, user):
    gucs({"presence.ping_interval": "%dms" % (INTERVAL_S * 1000)})
    owner, silent_user = user(), user()
    sid = cluster.create_session(owner, participants=[(silent_user, "operator")])
    watcher = await owner.connect()
    await watcher.join(sid)
    silent = await RawPeer.open(cluster, silent_user.token())
    silent.send(0x1, b'{"type":"session_join","sessionId":"%s","ref":"j"}' % sid.encode())
    await watcher.event(sid, "join", silent_user.id)
    drops = keepalive_drops(cluster)
    started = time.monotonic()
    # reads everything, answers nothing: alive to TCP, dead to WebSocket
    await silent.run(answer_pings=False, seconds=INTERVAL_S * 6)
    try:
        assert silent.closed_at is not None, "a peer that never answered a ping was kept"
        # quiet for an interval, pinged within the next, dropped an interval after
        assert silent.closed_at - started <= INTERVAL_S * 4 + 2 * SCALE
        assert silent.pings, "dropped without being pinged"
        assert keepalive_drops(cluster) == drops + 1
        await watcher.event(sid, "leave", silent_user.id)
        await watcher.alive()
    finally:
        silent.close()
        await watcher.close()


async def test_pings_of_connections_opened_together_are_spread(cluster, gucs, user):
    gucs({"presence.ping_interval": "%dms" % (INTERVAL_S * 1000)})
    peers = [await RawPeer.open(cluster, user().token()) for _ in range(40)]
    try:
        await asyncio.gather(*(p.run(answer_pings=True, seconds=INTERVAL_S * 3) for p in peers))
        firsts = sorted(p.pings[0] for p in peers if p.pings)
        assert len(firsts) == len(peers), "%d of %d peers were pinged" % (len(firsts), len(peers))
        # visited a share at a time: the first pings cover much of an interval
        assert firsts[-1] - firsts[0] >= INTERVAL_S * 0.4, \
            "40 pings within %.2f s of an interval of %.1f s" % (firsts[-1] - firsts[0], INTERVAL_S)
    finally:
        for p in peers:
            p.close()
