"""Scale-out through Redis: several workers and nodes (a primary and a hot
standby made with pg_basebackup -R) sharing one redis-server.

Real parts only: two PostgreSQL servers with presence preloaded, streaming
replication, a real redis-server, real WebSocket clients.  Timeouts are
short (presence_ttl 3 s) so node death shows within seconds.
"""
import asyncio
import datetime
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid

import psycopg
import psycopg.sql
import pytest
import websockets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLUSTER = os.path.join(ROOT, "test", "cluster.sh")
PGBIN = os.environ.get("PGBIN", "/usr/lib/postgresql/15/bin")
TTL_S = 3
GUCS = [
    "presence.workers=2",
    f"presence.presence_ttl={TTL_S}s",
    "presence.heartbeat_interval=1s",
    "presence.heartbeat_timeout=30s",
    "presence.log_flush_interval=200ms",
    "presence.redis_connect_timeout=500ms",
    "log_timezone=UTC",         # log_times() reads the server's timestamps
]
ALICE = "a1a1a1a1-0000-4000-8000-000000000001"
BOB = "b0b0b0b0-0000-4000-8000-000000000002"
CAROL = "c0c0c0c0-0000-4000-8000-000000000003"


def free_port():
    """A free TCP port below the ephemeral range."""
    while True:
        port = 20000 + int.from_bytes(os.urandom(2), "big") % 12000
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue


def as_postgres(*argv):
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--", *argv]


class Node:
    """One PostgreSQL server of the test, driven through test/cluster.sh."""

    def __init__(self, directory, pgport, wsport):
        self.dir, self.pgport, self.wsport = directory, pgport, wsport

    def sql(self, query):
        return subprocess.check_output(
            [CLUSTER, "psql", self.dir, "-XtAq", "-v", "ON_ERROR_STOP=1", "-c", query]).decode().strip()

    def ctl(self, *args):
        subprocess.check_call([CLUSTER, *args[:1], self.dir, *args[1:]])

    def log(self):
        with open(os.path.join(self.dir, "server.log"), errors="replace") as f:
            return f.read()

    def log_times(self, text, since=0):
        """When (epoch seconds) the lines containing text were logged, from offset since of the log."""
        times = []
        for line in self.log()[since:].splitlines():
            if text in line:
                stamp = datetime.datetime.strptime(" ".join(line.split()[:2]), "%Y-%m-%d %H:%M:%S.%f")
                times.append(stamp.replace(tzinfo=datetime.timezone.utc).timestamp())
        return times

    def http(self, path):
        with socket.create_connection(("127.0.0.1", self.wsport), timeout=5) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        return int(head.split()[1]), body.decode(errors="replace")

    def wait_healthy(self, timeout=40):
        """Until /healthz says ok (every worker has the database and Redis)."""
        deadline = time.time() + timeout
        while self.http("/healthz")[0] != 200:
            assert time.time() < deadline, f"{self.dir} stayed degraded"
            time.sleep(0.2)

    def wait_workers(self, count=2, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                n = int(self.sql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'presence ws worker'"))
                if n >= count:
                    return
            except subprocess.CalledProcessError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"ws workers of {self.dir} did not start:\n{self.log()[-3000:]}")


class Redis:
    def __init__(self, port, password=None):
        self.port, self.password, self.proc = port, password, None

    def start(self):
        """Starts redis-server; returns when (epoch seconds) it first answered PING."""
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no"]
        if self.password:
            argv += ["--requirepass", self.password]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64)[:1] in (b"+", b"-"):  # +PONG, or -NOAUTH when it has a password
                        return time.time()
            except OSError:
                pass
            time.sleep(0.01)
        raise AssertionError("redis-server did not start")

    def stop(self):
        if self.proc:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    def cli(self, *args):
        argv = ["redis-cli", "-p", str(self.port)] + (["-a", self.password, "--no-auth-warning"] if self.password else [])
        return subprocess.check_output(argv + list(args)).decode().strip()


@pytest.fixture(scope="module")
def world():
    """A primary, its hot standby and one redis-server."""
    base = tempfile.mkdtemp(prefix="presence-scaleout-")
    os.chmod(base, 0o755)
    redis = Redis(free_port())
    redis.start()
    url = f"presence.redis_url=redis://127.0.0.1:{redis.port}"
    primary = Node(os.path.join(base, "primary"), free_port(), free_port())
    subprocess.check_call([CLUSTER, "start", primary.dir, str(primary.pgport), str(primary.wsport), url, *GUCS],
                          stdout=subprocess.DEVNULL)
    primary.wait_workers()
    primary.sql(f"""INSERT INTO presence.users (id, username) VALUES
                    ('{ALICE}', 'alice'), ('{BOB}', 'bob'), ('{CAROL}', 'carol')""")

    standby = Node(os.path.join(base, "standby"), free_port(), free_port())
    os.makedirs(standby.dir)
    shutil.chown(standby.dir, "postgres", "postgres")
    subprocess.check_call(as_postgres(f"{PGBIN}/pg_basebackup", "-h", "127.0.0.1", "-p", str(primary.pgport),
                                      "-U", "postgres", "-D", os.path.join(standby.dir, "data"), "-R", "-c", "fast",
                                      "-X", "stream"), stdout=subprocess.DEVNULL)
    data = os.path.join(standby.dir, "data")
    with open(os.path.join(data, "postgresql.conf"), "a") as f:
        f.write(f"port = {standby.pgport}\nunix_socket_directories = '{standby.dir}'\n")
    with open(os.path.join(data, "postgresql.auto.conf.presence"), "w") as f:
        f.write(f"port = {standby.pgport}\n")
    subprocess.check_call([CLUSTER, "start", standby.dir, str(standby.pgport), str(standby.wsport),
                           f"presence.port={standby.wsport}"], stdout=subprocess.DEVNULL)
    standby.wait_workers()
    assert standby.sql("SELECT pg_is_in_recovery()") == "t"

    yield primary, standby, redis

    for node in (standby, primary):
        subprocess.call([CLUSTER, "destroy", node.dir])
    redis.stop()
    shutil.rmtree(base, ignore_errors=True)


