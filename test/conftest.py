"""Integration tests of the presence ws worker (issue 3).

Shared machinery: throwaway clusters (test/cluster.sh), SQL helpers,
tokens, and an asyncio WebSocket client with an inbox, so a test can wait
for one message while keeping the others for later.

Test functions may be ``async def``: pytest_pyfunc_call below runs them
with asyncio.run under a time bound, so every test is bounded even when
the server stops answering.  Waits scale with PRESENCE_TEST_TIME_SCALE
(e.g. 10 under valgrind); so do the short timing GUCs the timing tests
set.  PRESENCE_TEST_KEEP=1 keeps the cluster directories for debugging.
"""

import asyncio
import base64
import contextlib
import hashlib
import hmac
import http.client
import inspect
import json
import os
import random
import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid

import jwt
import psycopg
import pytest
import websockets

HERE = os.path.dirname(os.path.abspath(__file__))
CLUSTER_SH = os.path.join(HERE, "cluster.sh")
SECRET = "test-secret-0123456789abcdef0123456789"
SCALE = float(os.environ.get("PRESENCE_TEST_TIME_SCALE", "1"))
KEEP = os.environ.get("PRESENCE_TEST_KEEP") == "1"
# Sanitizer runs (test/README.md): a library to preload into the servers,
# and the log_path prefix of their reports.
PRELOAD = os.environ.get("PRESENCE_TEST_PRELOAD", "")
SANITIZER_LOG = os.environ.get("PRESENCE_TEST_SANITIZER_LOG", "")
# Per-test bound; generous, the tests themselves take seconds.
TEST_TIMEOUT = 120 * SCALE
# How long to wait for something that should happen.
WAIT = 10 * SCALE
# How long to watch for something that must not happen.
QUIET = 0.6 * SCALE

# The main cluster: small limits so the tests can reach them, timing
# GUCs left long (the timing tests shorten them with a reload) so a slow
# machine or valgrind does not turn ordinary tests into timeout tests.
BASE_GUCS = {
    "presence.batch_interval": "100ms",
    "presence.batch_max": "3",
    "presence.rate_limit": "20",
    "presence.max_participants": "5",
    "presence.max_message_bytes": "4096",
    "presence.log_flush_interval": "200ms",
    "presence.session_timeout": "1h",
    "presence.heartbeat_interval": "30s",
    "presence.heartbeat_timeout": "30s",
    "presence.away_threshold": "2min",
    "presence.auth_timeout": "10s",
}

# What the timing tests switch to (scaled for slow runs).
def _ms(value):
    return "%dms" % int(value * SCALE)


SHORT_TIMING_GUCS = {
    "presence.heartbeat_interval": _ms(1000),
    "presence.heartbeat_timeout": _ms(1000),
    "presence.away_threshold": _ms(2000),
    "presence.auth_timeout": _ms(1000),
}

# Server log lines that mean the worker crashed or failed.
CRASH_SIGNS = re.compile(r"terminated by signal|PANIC|TRAP:|"
                         r"presence ws worker.*exited with exit code [2-9]|"
                         r"presence ws worker (ERROR|FATAL)|AddressSanitizer|LeakSanitizer|"
                         r"runtime error:")


def run_async(coro, timeout=TEST_TIMEOUT):
    """Runs a coroutine to completion within timeout seconds."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    """Runs async test functions, each bounded by TEST_TIMEOUT."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in names}
    run_async(pyfuncitem.obj(**kwargs))
    return True


