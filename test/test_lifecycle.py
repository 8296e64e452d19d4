"""The worker's life (ARCHITECTURE.md, "Processes"): graceful SIGTERM with
queued activity, SIGHUP secret rotation, crash restart, DROP DATABASE
elsewhere, a database without the extension.  Most tests run a cluster of
their own, since they stop or crash it."""

import asyncio
import os
import re
import signal
import time


from conftest import SCALE, SECRET, WAIT, make_token, raw_connect, wait_until

# Activity waits in the queue: a flush only happens at shutdown (or for refs).
SLOW_FLUSH = {"presence.log_flush_interval": "60s", "presence.log_flush_max": "100000"}


async def queue_activity(client, sid, count):
    """Sends count activities without ref; returns once the worker has them all queued."""
    for i in range(count):
        await client.send({"type": "activity", "sessionId": sid, "activityType": "queued", "details": {"i": i}})
    # messages are handled in order: the ack of this one follows them
    await client.ok({"type": "heartbeat"}, "heartbeat_ack")


async def test_fast_shutdown_writes_queued_activity_and_closes_1001(fresh_cluster):
    c = fresh_cluster(SLOW_FLUSH)
    a, b = c.create_user(), c.create_user()
    sid = c.create_session(a, participants=[(b, "operator")])
    ca, cb = await a.connect(), await b.connect()
    await ca.join(sid)
    await cb.join(sid)
    await queue_activity(ca, sid, 30)
    await queue_activity(cb, sid, 5)
    assert not c.activity_rows(sid, "queued")
    stopping = asyncio.create_task(asyncio.to_thread(c.stop, "fast"))
    assert (await ca.closed())[0] == 1001
    assert (await cb.closed())[0] == 1001
    await stopping
    c.start(SLOW_FLUSH)
    rows = c.activity_rows(sid, "queued")
    assert sorted(r[2]["i"] for r in rows if r[1] == a.id) == list(range(30))
    assert sorted(r[2]["i"] for r in rows if r[1] == b.id) == list(range(5))
    # the leaves of the closed clients were written too
    assert {r[1] for r in c.activity_rows(sid, "user_left")} == {a.id, b.id}
    ok = c.sql("SELECT ok FROM presence.verify_audit_chain(%s)", (sid,))[0][0]
    assert ok
    text = open(c.log_path).read()
    assert "could not be written before shutdown" not in text


async def test_terminated_worker_writes_its_queue_and_comes_back(fresh_cluster):
    c = fresh_cluster(SLOW_FLUSH)
    a = c.create_user()
    sid = c.create_session(a)
    ca = await a.connect()
    await ca.join(sid)
    await queue_activity(ca, sid, 20)
    pid = c.worker_pid()
    assert c.sql1("SELECT pg_terminate_backend(%s)", (pid,))
    assert (await ca.closed())[0] == 1001
    # written by the exiting worker, no restart of the cluster needed
    rows = wait_until(lambda: len(c.activity_rows(sid, "queued")) == 20 and c.activity_rows(sid, "queued"),
                      what="the queued rows")
    assert sorted(r[2]["i"] for r in rows) == list(range(20))
    # the postmaster starts it again (bgw_restart_time)
    new_pid = c.wait_worker(timeout=WAIT + 10 * SCALE)
    assert new_pid != pid
    ca = await a.connect()
    await ca.join(sid)
    await ca.close()


async def test_secret_rotation_on_reload(cluster, user, gucs):
    a = user()
    sid = cluster.create_session(a)
    old = await a.connect()
    await old.join(sid)
    new_secret = "rotated-secret-0123456789abcdef0123456789"
    gucs({"presence.jwt_secret": new_secret})
    # connections authenticated with the old secret stay open and working
    await old.alive()
    await old.ok({"type": "presence_update", "sessionId": sid, "status": "away"})
    # new connections need the new secret
    refused = await raw_connect(cluster, token=make_token(a.id, secret=SECRET))
    assert (await refused.closed())[0] == 4001
    refused = await raw_connect(cluster)
    await refused.send({"type": "auth", "token": make_token(a.id, secret=SECRET)})
    assert (await refused.closed())[0] == 4001
    fresh = await raw_connect(cluster, token=make_token(a.id, secret=new_secret))
    await fresh.expect("welcome")
    await fresh.join(sid)
    await fresh.close()
    await old.close()