def new_session(primary, standby, *participants):
    """A session owned by alice with the given participants, replicated to the standby."""
    session_id = "s-" + uuid.uuid4().hex[:10]
    primary.sql(f"SELECT presence.create_session('{ALICE}', session_id => '{session_id}')")
    for user in participants:
        primary.sql(f"SELECT presence.add_participant('{session_id}', '{user}', 'operator')")
    deadline = time.time() + 10
    while standby.sql(f"SELECT count(*) FROM presence.collaboration_sessions WHERE session_id = '{session_id}'") != "1":
        assert time.time() < deadline, "session did not replicate"
        time.sleep(0.1)
    return session_id


class Client:
    """A WebSocket client that keeps every message it receives."""

    def __init__(self, node, user, name=None):
        self.node, self.user, self.name = node, user, name
        self.ws, self.messages = None, []

    async def connect(self, compression="deflate"):
        token = self.node.sql(f"SELECT presence.issue_token('{self.user}')")
        self.ws = await websockets.connect(f"ws://127.0.0.1:{self.node.wsport}/ws", compression=compression,
                                           extra_headers={"Authorization": "Bearer " + token})
        self.welcome = json.loads(await self.ws.recv())
        return self

    async def request(self, message, reply_type=None, timeout=10):
        message = dict(message, ref=uuid.uuid4().hex)
        await self.ws.send(json.dumps(message))
        return await self.next(lambda m: m.get("ref") == message["ref"], timeout)

    async def next(self, predicate, timeout=10):
        for m in self.messages:
            if predicate(m):
                self.messages.remove(m)
                return m
        deadline = time.time() + timeout
        while True:
            remaining = deadline - time.time()
            if remaining <= 0:
                raise AssertionError(f"no matching message; got {self.messages}")
            m = json.loads(await asyncio.wait_for(self.ws.recv(), remaining))
            if predicate(m):
                return m
            self.messages.append(m)

    async def event(self, kind, user, timeout=10):
        """The next presence event of kind about user."""
        def match(m):
            return m.get("type") == "presence" and any(
                e["kind"] == kind and e["user"]["userId"] == user for e in m["events"])
        return await self.next(match, timeout)

    async def quiet_about(self, user, seconds):
        """No presence event about user arrives for seconds."""
        try:
            m = await self.next(lambda m: m.get("type") == "presence" and any(
                e["user"]["userId"] == user and e["kind"] in ("join", "leave", "timeout") for e in m["events"]),
                seconds)
        except (AssertionError, asyncio.TimeoutError):
            return
        raise AssertionError(f"unexpected event {m}")

    async def join(self, session_id):
        reply = await self.request({"type": "session_join", "sessionId": session_id})
        assert reply["type"] == "session_joined", reply
        return reply

    async def close(self):
        await self.ws.close()


async def joined_client(node, user, session_id):
    """A client of user on node, joined to the session."""
    client = await Client(node, user).connect()
    await client.join(session_id)
    return client


async def connect_to_worker_of(other, node, user, same=True):
    """A client of user on the same ws worker as other, or on another one (SO_REUSEPORT picks the worker)."""
    worker = other.welcome["connectionId"].rsplit(":", 1)[0]
    for _ in range(60):
        client = await Client(node, user).connect()
        if (client.welcome["connectionId"].rsplit(":", 1)[0] == worker) == same:
            return client
        await client.close()
    pytest.fail(f"never reached {'the same' if same else 'another'} worker in 60 connections")


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 90))


def test_cross_node_join_cursor_leave(world):
    primary, standby, _ = world
    session_id = new_session(primary, standby, BOB)

    async def scenario():
        alice = await joined_client(primary, ALICE, session_id)
        bob = await Client(standby, BOB).connect()
        joined = await bob.join(session_id)
        assert {u["userId"] for u in joined["users"]} == {ALICE, BOB}
        await alice.event("join", BOB)
        await bob.ws.send(json.dumps({"type": "cursor_update", "sessionId": session_id,
                                      "cursor": {"eventId": "e9", "position": 12}}))
        moved = await alice.event("cursor", BOB)
        cursor = [e for e in moved["events"] if e["kind"] == "cursor"][0]["user"]["cursor"]
        assert cursor == {"eventId": "e9", "position": 12}
        for position in range(3):
            await alice.ws.send(json.dumps({"type": "cursor_update", "sessionId": session_id,
                                            "cursor": {"eventId": "e1", "position": position}}))
            moved = await bob.event("cursor", ALICE)
            cursor = [e for e in moved["events"] if e["kind"] == "cursor"][-1]["user"]["cursor"]
            assert cursor == {"eventId": "e1", "position": position}
        await bob.close()
        await alice.event("leave", BOB)
        await alice.close()
    run(scenario())