def port_is_free(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# PRESENCE_TEST_PORTS=LOW-HIGH keeps the clusters in a range of their own
# (when several people test on one machine).
PORT_RANGE = tuple(int(p) for p in os.environ.get("PRESENCE_TEST_PORTS", "20000-32000").split("-"))


def free_ports(count):
    """count distinct free TCP ports below the ephemeral range."""
    ports = set()
    while len(ports) < count:
        port = random.randint(*PORT_RANGE)
        if port not in ports and port_is_free(port):
            ports.add(port)
    return sorted(ports)


def wait_until(predicate, timeout=WAIT, interval=0.05, what="condition"):
    """Polls predicate until it returns a true value; returns that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for %s" % what)
        time.sleep(interval)


class Cluster:
    """A throwaway PostgreSQL cluster with presence preloaded."""

    def __init__(self, name="presence-test-"):
        self.dir = tempfile.mkdtemp(prefix=name)
        self.pgport, self.wsport = free_ports(2)
        self.started = False

    # -- cluster.sh -------------------------------------------------------
    def sh(self, *args, check=True, timeout=120 * SCALE):
        env = dict(os.environ)
        if PRELOAD:
            env["LD_PRELOAD"] = PRELOAD
        return subprocess.run([CLUSTER_SH, args[0], self.dir, *args[1:]], check=check, env=env,
                              capture_output=True, text=True, timeout=timeout)

    def start(self, gucs=None, wait_worker=True):
        settings = ["%s=%s" % kv for kv in (gucs or {}).items()]
        self.sh("start", str(self.pgport), str(self.wsport), *settings)
        self.started = True
        if wait_worker:
            self.wait_worker()

    def set_gucs(self, gucs):
        self.sh("set", *["%s=%s" % kv for kv in gucs.items()])

    def reload(self, gucs=None):
        """Applies GUCs with a reload and waits until backends see them."""
        if gucs:
            self.set_gucs(gucs)
        self.sh("reload")
        for name, value in (gucs or {}).items():
            wait_until(lambda: self._setting_matches(name, value), what="%s = %s" % (name, value))
        # the worker applies SIGHUP on its next pass, woken by the signal
        time.sleep(0.2 * SCALE)

    def _setting_matches(self, name, value):
        """Whether a new backend sees the GUC at value (times compared as intervals)."""
        if re.fullmatch(r"\d+\s*(ms|s|min|h)", value):
            return self.sql1("SELECT current_setting(%s)::interval = %s::interval", (name, value))
        return self.sql1("SELECT current_setting(%s)", (name,)) == value

    def stop(self, mode="fast"):
        self.sh("stop", mode)

    def destroy(self):
        if KEEP:
            print("keeping cluster", self.dir)
            return
        self.sh("destroy", check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- SQL --------------------------------------------------------------
    def connect(self, dbname="presence"):
        # statement_timeout: a test blocked in SQL fails instead of hanging
        return psycopg.connect(host=self.dir, port=self.pgport, user="postgres", dbname=dbname,
                               autocommit=True, connect_timeout=int(10 * SCALE),
                               options="-c statement_timeout=%d" % int(60000 * SCALE))

    def sql(self, query, params=None, dbname="presence"):
        with self.connect(dbname) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else None

    def sql1(self, query, params=None, dbname="presence"):
        rows = self.sql(query, params, dbname)
        return rows[0][0] if rows else None

    # -- the worker -------------------------------------------------------
    def worker_pid(self):
        try:
            return self.sql1("SELECT pid FROM pg_stat_activity WHERE backend_type = 'presence ws worker'")
        except psycopg.OperationalError:
            return None

    def postmaster_pid(self):
        with open(os.path.join(self.dir, "data", "postmaster.pid")) as f:
            return int(f.readline())

    def wait_worker(self, timeout=30 * SCALE):
        """Waits until the ws worker runs and answers /healthz with 200."""
        def ready():
            if not self.worker_pid():
                return None
            try:
                status, _, _ = self.http("GET", "/healthz")
            except OSError:
                return None
            return status == 200
        wait_until(ready, timeout=timeout, interval=0.2, what="the ws worker")
        return self.worker_pid()

    def http(self, method, path, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.wsport, timeout=WAIT)
        try:
            conn.request(method, path, headers=headers or {})
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def raw_http(self, request_bytes):
        """Sends raw bytes, returns (status, raw response) - for unnormalised paths."""
        with socket.create_connection(("127.0.0.1", self.wsport), timeout=WAIT) as s:
            s.sendall(request_bytes)
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
                if b"\r\n\r\n" in data:
                    head, _, body = data.partition(b"\r\n\r\n")
                    m = re.search(rb"content-length:\s*(\d+)", head, re.I)
                    if m and len(body) >= int(m.group(1)):
                        break
        status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else None
        return status, data

    @property
    def log_path(self):
        return os.path.join(self.dir, "server.log")

    def log_size(self):
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    def log_since(self, offset):
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace")

    @property
    def ws_url(self):
        return "ws://127.0.0.1:%d/ws" % self.wsport

    # -- data -------------------------------------------------------------
    def create_user(self, name=None):
        name = name or "user-" + uuid.uuid4().hex[:10]
        uid = self.sql1("INSERT INTO presence.users (username) VALUES (%s) RETURNING id::text", (name,))
        return User(self, uid, name)

    def create_session(self, owner, session_id=None, participants=()):
        """A session owned by owner; participants is a list of (User, role)."""
        sid = self.sql1("SELECT presence.create_session(%s::uuid, session_id => %s)",
                        (owner.id, session_id))
        for user, role in participants:
            self.sql("SELECT presence.add_participant(%s, %s::uuid, %s)", (sid, user.id, role))
        return sid

    def activity_rows(self, session_id, activity_type=None):
        query = ("SELECT a.activity_type, a.user_id::text, a.details, host(a.ip_address), a.user_agent, a.id::text"
                 "  FROM presence.activity_log a JOIN presence.collaboration_sessions s ON s.id = a.session_id"
                 " WHERE s.session_id = %s" + (" AND a.activity_type = %s" if activity_type else "") +
                 " ORDER BY a.chain_seq")
        return self.sql(query, (session_id, activity_type) if activity_type else (session_id,))

    def wait_activity(self, session_id, activity_type, count=1, user_id=None, timeout=WAIT):
        def enough():
            rows = [r for r in self.activity_rows(session_id, activity_type)
                    if user_id is None or r[1] == user_id]
            return rows if len(rows) >= count else None
        return wait_until(enough, timeout=timeout, interval=0.1,
                          what="%d %s row(s) in %s" % (count, activity_type, session_id))


class User:
    def __init__(self, cluster, uid, name):
        self.cluster = cluster
        self.id = uid
        self.name = name

    def token(self, **overrides):
        return make_token(self.id, name=self.name, **overrides)

    async def connect(self, **kwargs):
        client = await Client.open(self.cluster, token=self.token(), **kwargs)
        await client.expect("welcome")
        return client


def make_token(sub, name=None, secret=SECRET, ttl=3600, algorithm="HS256", **claims):
    """An HS256 JWT like the application would issue; claims override or add (None removes)."""
    now = int(time.time())
    payload = {"sub": sub, "exp": now + ttl, "iat": now}
    if name:
        payload["name"] = name
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, secret, algorithm=algorithm)


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_token(sub, alg="none"):
    """A token with alg none (or any header alg) and an empty signature."""
    header = b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    body = b64url(json.dumps({"sub": sub, "exp": int(time.time()) + 3600}).encode())
    return "%s.%s." % (header, body)


def hs_sign(header, payload, secret=SECRET):
    """Signs arbitrary header and payload dicts with HS256 (for odd tokens)."""
    signing_input = "%s.%s" % (b64url(json.dumps(header).encode()), b64url(json.dumps(payload).encode()))
    sig = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return "%s.%s" % (signing_input, b64url(sig))


class Closed(Exception):
    pass


def _matches(message, type_=None, predicate=None, fields=None):
    if type_ is not None and message.get("type") != type_:
        return False
    for key, value in (fields or {}).items():
        if message.get(key) != value:
            return False
    return predicate is None or predicate(message)


class Client:
    """A WebSocket client; messages it was not waiting for wait in the inbox."""

    def __init__(self, ws):
        self.ws = ws
        self.inbox = []

    @classmethod
    async def open(cls, cluster, token=None, path="/ws", origin=None, compression=None,
                   subprotocols=None, user_agent="presence-tests/1.0", headers=None, extensions=None):
        extra = dict(headers or {})
        if token is not None:
            extra["Authorization"] = "Bearer " + token
        ws = await websockets.connect(
            "ws://127.0.0.1:%d%s" % (cluster.wsport, path), extra_headers=extra,
            origin=origin, compression=compression, extensions=extensions, subprotocols=subprotocols,
            user_agent_header=user_agent, ping_interval=None, max_queue=None,
            max_size=None, open_timeout=WAIT, close_timeout=WAIT)
        return cls(ws)

    async def send(self, message):
        """Sends a dict as JSON; str, bytes and iterables of fragments as they are."""
        await self.ws.send(json.dumps(message) if isinstance(message, (dict, list)) else message)

    async def recv(self, timeout=WAIT):
        """The next message from the socket (not the inbox)."""
        try:
            raw = await asyncio.wait_for(self.ws.recv(), timeout)
        except websockets.ConnectionClosed as e:
            raise Closed("closed %s %s" % (e.code, e.reason)) from e
        return json.loads(raw)

    async def _find(self, type_=None, predicate=None, timeout=WAIT, fields=None):
        """(message, inbox index it came from or None) of the first match."""
        for i, message in enumerate(self.inbox):
            if _matches(message, type_, predicate, fields):
                return self.inbox.pop(i), i
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("no %s %s %s; got %s" % (type_, fields, predicate, self.inbox))
            try:
                message = await self.recv(remaining)
            except asyncio.TimeoutError:
                raise AssertionError("no %s %s; got %s" % (type_, fields, self.inbox)) from None
            if _matches(message, type_, predicate, fields):
                return message, None
            self.inbox.append(message)

    async def expect(self, type_=None, predicate=None, timeout=WAIT, **fields):
        """The first message (inbox first) with this type and fields."""
        return (await self._find(type_, predicate, timeout, fields))[0]

    async def request(self, message, timeout=WAIT):
        """Sends a request with a fresh ref; returns the reply carrying it."""
        message = dict(message)
        message.setdefault("ref", "r-" + uuid.uuid4().hex[:12])
        await self.send(message)
        return await self.expect(predicate=lambda m: m.get("ref") == message["ref"], timeout=timeout)

    async def ok(self, message, reply_type="ack", timeout=WAIT):
        """request() that must succeed with reply_type."""
        reply = await self.request(message, timeout)
        assert reply["type"] == reply_type, reply
        return reply

    async def error(self, message, code, timeout=WAIT):
        reply = await self.request(message, timeout)
        assert reply["type"] == "error" and reply["code"] == code, reply
        return reply

    async def join(self, session_id, **fields):
        return await self.ok(dict(type="session_join", sessionId=session_id, **fields), "session_joined")

    async def event(self, session_id, kind, user_id, timeout=WAIT, predicate=None):
        """The first presence event of kind about user_id (inbox first); returns the
        event and leaves the frame's other events where the frame was."""
        def wanted(e):
            return e["kind"] == kind and e["user"]["userId"] == user_id and (predicate is None or predicate(e))

        def has(message):
            return message.get("type") == "presence" and message.get("sessionId") == session_id and any(
                wanted(e) for e in message["events"])
        message, index = await self._find(predicate=has, timeout=timeout)
        events = message["events"]
        first = next(i for i, e in enumerate(events) if wanted(e))
        rest = events[:first] + events[first + 1:]
        if rest:
            self.inbox.insert(len(self.inbox) if index is None else index, dict(message, events=rest))
        return events[first]

    async def collect(self, seconds=QUIET):
        """Reads whatever arrives for a while into the inbox."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                self.inbox.append(await self.recv(remaining))
            except asyncio.TimeoutError:
                break

    async def quiet(self, seconds=QUIET, ignore=("heartbeat_ack",), predicate=None):
        """Asserts nothing (matching predicate, if given) arrives for a while."""
        deadline = time.monotonic() + seconds
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                message = await self.recv(remaining)
            except asyncio.TimeoutError:
                break
            if message.get("type") in ignore:
                continue
            if predicate is None or predicate(message):
                raise AssertionError("unexpected message %s" % message)
            self.inbox.append(message)
        leftover = [m for m in self.inbox if m.get("type") not in ignore and (predicate is None or predicate(m))]
        assert not leftover, "unexpected messages %s" % leftover

    async def closed(self, timeout=WAIT):
        """Waits for the server to close; returns (code, reason), keeping messages."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("the connection stayed open; got %s" % self.inbox)
            try:
                self.inbox.append(json.loads(await asyncio.wait_for(self.ws.recv(), remaining)))
            except websockets.ConnectionClosed:
                break
            except asyncio.TimeoutError:
                continue
        await asyncio.wait_for(self.ws.wait_closed(), WAIT)
        return self.ws.close_code, self.ws.close_reason

    async def alive(self):
        """Asserts the connection still works: a heartbeat with a ref is answered."""
        reply = await self.request({"type": "heartbeat"})
        assert reply["type"] == "heartbeat_ack", reply

    async def close(self):
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), WAIT)


