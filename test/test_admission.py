"""Sockets that do not authenticate cannot crowd out those that do
(issue 8): slow or trickled headers are dropped within the handshake
timeout, one address cannot hold more than its share of unauthenticated
sockets, and at the worker's bound the oldest newcomer makes room."""

import asyncio
import socket
import time

from conftest import SCALE, WAIT, Client, wait_until

HANDSHAKE_TIMEOUT = round(2 * SCALE)  # seconds, presence.handshake_timeout in these tests
AUTH_TIMEOUT = round(3 * SCALE)
GUCS = {"presence.handshake_timeout": "%ds" % HANDSHAKE_TIMEOUT, "presence.auth_timeout": "%ds" % AUTH_TIMEOUT,
        "presence.max_connections": "2000"}


def trickler(cluster, source, complete=False):
    """A socket from source that sends the request line and one header
    (complete: the whole upgrade, then nothing) and then waits."""
    s = socket.socket()
    s.bind((source, 0))
    s.settimeout(WAIT)
    s.connect(("127.0.0.1", cluster.wsport))
    request = "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    if complete:
        request += ("Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    s.sendall(request.encode())
    return s


def is_closed(s):
    """Whether the server closed s (reading whatever it sent before)."""
    s.setblocking(False)
    try:
        while True:
            data = s.recv(65536)
            if not data:
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True


async def user_gets_in(user, seconds):
    """A legitimate client from 127.0.0.1 is welcomed within seconds."""
    started = time.monotonic()
    client = await user.connect()
    elapsed = time.monotonic() - started
    await client.close()
    assert elapsed < seconds, elapsed


async def test_trickled_headers_are_dropped_and_lock_no_one_out(fresh_cluster):
    c = fresh_cluster(GUCS)
    # 200 tricklers from four addresses, within each address's share:
    # more than lws's header tables used to be (64)
    sockets = [trickler(c, "127.0.0.%d" % (10 + i % 4)) for i in range(200)]
    started = time.monotonic()
    await asyncio.sleep(0.5 * SCALE)
    assert not any(is_closed(s) for s in sockets)
    await user_gets_in(c.create_user(), 1.5 * SCALE)
    # every trickler is dropped after the handshake timeout, within a sweep or two
    wait_until(lambda: all(is_closed(s) for s in sockets), timeout=HANDSHAKE_TIMEOUT + 5 * SCALE,
               what="the tricklers dropped")
    assert time.monotonic() - started >= HANDSHAKE_TIMEOUT - 0.5 * SCALE
    for s in sockets:
        s.close()


async def test_one_address_holds_only_its_share(fresh_cluster):
    c = fresh_cluster(dict(GUCS, **{"presence.max_unauthenticated_per_address": "50"}))
    # upgraded and never authenticating, from one address
    sockets = [trickler(c, "127.0.0.20", complete=True) for _ in range(300)]
    await asyncio.sleep(0.5 * SCALE)
    closed = sum(is_closed(s) for s in sockets)
    assert closed == 250, closed
    await user_gets_in(c.create_user(), 1.5 * SCALE)
    # a client from another address is not affected, even unauthenticated
    other = await Client.open(c)
    await other.send({"type": "auth", "token": c.create_user().token()})
    await other.expect("welcome")
    # the 50 that got in hear 4008 after presence.auth_timeout
    wait_until(lambda: all(is_closed(s) for s in sockets), timeout=AUTH_TIMEOUT + 5 * SCALE, what="4008 for the rest")
    await other.alive()
    await other.close()
    for s in sockets:
        s.close()


async def test_at_the_bound_the_oldest_newcomer_makes_room(fresh_cluster):
    c = fresh_cluster(dict(GUCS, **{"presence.max_unauthenticated": "16",
                                    "presence.handshake_timeout": "60s"}))
    first = [trickler(c, "127.0.0.30") for _ in range(16)]
    await asyncio.sleep(0.3 * SCALE)
    later = [trickler(c, "127.0.0.31") for _ in range(10)]
    await asyncio.sleep(0.3 * SCALE)
    # the ten oldest went, the rest stay
    assert [is_closed(s) for s in first] == [True] * 10 + [False] * 6
    assert not any(is_closed(s) for s in later)
    await user_gets_in(c.create_user(), 1.5 * SCALE)
    for s in first + later:
        s.close()