def test_multi_tab_across_nodes(world):
    primary, standby, _ = world
    session_id = new_session(primary, standby, BOB, CAROL)

    async def scenario():
        carol = await joined_client(primary, CAROL, session_id)
        tab_a = await Client(primary, BOB).connect()
        await tab_a.join(session_id)
        await carol.event("join", BOB)
        tab_b = await joined_client(standby, BOB, session_id)
        await tab_a.close()
        await carol.quiet_about(BOB, 1.5)
        await tab_b.close()
        await carol.event("leave", BOB)
        await carol.close()
    run(scenario())


def test_two_workers_on_one_node_see_each_other(world):
    primary, standby, _ = world
    session_id = new_session(primary, standby, BOB)

    async def scenario():
        alice = await joined_client(primary, ALICE, session_id)
        bob = await connect_to_worker_of(alice, primary, BOB, same=False)
        joined = await bob.join(session_id)
        assert ALICE in {u["userId"] for u in joined["users"]}
        await alice.event("join", BOB)
        await bob.close()
        await alice.event("leave", BOB)
        await alice.close()
    run(scenario())


def test_activity_through_standby_lands_on_primary(world):
    primary, standby, _ = world
    session_id = new_session(primary, standby, BOB)

    async def scenario():
        bob = await joined_client(standby, BOB, session_id)
        for i in range(5):
            ack = await bob.request({"type": "activity", "sessionId": session_id,
                                     "activityType": "note", "details": {"i": i}})
            assert ack["type"] == "ack", ack
            # acked means committed on the primary
            assert primary.sql(f"SELECT count(*) FROM presence.activity_log WHERE id = '{ack['activityId']}'") == "1"
        await bob.close()
    run(scenario())
    assert primary.sql(f"SELECT presence.verify_audit_chain('{session_id}')").startswith("(t,")


def test_presence_on_a_standby_is_announced_on_the_primary(world):
    """A backend LISTENing on the primary hears the users of a standby (their
    rows are written there), once per change, and none of their cursors."""
    primary, standby, _ = world
    session_id = new_session(primary, standby, BOB)
    conn = psycopg.connect(host=primary.dir, port=primary.pgport, user="postgres", dbname="presence", autocommit=True)
    heard = []
    conn.add_notify_handler(lambda n: heard.append(json.loads(n.payload)["activityId"]))
    channel = conn.execute("SELECT presence.channel(%s)", (session_id,)).fetchone()[0]
    conn.execute(psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(channel)))

    def wait_for(count):
        deadline = time.time() + 10
        while len(heard) < count and time.time() < deadline:
            conn.execute("SELECT 1")
            time.sleep(0.05)
        return [conn.execute("SELECT event, user_id::text FROM presence.presence_change(%s)", (activity_id,)).fetchone()
                for activity_id in heard]

    async def scenario():
        bob = await joined_client(standby, BOB, session_id)
        assert wait_for(1) == [("join", BOB)]
        await bob.ws.send(json.dumps({"type": "cursor_update", "sessionId": session_id,
                                      "cursor": {"eventId": "e1", "position": 1}}))
        await bob.close()
        assert wait_for(2) == [("join", BOB), ("leave", BOB)]
    try:
        run(scenario())
        time.sleep(0.5)
        conn.execute("SELECT 1")
        assert len(heard) == 2, heard
    finally:
        conn.close()


def test_primary_restart_loses_no_standby_activity(world):
    primary, standby, _ = world
    session_id = new_session(primary, standby, BOB)

    async def scenario():
        bob = await joined_client(standby, BOB, session_id)
        primary.ctl("stop", "fast")
        for i in range(20):
            await bob.ws.send(json.dumps({"type": "activity", "sessionId": session_id,
                                          "activityType": "note", "details": {"i": i}}))
        await asyncio.sleep(1.0)
        subprocess.check_call([CLUSTER, "start", primary.dir, str(primary.pgport), str(primary.wsport)],
                              stdout=subprocess.DEVNULL)
        deadline = time.time() + 60
        while time.time() < deadline:
            n = primary.sql(f"""SELECT count(*) FROM presence.activity_log a
                                  JOIN presence.collaboration_sessions s ON s.id = a.session_id
                                 WHERE s.session_id = '{session_id}' AND a.activity_type = 'note'""")
            if n == "20":
                break
            await asyncio.sleep(0.5)
        assert n == "20", f"{n} of 20 rows reached the primary\n{standby.log()[-3000:]}"
        await bob.close()
    run(scenario())
    primary.wait_workers()