async def joined_session(cluster, roles=("operator",)):
    """A session owned by a new user, plus one new participant per role; each
    has one joined connection, every join was seen by the earlier ones, and
    the inboxes are empty.  Returns (session_id, users, clients), owner first."""
    owner = cluster.create_user()
    others = [cluster.create_user() for _ in roles]
    sid = cluster.create_session(owner, participants=list(zip(others, roles)))
    clients = []
    for u in [owner] + others:
        c = await u.connect()
        await c.join(sid)
        for earlier in clients:
            await earlier.event(sid, "join", u.id)
        clients.append(c)
    for c in clients:
        c.inbox.clear()
    return sid, [owner] + others, clients


async def close_all(clients):
    for c in clients:
        await c.close()


async def raw_connect(cluster, token=None, **kwargs):
    return await Client.open(cluster, token=token, **kwargs)


async def upgrade_status(cluster, path="/ws", token=None, origin=None, subprotocols=None):
    """The HTTP status of an upgrade request: 101, or the refusal's status."""
    return (await upgrade_response(cluster, path, token, origin, subprotocols))[0]


async def upgrade_response(cluster, path="/ws", token=None, origin=None, subprotocols=None, extensions=None):
    """(status, {lower-case header name: value}) of the answer to an upgrade request."""
    headers = ["GET %s HTTP/1.1" % path, "Host: 127.0.0.1:%d" % cluster.wsport, "Upgrade: websocket",
               "Connection: Upgrade", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
               "Sec-WebSocket-Version: 13"]
    if token:
        headers.append("Authorization: Bearer " + token)
    if origin:
        headers.append("Origin: " + origin)
    if subprotocols:
        headers.append("Sec-WebSocket-Protocol: " + ", ".join(subprotocols))
    if extensions:
        headers.append("Sec-WebSocket-Extensions: " + extensions)
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", cluster.wsport), WAIT)
    answer = {}
    try:
        writer.write(("\r\n".join(headers) + "\r\n\r\n").encode())
        line = await asyncio.wait_for(reader.readline(), WAIT)
        while (header := await asyncio.wait_for(reader.readline(), WAIT)).strip():
            name, _, value = header.decode().partition(":")
            answer[name.strip().lower()] = value.strip()
    finally:
        writer.close()
    m = re.match(rb"HTTP/1\.[01] (\d{3}) ", line)
    assert m, line
    return int(m.group(1)), answer