async def test_kill_9_crash_restart_and_recovery(fresh_cluster):
    c = fresh_cluster()
    a, b = c.create_user(), c.create_user()
    sid = c.create_session(a, participants=[(b, "viewer")])
    ca, cb = await a.connect(), await b.connect()
    await ca.join(sid)
    await cb.join(sid)
    await ca.event(sid, "join", b.id)
    pid = c.worker_pid()
    postmaster = c.postmaster_pid()
    os.kill(pid, signal.SIGKILL)
    # the postmaster reinitialises the cluster: every connection drops
    for client in (ca, cb):
        code, _ = await client.closed(timeout=WAIT + 10 * SCALE)
        assert code in (1006, 1001, 1011), code
    new_pid = c.wait_worker(timeout=30 * SCALE)
    assert new_pid != pid and c.postmaster_pid() == postmaster
    assert "terminated by signal 9" in open(c.log_path).read()
    # live state starts empty
    assert c.sql1("SELECT count(*) FROM presence.online_users(%s)", (sid,)) == 0
    # clients reconnect; presence recovers
    ca = await a.connect()
    await ca.join(sid)
    cb = await b.connect()
    joined = await cb.join(sid)
    assert sorted(u["userId"] for u in joined["users"]) == sorted([a.id, b.id])
    await ca.event(sid, "join", b.id)
    wait_until(lambda: c.sql1("SELECT count(*) FROM presence.online_users(%s)", (sid,)) == 2,
               what="online_users after the restart")
    await ca.ok({"type": "activity", "sessionId": sid, "activityType": "after.crash"})
    await ca.close()
    await cb.close()


def test_drop_database_of_another_database_is_not_blocked(cluster):
    offset = cluster.log_size()
    pid = cluster.worker_pid()
    for _ in range(3):
        cluster.sql("CREATE DATABASE presence_scratch", dbname="postgres")
        cluster.sql("DROP DATABASE presence_scratch", dbname="postgres")
    log = cluster.log_since(offset)
    assert "still waiting for backend with PID %d" % pid not in log
    assert cluster.worker_pid() == pid


async def test_database_without_extension(fresh_cluster):
    c = fresh_cluster()
    c.sql("CREATE DATABASE noext", dbname="postgres")
    c.set_gucs({"presence.database": "noext"})
    before = c.log_size()
    c.sh("restart")
    # from the new postmaster's start on
    offset = before + c.log_since(before).rfind("starting PostgreSQL")
    pid = wait_until(c.worker_pid, timeout=30 * SCALE, what="the ws worker to start")
    message = re.compile(r"presence ws worker LOG: .*does not have the presence extension")
    wait_until(lambda: message.search(c.log_since(offset)), what="the worker to say why it waits")
    time.sleep(3 * SCALE)  # long enough for a crash loop to show (bgw_restart_time is 5 s)
    log = c.log_since(offset)
    assert len(message.findall(log)) == 1, log
    assert c.worker_pid() == pid
    assert not re.search(r"presence ws worker.*(exited with|terminated by)|presence ws worker (ERROR|FATAL)", log), log
    # nothing listens yet
    try:
        status = c.http("GET", "/healthz")[0]
    except OSError:
        status = None
    assert status != 200
    # once the extension exists the same worker starts serving
    c.sql("CREATE EXTENSION presence", dbname="noext")
    wait_until(lambda: "ws worker 0 listening on" in c.log_since(offset), timeout=30 * SCALE, interval=0.2,
               what="the worker to start listening")
    assert c.worker_pid() == pid
    u = c.sql1("INSERT INTO presence.users (username) VALUES ('noext-user') RETURNING id::text", dbname="noext")
    client = await raw_connect(c, token=make_token(u))
    await client.expect("welcome")
    await client.close()


async def test_database_refusing_writes(fresh_cluster):
    """While the database cannot take writes: acks wait, /healthz says 503, a
    full queue answers unavailable; once it can, everything queued is written."""
    c = fresh_cluster({"presence.max_pending_activity": "100", "presence.rate_limit": "1000"})
    a = c.create_user()
    sid = c.create_session(a)
    ca = await a.connect()
    await ca.join(sid)
    c.reload({"default_transaction_read_only": "on"})
    await ca.send({"type": "activity", "sessionId": sid, "activityType": "pending", "ref": "first"})
    wait_until(lambda: c.http("GET", "/healthz")[0] == 503, what="/healthz to report the database")
    assert b"database" in c.http("GET", "/healthz")[2]
    for i in range(120):
        await ca.send({"type": "activity", "sessionId": sid, "activityType": "pending", "details": {"i": i}})
    error = await ca.expect("error")
    assert error["code"] == "unavailable", error
    assert not [m for m in ca.inbox if m.get("ref") == "first"]
    # the database takes writes again
    c.reload({"default_transaction_read_only": "off"})
    ack = await ca.expect("ack", ref="first", timeout=WAIT + 5 * SCALE)
    assert c.sql1("SELECT activity_type FROM presence.activity_log WHERE id = %s", (ack["activityId"],)) == "pending"
    queued = len(c.activity_rows(sid, "pending"))
    refused = len([m for m in ca.inbox if m.get("type") == "error" and m.get("code") == "unavailable"]) + 1
    assert queued + refused == 121, (queued, refused)
    wait_until(lambda: c.http("GET", "/healthz")[0] == 200, what="/healthz to recover")
    await ca.alive()
    await ca.close()