def test_node_death_times_users_out(world):
    primary, standby, redis = world
    session_id = new_session(primary, standby, BOB)

    async def scenario():
        alice = await joined_client(primary, ALICE, session_id)
        bob = await Client(standby, BOB).connect()
        await bob.join(session_id)
        await alice.event("join", BOB)
        started = time.time()
        standby.ctl("stop", "immediate")
        await alice.event("timeout", BOB, timeout=TTL_S * 4)
        assert time.time() - started < TTL_S * 3
        # one timeout only, however many nodes swept
        await alice.quiet_about(BOB, 2)
        await alice.close()
    run(scenario())
    assert redis.cli("ZSCORE", f"presence:session:{session_id}", BOB) == ""
    timeouts = primary.sql(f"""SELECT count(*) FROM presence.activity_log a
                                 JOIN presence.collaboration_sessions s ON s.id = a.session_id
                                WHERE s.session_id = '{session_id}' AND a.user_id = '{BOB}'
                                  AND a.activity_type = 'user_timeout'""")
    assert timeouts == "1"
    standby.ctl("start", str(standby.pgport), str(standby.wsport))
    standby.wait_workers()


def test_keys_and_ttls_follow_the_layout(world):
    primary, standby, redis = world
    session_id = new_session(primary, standby, BOB)

    async def scenario():
        alice = await joined_client(primary, ALICE, session_id)
        await alice.ws.send(json.dumps({"type": "cursor_update", "sessionId": session_id,
                                        "cursor": {"eventId": "e1", "position": 3}}))
        await asyncio.sleep(0.5)
        data = json.loads(redis.cli("GET", f"presence:{session_id}:{ALICE}"))
        assert data["userId"] == ALICE and data["status"] == "online"
        assert data["cursor"] == {"eventId": "e1", "position": 3}
        assert 0 < int(redis.cli("PTTL", f"presence:{session_id}:{ALICE}")) <= TTL_S * 1000
        assert redis.cli("ZRANGE", f"presence:session:{session_id}", "0", "-1") == ALICE
        conns = redis.cli("HKEYS", f"presence:conns:{session_id}:{ALICE}")
        assert conns == alice.welcome["connectionId"]
        assert 0 < int(redis.cli("PTTL", f"presence:conns:{session_id}:{ALICE}")) <= TTL_S * 1000
        rows = primary.sql(f"SELECT user_id, status FROM presence.online_users('{session_id}')")
        assert rows == f"{ALICE}|online"
        await alice.close()
        await asyncio.sleep(0.5)
        assert redis.cli("EXISTS", f"presence:{session_id}:{ALICE}") == "0"
    run(scenario())


def test_redis_outage_local_service_and_convergence(world):
    primary, standby, redis = world
    session_id = new_session(primary, standby, BOB, CAROL)

    async def scenario():
        alice = await joined_client(primary, ALICE, session_id)
        bob = await Client(standby, BOB).connect()
        await bob.join(session_id)
        await alice.event("join", BOB)

        redis.stop()
        await asyncio.sleep(1.0)
        status, body = primary.http("/healthz")
        assert status == 503 and "redis" in body
        assert primary.sql("SELECT redis_connected FROM presence.stats()") == "f"
        # local presence goes on: carol joins alice's worker (workers of a
        # node share presence through Redis too), alice sees her and her cursor
        carol = await connect_to_worker_of(alice, primary, CAROL)
        await carol.join(session_id)
        await alice.event("join", CAROL)
        await carol.ws.send(json.dumps({"type": "cursor_update", "sessionId": session_id,
                                        "cursor": {"eventId": "e2", "position": 1}}))
        await alice.event("cursor", CAROL)
        ack = await alice.request({"type": "activity", "sessionId": session_id, "activityType": "note"})
        assert ack["type"] == "ack"

        redis.start()
        returned = time.time()
        # bob, on the other node, learns of carol once the workers are back
        await bob.event("join", CAROL, timeout=40)
        converged = time.time() - returned
        # every worker of the primary reconnects on its own
        primary.wait_healthy()
        for client in (alice, bob, carol):
            await client.close()
        return converged
    try:
        converged = run(scenario())
    finally:
        if redis.proc is None:
            redis.start()
    print(f"cross-node view converged {converged:.2f} s after Redis returned")