def assert_no_crash(cluster, offset):
    text = cluster.log_since(offset)
    bad = [line for line in text.splitlines() if CRASH_SIGNS.search(line)]
    assert not bad, "server log shows trouble:\n" + "\n".join(bad)


@pytest.fixture(scope="session")
def cluster():
    """The main cluster, shared by most tests."""
    c = Cluster()
    try:
        c.start(BASE_GUCS)
        yield c
    finally:
        c.destroy()


@pytest.fixture
def fresh_cluster():
    """A cluster of one's own, for tests that stop, crash or reconfigure it."""
    clusters = []

    def make(gucs=None, wait_worker=True):
        c = Cluster()
        clusters.append(c)
        c.start(dict(BASE_GUCS, **(gucs or {})), wait_worker=wait_worker)
        return c
    try:
        yield make
    finally:
        for c in clusters:
            c.destroy()


@pytest.fixture(autouse=True)
def worker_survives(request):
    """Tests on the main cluster must leave its worker alive and unrestarted."""
    if "cluster" not in request.fixturenames:
        yield
        return
    c = request.getfixturevalue("cluster")
    pid = c.worker_pid()
    offset = c.log_size()
    yield
    assert c.worker_pid() == pid, "the ws worker restarted (pid %s -> %s)" % (pid, c.worker_pid())
    assert_no_crash(c, offset)


