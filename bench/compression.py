#!/usr/bin/python3
"""bench/compression.py: what permessage-deflate costs the ws worker.

Starts a throwaway cluster (test/cluster.sh, through test/conftest.py's
Cluster), connects Python websockets clients with and without their
default permessage-deflate offer, and prints:

  1. sizes: real server messages, plain and as the worker compresses them
     (zlib level 6, 15-bit window, reset per message), and the CPU time of
     compressing 1,000 of each in this process (the same zlib), which is
     what presence.compression_min_bytes is chosen from;
  2. memory: the worker's RSS per connection, plain and compressed, each
     connection having sent MESSAGES messages of ~300 bytes (150: more
     than the inflater's 32 KiB window, so all of it is in use);
  3. CPU: the worker's CPU time per 1,000 small frames sent (broadcasts of
     ~150 bytes) with compression off, on for every frame
     (compression_min_bytes = 0) and at the default threshold; and per
     1,000 small messages received, plain and compressed.

    /usr/bin/python3 bench/compression.py          # CONNECTIONS=300 ROUNDS=3 MESSAGES=150
"""

import asyncio
import json
import os
import sys
import time
import zlib

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test"))
from conftest import BASE_GUCS, Client, Cluster  # noqa: E402

CONNECTIONS = int(os.environ.get("CONNECTIONS", "300"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
MESSAGES = int(os.environ.get("MESSAGES", "150"))
GUCS = dict(BASE_GUCS, **{"presence.rate_limit": "100000", "presence.max_participants": "1000",
                          "presence.max_message_bytes": "65536", "presence.batch_max": "1000"})


def deflated_size(data):
    """Bytes on the wire as the worker compresses a message."""
    z = zlib.compressobj(6, zlib.DEFLATED, -15, 8)
    return len(z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH)) - 4


def worker_rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def worker_cpu_s(pid):
    """CPU time the worker has used (schedstat: nanoseconds, finer than ticks)."""
    with open("/proc/%d/schedstat" % pid) as f:
        return int(f.read().split()[0]) / 1e9


async def open_clients(cluster, users, sid, compressed):
    clients = []
    for u in users:
        c = await Client.open(cluster, token=u.token(), compression="deflate" if compressed else None)
        await c.expect("welcome")
        await c.join(sid)
        clients.append(c)
    return clients


async def drain(clients, count, type_):
    """Waits until every client received count messages of type_."""
    async def one(c):
        for _ in range(count):
            await c.expect(type_, timeout=120)
    await asyncio.gather(*(one(c) for c in clients))


async def sizes(cluster, users, sid):
    c = (await open_clients(cluster, users[:1], sid, False))[0]
    seen = {}
    await c.send({"type": "heartbeat", "ref": 1})
    seen["heartbeat_ack"] = await c.ws.recv()
    await c.send({"type": "cursor_update", "sessionId": sid, "ref": 2, "cursor": {"eventId": "e1", "position": 7}})
    seen["ack"] = await c.ws.recv()
    others = await open_clients(cluster, users[1:6], sid, False)
    await others[0].send({"type": "cursor_update", "sessionId": sid, "cursor": {"eventId": "e2", "position": 9}})
    while "presence (1 event)" not in seen:
        raw = await c.ws.recv()
        if '"kind":"cursor"' in raw:
            seen["presence (1 event)"] = raw
    await c.send({"type": "session_join", "sessionId": sid, "ref": 3})
    seen["session_joined (6 users)"] = await c.ws.recv()
    print("1. sizes (bytes: plain -> compressed, reset per message) and zlib CPU per 1,000 of them")
    for name, raw in seen.items():
        data = raw.encode()
        start = time.process_time()
        for _ in range(1000):
            deflated_size(data)
        print("   %-26s %5d -> %5d (%+4.0f%%)  %.1f ms" % (
            name, len(data), deflated_size(data), 100.0 * (deflated_size(data) - len(data)) / len(data),
            1000 * (time.process_time() - start)))
    for x in [c] + others:
        await x.close()


async def memory(cluster, pid, users):
    """RSS per authenticated connection that sent MESSAGES heartbeats of
    ~300 bytes (no session: nothing else grows)."""
    print("2. worker RSS per connection (%d connections each, after %d messages each)" % (CONNECTIONS, MESSAGES))
    held = []
    for compressed in (False, True):
        before = worker_rss_kb(pid)
        clients = []
        for u in users[:CONNECTIONS]:
            c = await Client.open(cluster, token=u.token(), compression="deflate" if compressed else None)
            await c.expect("welcome")
            clients.append(c)
        for i in range(MESSAGES):
            for n, c in enumerate(clients):
                await c.send({"type": "heartbeat", "ref": "%d-%d" % (n, i),
                              "pad": " ".join("word%d" % ((n * 31 + i * 7 + k) % 97) for k in range(40))})
        await drain(clients, MESSAGES, "heartbeat_ack")
        per = (worker_rss_kb(pid) - before) / len(clients)
        print("   %-10s %.1f KiB" % ("compressed" if compressed else "plain", per))
        held += clients
    for c in held:
        await c.close()


async def cpu_out(cluster, pid, users, sid, label, compressed, threshold):
    if threshold is not None:
        cluster.reload({"presence.compression_min_bytes": threshold})
    clients = await open_clients(cluster, users[:CONNECTIONS], sid, compressed)
    broadcasts = 200
    payload = json.dumps({"text": "cursor moved to line 42 of the incident timeline", "n": 1})
    best = None
    for _ in range(ROUNDS):
        start = worker_cpu_s(pid)
        cluster.sql("SELECT presence.broadcast(%s, %s::jsonb) FROM generate_series(1, %s)", (sid, payload, broadcasts))
        await drain(clients, broadcasts, "broadcast")
        spent = worker_cpu_s(pid) - start
        best = spent if best is None else min(best, spent)
    print("   %-34s %.2f ms per 1,000 frames" % (label, 1000 * best / (broadcasts * len(clients)) * 1000))
    for c in clients:
        await c.close()


async def cpu_in(cluster, pid, users, sid, compressed):
    clients = await open_clients(cluster, users[:CONNECTIONS], sid, compressed)
    per_client = 50
    best = None
    for r in range(ROUNDS):
        start = worker_cpu_s(pid)
        for i in range(per_client):
            for c in clients:
                await c.send({"type": "heartbeat", "ref": "%d-%d" % (r, i)})
        await drain(clients, per_client, "heartbeat_ack")
        spent = worker_cpu_s(pid) - start
        best = spent if best is None else min(best, spent)
    print("   %-34s %.2f ms per 1,000 messages" % ("received, " + ("compressed" if compressed else "plain"),
                                                   1000 * best / (per_client * len(clients)) * 1000))
    for c in clients:
        await c.close()


async def main():
    cluster = Cluster("presence-bench-")
    try:
        cluster.start(GUCS)
        pid = cluster.worker_pid()
        owner = cluster.create_user()
        users = [owner] + [cluster.create_user() for _ in range(CONNECTIONS)]
        sid = cluster.create_session(owner)
        cluster.sql("SELECT presence.add_participant(%s, id, 'viewer') FROM presence.users WHERE id <> %s::uuid",
                    (sid, owner.id))
        await sizes(cluster, users, sid)
        await memory(cluster, pid, users)
        print("3. worker CPU (best of %d, %d connections)" % (ROUNDS, CONNECTIONS))
        await cpu_out(cluster, pid, users, sid, "sent, no compression negotiated", False, None)
        await cpu_out(cluster, pid, users, sid, "sent, compressed (min_bytes 0)", True, "0")
        default = cluster.sql1("SELECT boot_val FROM pg_settings WHERE name = 'presence.compression_min_bytes'")
        await cpu_out(cluster, pid, users, sid, "sent, min_bytes %s (default)" % default, True, default + "B")
        await cpu_in(cluster, pid, users, sid, False)
        await cpu_in(cluster, pid, users, sid, True)
    finally:
        cluster.destroy()


asyncio.run(main())