@pytest.mark.parametrize("outage_s", [2, 12])
def test_delivery_resumes_soon_after_redis_returns(world, outage_s):
    """However long Redis was away, cursors cross workers and nodes again
    within 2 s of it answering (the link's retry wait is capped near 1 s)."""
    primary, standby, redis = world
    session_id = new_session(primary, standby, BOB, CAROL)

    def cursor_sent_after_return(m):
        return m.get("type") == "presence" and any(
            e["kind"] == "cursor" and e["user"]["userId"] == ALICE and e["user"]["cursor"]["position"] > 0
            for e in m["events"])

    async def move_cursor(alice):
        """Alice moves every 50 ms, from position 1: every position was sent after Redis answered."""
        position = 1
        while True:
            await alice.ws.send(json.dumps({"type": "cursor_update", "sessionId": session_id,
                                            "cursor": {"eventId": "e1", "position": position}}))
            position += 1
            await asyncio.sleep(0.05)

    async def scenario():
        alice = await Client(primary, ALICE).connect()
        await alice.join(session_id)
        other_worker = await connect_to_worker_of(alice, primary, BOB, same=False)
        await other_worker.join(session_id)
        other_node = await joined_client(standby, CAROL, session_id)
        await alice.event("join", BOB)
        await alice.event("join", CAROL)
        for node in (primary, standby):
            node.wait_healthy()     # no worker is still back from an earlier outage
        since = {node: len(node.log()) for node in (primary, standby)}

        redis.stop()
        await asyncio.sleep(outage_s)
        answered = redis.start()

        async def delay_until_moved(client):
            await client.next(cursor_sent_after_return, timeout=40)
            return time.time() - answered
        mover = asyncio.create_task(move_cursor(alice))
        try:
            delays = dict(zip(("other worker", "other node"),
                              await asyncio.gather(delay_until_moved(other_worker), delay_until_moved(other_node))))
        finally:
            mover.cancel()
        # 2 nodes x 2 workers x 2 connections each log that they are back
        deadline = time.time() + 40
        while len(back := [t for node in (primary, standby) for t in node.log_times("is back", since[node])]) < 8:
            assert time.time() < deadline, f"{len(back)} of 8 Redis connections came back"
            await asyncio.sleep(0.1)
        for client in (alice, other_worker, other_node):
            await client.close()
        return delays, max(back) - answered
    try:
        delays, reconnected = run(scenario())
    finally:
        if redis.proc is None:
            redis.start()
    print(f"after a {outage_s} s outage: every Redis connection back {reconnected:.2f} s after Redis answered; "
          + ", ".join(f"cursor on the {name} {delay:.2f} s" for name, delay in delays.items()))
    assert max(delays.values()) < 2.0, delays


def test_bad_redis_settings_degrade_without_crashing(world):
    primary, _, redis = world
    for name, url in (("wrong password", f"redis://:wrong@127.0.0.1:{redis.port}"),
                      ("unreachable host", "redis://127.0.0.1:1")):
        base = tempfile.mkdtemp(prefix="presence-badredis-")
        os.chmod(base, 0o755)
        node = Node(os.path.join(base, "n"), free_port(), free_port())
        try:
            if name == "wrong password":
                redis.cli("CONFIG", "SET", "requirepass", "right")
                redis.password = "right"
            subprocess.check_call([CLUSTER, "start", node.dir, str(node.pgport), str(node.wsport),
                                   f"presence.redis_url={url}", "presence.workers=1"], stdout=subprocess.DEVNULL)
            node.wait_workers(1)
            time.sleep(2)
            status, body = node.http("/healthz")
            assert status == 503 and "redis" in body, (name, status, body)
            pid = node.sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'presence ws worker'")
            log = node.log()
            assert "Redis" in log and ("refused" in log or "failed" in log or "timed out" in log), log[-2000:]
            assert "wrong" not in log.split("Redis", 1)[1][:2000], "the password must not be logged"
            time.sleep(1)
            assert node.sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'presence ws worker'") == pid
        finally:
            if name == "wrong password":
                redis.cli("CONFIG", "SET", "requirepass", "")
                redis.password = None
            subprocess.call([CLUSTER, "destroy", node.dir])
            shutil.rmtree(base, ignore_errors=True)


# -- writes under contention (issue 8) -------------------------------------------------

def activity_types(primary, session_id, types):
    return primary.sql("SELECT a.activity_type FROM presence.activity_log a"
                       " JOIN presence.collaboration_sessions s ON s.id = a.session_id"
                       f" WHERE s.session_id = '{session_id}' AND a.activity_type IN ({types})"
                       " ORDER BY a.chain_seq").split()


def test_two_workers_write_the_same_sessions_without_deadlock(world):
    """Both workers' batches span the same sessions, sent in opposite orders."""
    primary, standby, _ = world
    sessions = [new_session(primary, standby, BOB) for _ in range(3)]
    rounds = 15

    async def scenario():
        first = await Client(primary, BOB).connect()
        clients = [first, await connect_to_worker_of(first, primary, BOB, same=False)]
        clients += [await connect_to_worker_of(first, primary, BOB, same=same) for same in (True, False)]
        for client in clients:
            for sid in sessions:
                await client.join(sid)

        async def burst(client, order):
            for round_ in range(rounds):
                for sid in order:
                    await client.ws.send(json.dumps({"type": "activity", "sessionId": sid,
                                                     "activityType": "burst", "details": {"r": round_}}))
            reply = await client.request({"type": "heartbeat"})
            assert reply["type"] == "heartbeat_ack", reply
        await asyncio.gather(*(burst(client, sessions if i % 2 else sessions[::-1])
                               for i, client in enumerate(clients)))
        for client in clients:
            await client.close()
        return len(clients)
    count = run(scenario())
    deadline = time.time() + 20
    for sid in sessions:
        while len(activity_types(primary, sid, "'burst'")) < count * rounds:
            assert time.time() < deadline, "burst rows of %s missing" % sid
            time.sleep(0.2)
        assert primary.sql(f"SELECT ok FROM presence.verify_audit_chain('{sid}')") == "t"
    assert "deadlock" not in primary.log()