def sanitizer_reports():
    """{path: size} of the sanitizer report files written so far."""
    if not SANITIZER_LOG:
        return {}
    directory, prefix = os.path.split(SANITIZER_LOG)
    return {os.path.join(directory, name): os.path.getsize(os.path.join(directory, name))
            for name in os.listdir(directory) if name.startswith(prefix)}


# A stack frame in presence's code: the library, or one of its source files.
PRESENCE_FRAME = re.compile(r"presence\.so|\((%s):\d+\)" % "|".join(
    re.escape(name) for name in sorted(os.listdir(os.path.join(os.path.dirname(HERE), "src")))
    if name.endswith((".c", ".h"))))


# PostgreSQL's own valgrind noise, as in its src/tools/valgrind.supp: WAL
# pages and the relcache init file are written with uninitialised padding
# (also when our worker commits or connects).
VALGRIND_NOISE = re.compile(r"Syscall param \S+ points to uninitialised byte\(s\)(.|\n)*"
                            r"(XLogFlush|XLogBackgroundFlush|XLogInsertRecord|RelationCacheInitializePhase3)")


def sanitizer_errors(text):
    """The reports in a sanitizer log that concern presence: any ASan or UBSan
    report, and valgrind errors with a frame in presence (PostgreSQL's own
    known noise left out)."""
    if re.search(r"ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:", text):
        return [text]
    blocks = re.split(r"(?m)^==\d+== ?\n", text)
    return [b for b in blocks if PRESENCE_FRAME.search(b) and re.search(r"(?m)^==\d+== \S", b)
            and not VALGRIND_NOISE.search(b)]


