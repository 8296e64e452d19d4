#!/usr/bin/python3
"""bench/faults.py: what faults cost live presence, measured.

Starts throwaway clusters (test/cluster.sh, through test/conftest.py's
Cluster) and prints, for each fault, the figure docs/operations.md quotes:

  1. held lock: heartbeat round trips of a client of session T (one every
     20 ms for HELD_SECONDS) while an application transaction holds
     session S's chain lock and a client of S keeps sending activity;
     then how long S's rows take to be written after the release;
  2. fast shutdown: `pg_ctl stop -m fast` with 50 queued rows and one
     client that stopped reading (its socket and queue full): the time
     the stop takes and the rows that survive;
  3. header trickle: 200 sockets trickling an upgrade from four
     addresses: how long a legitimate client takes to be welcomed meanwhile,
     and how long until every trickler is dropped
     (presence.handshake_timeout = 2 s).

    /usr/bin/python3 bench/faults.py            # HELD_SECONDS=10 RUNS=3
"""

import asyncio
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test"))
from conftest import BASE_GUCS, Cluster, wait_until  # noqa: E402
from test_admission import is_closed, trickler  # noqa: E402
from test_faults import SLOW_FLUSH, stalled_session  # noqa: E402

HELD_SECONDS = float(os.environ.get("HELD_SECONDS", "10"))
RUNS = int(os.environ.get("RUNS", "3"))
GUCS = dict(BASE_GUCS, **{"presence.rate_limit": "1000", "presence.max_message_bytes": "65536"})


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def cluster(gucs):
    c = Cluster("presence-bench-")
    c.start(dict(GUCS, **gucs))
    return c


async def held_lock(c):
    a, b = c.create_user(), c.create_user()
    held, free = c.create_session(a), c.create_session(b)
    ca, cb = await a.connect(), await b.connect()
    await ca.join(held)
    await cb.join(free)
    app = c.connect()
    app.autocommit = False
    app.execute("SELECT presence.log_activity(%s, NULL, 'app.pending')", (held,))
    latencies = []
    deadline = time.monotonic() + HELD_SECONDS
    sent = 0
    while time.monotonic() < deadline:
        if sent < 100:
            await ca.send({"type": "activity", "sessionId": held, "activityType": "while.held"})
            sent += 1
        started = time.monotonic()
        await cb.ok({"type": "heartbeat"}, "heartbeat_ack")
        latencies.append((time.monotonic() - started) * 1000)
        await asyncio.sleep(0.02)
    released = time.monotonic()
    app.commit()
    app.close()
    wait_until(lambda: len(c.activity_rows(held, "while.held")) == sent, what="the held rows")
    written_after = (time.monotonic() - released) * 1000
    await ca.close()
    await cb.close()
    return latencies, written_after


async def shutdown_with_stalled_client(c):
    sid, _, _, _ = await stalled_session(c)
    started = time.monotonic()
    await asyncio.to_thread(c.stop, "fast")
    elapsed = time.monotonic() - started
    c.start(dict(GUCS, **SLOW_FLUSH))
    return elapsed, len(c.activity_rows(sid, "queued"))


async def trickle(c):
    sockets = [trickler(c, "127.0.0.%d" % (10 + i % 4)) for i in range(200)]
    started = time.monotonic()
    await asyncio.sleep(0.3)
    connect_started = time.monotonic()
    client = await c.create_user().connect()
    welcomed = (time.monotonic() - connect_started) * 1000
    await client.close()
    wait_until(lambda: all(is_closed(s) for s in sockets), timeout=30, what="the tricklers dropped")
    dropped = time.monotonic() - started
    for s in sockets:
        s.close()
    return welcomed, dropped


async def main():
    print("1. heartbeat round trip of another session while a session's chain lock is held %.0f s" % HELD_SECONDS)
    c = cluster({})
    try:
        for run in range(RUNS):
            latencies, written_after = await held_lock(c)
            print("   run %d: %d heartbeats, p50 %.2f ms, p99 %.2f ms, max %.2f ms; held rows written %.0f ms "
                  "after the release" % (run + 1, len(latencies), statistics.median(latencies),
                                         percentile(latencies, 99), max(latencies), written_after))
    finally:
        c.destroy()
    print("2. fast shutdown with 50 queued rows and a client that stopped reading")
    c = cluster(SLOW_FLUSH)
    try:
        for run in range(RUNS):
            elapsed, rows = await shutdown_with_stalled_client(c)
            print("   run %d: pg_ctl stop -m fast took %.2f s, %d of 50 rows written" % (run + 1, elapsed, rows))
    finally:
        c.destroy()
    print("3. 200 sockets trickling headers from 4 addresses (handshake_timeout 2 s)")
    c = cluster({"presence.handshake_timeout": "2s"})
    try:
        for run in range(RUNS):
            welcomed, dropped = await trickle(c)
            print("   run %d: a legitimate client welcomed in %.1f ms; every trickler dropped after %.2f s"
                  % (run + 1, welcomed, dropped))
    finally:
        c.destroy()


if __name__ == "__main__":
    asyncio.run(main())