def test_a_session_held_on_the_primary_does_not_stall_a_standby(world):
    """The standby's link writes with the workers' lock timeout: a session an
    application holds on the primary is put off, the others' rows go on."""
    primary, standby, _ = world
    held, free = new_session(primary, standby, BOB), new_session(primary, standby, BOB)

    async def scenario():
        bob = await joined_client(standby, BOB, held)
        await bob.join(free)
        app = psycopg.connect(host="127.0.0.1", port=primary.pgport, user="postgres", dbname="presence")
        try:
            app.execute("SELECT presence.log_activity(%s, NULL, 'app.pending')", (held,))
            await bob.ws.send(json.dumps({"type": "activity", "sessionId": held, "activityType": "while.held",
                                          "ref": "held"}))
            await asyncio.sleep(0.5)
            started = time.monotonic()
            ack = await bob.request({"type": "activity", "sessionId": free, "activityType": "other"}, timeout=5)
            assert ack["type"] == "ack", ack
            assert time.monotonic() - started < 2.0
        finally:
            app.commit()
            app.close()
        ack = await bob.next(lambda m: m.get("ref") == "held")
        assert ack["type"] == "ack", ack
        await bob.close()
    run(scenario())
    assert activity_types(primary, held, "'app.pending', 'while.held'") == ["app.pending", "while.held"]


def test_a_link_role_without_grants_keeps_the_rows(world):
    """A permission error from the primary says nothing about the rows (the
    link's role lacks grants): they wait, and are written once it is fixed."""
    primary, standby, _ = world
    session_id = new_session(primary, standby, BOB)
    primary.sql("DO $$ BEGIN CREATE ROLE presence_no_grants LOGIN; EXCEPTION WHEN duplicate_object THEN END $$")

    def relink(conninfo):
        standby.sql("ALTER SYSTEM SET presence.primary_conninfo = '%s'" % conninfo if conninfo
                    else "ALTER SYSTEM RESET presence.primary_conninfo")
        standby.sql("SELECT pg_reload_conf()")
        time.sleep(1)
        # the link takes the new conninfo when it reconnects
        primary.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = 'presence standby writes'")

    relink("host=127.0.0.1 port=%d user=presence_no_grants dbname=presence" % primary.pgport)

    async def scenario():
        bob = await joined_client(standby, BOB, session_id)
        try:
            await bob.ws.send(json.dumps({"type": "activity", "sessionId": session_id,
                                          "activityType": "needs.grant", "ref": "grant"}))
            await asyncio.sleep(2)
            assert not [m for m in bob.messages if m.get("ref") == "grant"], bob.messages
        finally:
            relink(None)
        ack = await bob.next(lambda m: m.get("ref") == "grant", timeout=15)
        assert ack["type"] == "ack", ack
        await bob.close()
    run(scenario())
    assert activity_types(primary, session_id, "'needs.grant'") == ["needs.grant"]


# -- what Redis is trusted with (issue 9) ----------------------------------------------
#
# Anyone who can write to Redis can publish on the channels the workers
# listen to.  These tests publish exactly what a worker would, from no
# worker at all, and check that it changes at most what is shown.

def redis_pipe(redis, *commands):
    """Sends commands to Redis in one pipe, as any client of that Redis could."""
    def encode(argv):
        parts = [b"*%d\r\n" % len(argv)]
        for arg in argv:
            arg = arg.encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
        return b"".join(parts)
    subprocess.run(["redis-cli", "-p", str(redis.port), "--pipe"], input=b"".join(map(encode, commands)),
                   check=True, stdout=subprocess.DEVNULL)


def forged_command(cmd, session_id, user_id=None, payload=None):
    """A SQL command as another node's worker 0 passes it on (ws_worker.c)."""
    message = {"o": "forged-node", "cmd": cmd, "sessionId": session_id}
    if user_id:
        message["userId"] = user_id
    if payload is not None:
        message["payload"] = payload
    return ("PUBLISH", "presence:commands", json.dumps(message))


def forged_presence(kind, session_id, user_id, connection, role="viewer", last_seen=None):
    """A presence change as a worker publishes it (live_state.c, change_message)."""
    data = {"userId": user_id, "username": "forged", "role": role, "status": "online",
            "lastSeen": last_seen or int(time.time() * 1000)}
    message = {"o": "forged:0", "k": kind, "c": connection, "uid": user_id, "u": data}
    return ("PUBLISH", f"presence:updates:{session_id}", json.dumps(message))


def add_participant(primary, standby, session_id, user, role):
    """user gets role in the session on the primary; returns once the standby has it."""
    primary.sql(f"SELECT presence.add_participant('{session_id}', '{user}', '{role}')")
    deadline = time.time() + 10
    while standby.sql(f"""SELECT p.role FROM presence.session_participants p
                            JOIN presence.collaboration_sessions s ON s.id = p.session_id
                           WHERE s.session_id = '{session_id}' AND p.user_id = '{user}'
                             AND p.left_at IS NULL""") != role:
        assert time.time() < deadline, "participant did not replicate"
        time.sleep(0.1)


async def log_note(client, session_id):
    """The reply to a non-comment activity, which needs the operator role."""
    return await client.request({"type": "activity", "sessionId": session_id, "activityType": "note"})