@pytest.fixture(autouse=True)
def no_sanitizer_reports():
    """Under a sanitizer or valgrind, a test fails when a report about presence appears."""
    before = sanitizer_reports()
    yield
    errors = []
    for path, size in sanitizer_reports().items():
        if before.get(path) == size:
            continue
        with open(path, errors="replace") as f:
            f.seek(before.get(path, 0))
            errors += ["%s:\n%s" % (path, e[:6000]) for e in sanitizer_errors(f.read())]
    assert not errors, "\n".join(errors)


@pytest.fixture
def gucs(cluster):
    """Changes main-cluster GUCs with a reload for one test, then restores them."""
    changed = {}

    def apply(values):
        for name in values:
            changed.setdefault(name, BASE_GUCS.get(name))
        cluster.reload(values)
    yield apply
    if changed:
        restore = {k: v for k, v in changed.items() if v is not None}
        for name in [k for k, v in changed.items() if v is None]:
            # back to the built-in default: drop the line from presence.conf
            conf = os.path.join(cluster.dir, "data", "presence.conf")
            with open(conf) as f:
                lines = [line for line in f if not line.startswith(name + " ")]
            with open(conf, "w") as f:
                f.writelines(lines)
        if "presence.jwt_secret" in changed:
            restore["presence.jwt_secret"] = SECRET
        cluster.reload(restore)


@pytest.fixture
def timing(gucs):
    """Short heartbeat, away and auth timeouts for the timing tests."""
    gucs(SHORT_TIMING_GUCS)
    return SHORT_TIMING_GUCS


@pytest.fixture
def user(cluster):
    return cluster.create_user