@pytest.mark.parametrize("message", ["command", "presence"])
def test_redis_cannot_grant_a_role(world, message):
    """A viewer stays a viewer, whatever Redis says: a forged role command, or
    a presence message (as a lagging standby would publish) with another role."""
    primary, standby, redis = world
    session_id = new_session(primary, standby)
    add_participant(primary, standby, session_id, BOB, "viewer")

    async def scenario():
        on_primary = await joined_client(primary, BOB, session_id)
        on_standby = await joined_client(standby, BOB, session_id)
        redis_pipe(redis, forged_command("participant_changed", session_id, BOB, "operator") if message == "command"
                   else forged_presence("update", session_id, BOB, "forged:0:1", role="operator"))
        await asyncio.sleep(1.0)
        for client in (on_primary, on_standby):
            reply = await log_note(client, session_id)
            assert reply["type"] == "error" and reply["code"] == "forbidden", reply
            await client.close()
    run(scenario())
    assert activity_types(primary, session_id, "'note'") == []


def test_redis_cannot_end_a_session_or_remove_a_participant(world):
    primary, standby, redis = world
    session_id = new_session(primary, standby, BOB)

    async def scenario():
        alice = await joined_client(primary, ALICE, session_id)
        bob = await joined_client(standby, BOB, session_id)
        await alice.event("join", BOB)
        redis_pipe(redis, forged_command("participant_removed", session_id, BOB),
                   forged_command("participant_removed", session_id, ALICE),
                   forged_command("session_ended", session_id, payload="failed"))
        for client in (alice, bob):
            with pytest.raises((AssertionError, asyncio.TimeoutError)):
                await client.next(lambda m: m.get("type") in ("session_ended", "session_removed"), 1.5)
            ack = await log_note(client, session_id)
            assert ack["type"] == "ack", ack
        await alice.quiet_about(BOB, 0.5)
        for client in (alice, bob):
            await client.close()
    run(scenario())
    assert primary.sql(f"SELECT status FROM presence.collaboration_sessions WHERE session_id = '{session_id}'") \
        == "active"


def test_a_flood_of_users_from_redis_does_not_fill_a_session(world):
    """200 users no database knows, published and written to Redis as if
    present, exceed presence.max_participants (100); real participants still
    join, on the worker that heard them (events) and on those that read them
    (snapshots)."""
    primary, standby, redis = world
    dave = str(uuid.uuid4())
    primary.sql(f"INSERT INTO presence.users (id, username) VALUES ('{dave}', 'dave-{dave[:8]}')")
    session_id = new_session(primary, standby, BOB, CAROL)
    add_participant(primary, standby, session_id, dave, "viewer")
    fakes = [str(uuid.uuid4()) for _ in range(200)]
    # fresh for a minute, so no sweep takes them away during the test
    seen = str(int(time.time() * 1000) + 60000)

    def flood():
        commands = []
        for i, fake in enumerate(fakes):
            connection = f"forged:0:{i}"
            data = {"userId": fake, "username": f"fake{i}", "role": "operator", "status": "online",
                    "lastSeen": int(seen)}
            commands += [("SET", f"presence:{session_id}:{fake}", json.dumps(data), "PX", "60000"),
                         ("ZADD", f"presence:session:{session_id}", seen, fake),
                         ("HSET", f"presence:conns:{session_id}:{fake}", connection, seen),
                         ("PEXPIRE", f"presence:conns:{session_id}:{fake}", "60000"),
                         forged_presence("join", session_id, fake, connection, role="operator",
                                         last_seen=int(seen))]
        redis_pipe(redis, *commands)

    def clean_up():
        commands = [forged_presence("leave", session_id, fake, "*") for fake in fakes]
        commands += [("DEL", f"presence:{session_id}:{fake}", f"presence:conns:{session_id}:{fake}")
                     for fake in fakes]
        commands.append(("ZREM", f"presence:session:{session_id}", *fakes))
        redis_pipe(redis, *commands)

    async def scenario():
        alice = await joined_client(primary, ALICE, session_id)
        flood()
        await alice.event("join", fakes[-1])
        same_worker = await connect_to_worker_of(alice, primary, CAROL, same=True)
        other_worker = await connect_to_worker_of(alice, primary, BOB, same=False)
        other_node = await Client(standby, dave).connect()
        for client in (same_worker, other_worker, other_node):
            await client.join(session_id)
        for client in (alice, same_worker, other_worker, other_node):
            await client.close()
    try:
        run(scenario())
    finally:
        clean_up()


def test_sql_changes_reach_a_standby_once_its_tables_have_them(world):
    """Role changes, removals and ends made on the primary reach the standby's
    clients through Redis, but take effect there only once the standby has
    replayed them: paused replay holds them back, resumed replay lets them in."""
    primary, standby, _ = world
    session_id = new_session(primary, standby)
    add_participant(primary, standby, session_id, BOB, "viewer")
    add_participant(primary, standby, session_id, CAROL, "operator")

    async def scenario():
        alice = await joined_client(primary, ALICE, session_id)
        bob = await joined_client(standby, BOB, session_id)
        carol = await joined_client(standby, CAROL, session_id)
        reply = await log_note(bob, session_id)
        assert reply["type"] == "error" and reply["code"] == "forbidden", reply
        standby.sql("SELECT pg_wal_replay_pause()")
        try:
            primary.sql(f"SELECT presence.add_participant('{session_id}', '{BOB}', 'operator')")
            primary.sql(f"SELECT presence.remove_participant('{session_id}', '{CAROL}')")
            await asyncio.sleep(1.0)
            reply = await log_note(bob, session_id)
            assert reply["type"] == "error" and reply["code"] == "forbidden", reply
            assert not [m for m in carol.messages if m.get("type") == "session_removed"], carol.messages
        finally:
            standby.sql("SELECT pg_wal_replay_resume()")
        removed = await carol.next(lambda m: m.get("type") == "session_removed", timeout=15)
        assert removed["sessionId"] == session_id
        deadline = time.time() + 15
        while (reply := await log_note(bob, session_id))["type"] != "ack":
            assert time.time() < deadline, reply
            await asyncio.sleep(0.2)
        primary.sql(f"SELECT presence.end_session('{session_id}', 'failed')")
        for client in (alice, bob):
            ended = await client.next(lambda m: m.get("type") == "session_ended", timeout=15)
            assert ended["status"] == "failed", ended
        for client in (alice, bob, carol):
            await client.close()
    run(scenario())


def wait_replayed(standby, query, expected="1"):
    deadline = time.time() + 15
    while standby.sql(query) != expected:
        assert time.time() < deadline, f"{query} did not replay"
        time.sleep(0.1)


def test_permission_function_changes_reach_a_standby(world):
    """presence.permissions_changed() on the primary reaches a standby's
    clients admitted by presence.permission_function (who have no
    participant row): a named user who may still view stays and is asked
    anew, the whole session's cached answers go, a user who lost view
    leaves."""
    primary, standby, _ = world
    session_id = new_session(primary, standby)
    primary.sql("""DROP SCHEMA IF EXISTS perm_app CASCADE; DROP ROLE IF EXISTS perm_app;
        CREATE ROLE perm_app NOLOGIN; CREATE SCHEMA perm_app AUTHORIZATION perm_app;
        SET ROLE perm_app;
        CREATE TABLE perm_app.grants (session_id text, user_id uuid, action text);
        CREATE FUNCTION perm_app.may(s text, u uuid, a text) RETURNS boolean LANGUAGE sql STABLE AS
            $$ SELECT EXISTS (SELECT 1 FROM perm_app.grants g WHERE g.session_id = s AND g.user_id = u
                                                                AND g.action = a) $$;
        RESET ROLE;""")
    primary.sql(f"INSERT INTO perm_app.grants VALUES ('{session_id}', '{BOB}', 'view'), "
                f"('{session_id}', '{CAROL}', 'view')")
    wait_replayed(standby, "SELECT count(*) FROM perm_app.grants WHERE action = 'view'", "2")
    for node in (primary, standby):
        node.sql("ALTER SYSTEM SET presence.permission_function = 'perm_app.may'")
        node.sql("ALTER SYSTEM SET presence.permission_cache_ttl = '1h'")
        node.sql("SELECT pg_reload_conf()")
    time.sleep(1)

    async def scenario():
        bob = await joined_client(standby, BOB, session_id)
        carol = await joined_client(standby, CAROL, session_id)
        reply = await log_note(bob, session_id)
        assert reply["type"] == "error" and reply["code"] == "forbidden", reply
        # bob named, still viewing: stays, and is asked anew
        primary.sql(f"INSERT INTO perm_app.grants VALUES ('{session_id}', '{BOB}', 'operate');"
                    f"SELECT presence.permissions_changed('{session_id}', '{BOB}')")
        deadline = time.time() + 15
        while (reply := await log_note(bob, session_id))["type"] != "ack":
            assert reply["type"] == "error" and reply["code"] == "forbidden", reply
            assert time.time() < deadline, reply
            await asyncio.sleep(0.2)
        assert not [m for m in bob.messages if m.get("type") == "session_removed"], bob.messages
        # the whole session, nobody named
        primary.sql(f"INSERT INTO perm_app.grants VALUES ('{session_id}', '{CAROL}', 'operate');"
                    f"SELECT presence.permissions_changed('{session_id}')")
        deadline = time.time() + 15
        while (reply := await log_note(carol, session_id))["type"] != "ack":
            assert time.time() < deadline, reply
            await asyncio.sleep(0.2)
        # carol loses view
        primary.sql(f"DELETE FROM perm_app.grants WHERE user_id = '{CAROL}';"
                    f"SELECT presence.permissions_changed('{session_id}', '{CAROL}')")
        removed = await carol.next(lambda m: m.get("type") == "session_removed", timeout=15)
        assert removed["sessionId"] == session_id
        for client in (bob, carol):
            await client.close()
    try:
        run(scenario())
    finally:
        for node in (primary, standby):
            node.sql("ALTER SYSTEM RESET presence.permission_function")
            node.sql("ALTER SYSTEM RESET presence.permission_cache_ttl")
            node.sql("SELECT pg_reload_conf()")
        primary.sql("DROP SCHEMA perm_app CASCADE; DROP ROLE perm_app")
