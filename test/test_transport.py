"""Transport (PROTOCOL.md, "Transport" and "Limits and close codes"):
frame rules, close codes, the upgrade gate, rate limits, and plain HTTP on
the same port (/healthz, /metrics, presence.static_dir)."""

import asyncio
import json
import os
import re
import shutil
import socket
import tempfile

import pytest
import websockets

from conftest import WAIT, Client, raw_connect, upgrade_status, wait_until

OP_TEXT, OP_BINARY, OP_CONT = 0x1, 0x2, 0x0


# -- frames -------------------------------------------------------------------------

async def test_binary_frame_closes_1003(cluster, user):
    c = await user().connect()
    await c.send(b'{"type":"heartbeat"}')
    assert (await c.closed())[0] == 1003


async def test_binary_frame_before_auth_closes_1003(cluster):
    c = await raw_connect(cluster)
    await c.send(b"\x00\x01")
    assert (await c.closed())[0] == 1003


async def test_oversize_message_closes_1009(cluster, user):
    c = await user().connect()
    await c.send('{"type":"heartbeat","pad":"%s"}' % ("x" * 5000))
    assert (await c.closed())[0] == 1009


async def test_message_at_the_limit_is_served(cluster, user):
    c = await user().connect()
    head = '{"type":"heartbeat","ref":1,"pad":"'
    message = head + "x" * (4096 - len(head) - 2) + '"}'
    assert len(message.encode()) == 4096
    await c.send(message)
    assert (await c.expect("heartbeat_ack"))["ref"] == 1
    await c.close()


async def test_fragmented_message_is_reassembled(cluster, user):
    c = await user().connect()
    await c.send(iter(['{"type":"heart', 'beat","ref"', ':"frag"}']))
    assert (await c.expect("heartbeat_ack"))["ref"] == "frag"
    await c.close()


async def test_fragments_over_the_limit_close_1009(cluster, user):
    c = await user().connect()
    await c.send(iter(['{"type":"heartbeat","pad":"'] + ["y" * 1000] * 6 + ['"}']))
    assert (await c.closed())[0] == 1009


async def test_compression_is_negotiated_and_works(cluster, user):
    c = await Client.open(cluster, token=user().token(), compression="deflate")
    assert c.ws.extensions and c.ws.extensions[0].name == "permessage-deflate"
    await c.expect("welcome")
    await c.alive()
    # a compressible message well under the limit once inflated
    await c.send('{"type":"heartbeat","ref":2,"pad":"%s"}' % (" " * 3000))
    assert (await c.expect("heartbeat_ack"))["ref"] == 2
    await c.close()


async def test_compressed_frame_inflating_past_the_limit_closes_1009(cluster, user):
    c = await Client.open(cluster, token=user().token(), compression="deflate")
    await c.expect("welcome")
    # ~2 KiB on the wire, 1 MiB once inflated
    await c.send('{"type":"heartbeat","pad":"%s"}' % ("a" * (1 << 20)))
    assert (await c.closed())[0] == 1009


async def test_compression_bomb_before_auth_closes_1009(cluster):
    c = await Client.open(cluster, compression="deflate")
    await c.send('{"type":"auth","token":"%s"}' % ("a" * (4 << 20)))
    assert (await c.closed())[0] == 1009


async def test_invalid_utf8_closes_1007(cluster, user):
    c = await user().connect()
    await c.ws.write_frame(True, OP_TEXT, b'{"type":"heartbeat","x":"\xff\xfe"}')
    assert (await c.closed())[0] == 1007


async def test_invalid_utf8_split_across_fragments_closes_1007(cluster, user):
    c = await user().connect()
    await c.ws.write_frame(False, OP_TEXT, b'{"type":"heartbeat","x":"\xe2\x82')
    await c.ws.write_frame(True, OP_CONT, b'\x28"}')
    assert (await c.closed())[0] == 1007


async def test_valid_multibyte_utf8_across_fragments(cluster, user):
    c = await user().connect()
    await c.ws.write_frame(False, OP_TEXT, '{"type":"heartbeat","ref":"€'.encode()[:-1])
    await c.ws.write_frame(True, OP_CONT, '€"}'.encode()[2:])
    assert (await c.expect("heartbeat_ack"))["ref"] == "€"
    await c.close()


# -- the upgrade gate ---------------------------------------------------------------

@pytest.mark.parametrize("path", ["/foo", "/wsx", "/ws/x", "/metrics", "/healthz"])
async def test_upgrade_on_other_paths_is_404(cluster, user, path):
    assert await upgrade_status(cluster, path=path, token=user().token()) == 404


async def client_refusal(cluster, **kwargs):
    """The status a WebSocket client library reads from a refused upgrade."""
    with pytest.raises(websockets.InvalidStatusCode) as refused:
        await Client.open(cluster, **kwargs)
    return refused.value.status_code


async def test_refusals_are_readable_by_client_libraries(cluster, user, gucs):
    # an HTTP/1.1 status line: strict clients (websockets) reject HTTP/1.0 answers
    assert await client_refusal(cluster, path="/nope", token=user().token()) == 404
    gucs({"presence.allowed_origins": "https://good.example"})
    assert await client_refusal(cluster, origin="https://evil.example") == 403


async def test_upgrade_on_ws_path(cluster, user):
    assert await upgrade_status(cluster, path="/ws", token=user().token()) == 101


async def test_subprotocol(cluster, user):
    a = user()
    c = await Client.open(cluster, token=a.token(), subprotocols=["presence.v1"])
    assert c.ws.subprotocol == "presence.v1"
    await c.expect("welcome")
    await c.close()
    c = await Client.open(cluster, token=a.token(), subprotocols=["chat", "presence.v1"])
    assert c.ws.subprotocol == "presence.v1"
    await c.close()
    # a list without presence.v1 is refused
    with pytest.raises((websockets.InvalidHandshake, OSError, asyncio.TimeoutError)):
        c = await Client.open(cluster, token=a.token(), subprotocols=["chat"])
        await c.expect("welcome", timeout=2)


async def test_origin_check(cluster, user, gucs):
    a = user()
    assert await upgrade_status(cluster, token=a.token(), origin="https://anything.example") == 101
    gucs({"presence.allowed_origins": "https://good.example, https://other.example"})
    assert await upgrade_status(cluster, token=a.token(), origin="https://evil.example") == 403
    assert await upgrade_status(cluster, token=a.token(), origin="https://good.example.evil") == 403
    assert await upgrade_status(cluster, token=a.token(), origin="https://good.example") == 101
    assert await upgrade_status(cluster, token=a.token(), origin="https://other.example") == 101
    # no Origin (a service, not a browser) is not checked
    assert await upgrade_status(cluster, token=a.token()) == 101
    refused = int(re.search(r"presence_connections_refused_total (\d+)",
                            cluster.http("GET", "/metrics")[2].decode()).group(1))
    assert refused >= 2


async def test_max_connections_503(fresh_cluster):
    c = fresh_cluster({"presence.max_connections": "3"})
    u = c.create_user()
    clients = [await u.connect() for _ in range(3)]
    assert await upgrade_status(c, token=u.token()) == 503
    assert await client_refusal(c, token=u.token()) == 503
    # HTTP is not a WebSocket connection: still served
    assert c.http("GET", "/healthz")[0] == 200
    await clients.pop().close()

    async def room():
        return await upgrade_status(c, token=u.token()) == 101
    for _ in range(int(WAIT * 10)):
        if await room():
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("a closed connection did not free its place")
    assert c.sql1("SELECT connections_refused FROM presence.stats()") >= 1
    for client in clients:
        await client.close()


async def test_a_client_that_stops_reading_is_closed_1008(cluster, user):
    """Its unsent output is bounded: past the limit the server gives up on it
    (1008) instead of queueing without end; other clients are unaffected."""
    a, b = user(), user()
    sid = cluster.create_session(a, participants=[(b, "viewer")])
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", cluster.wsport))
    ws = await websockets.connect(cluster.ws_url, sock=sock, extra_headers={"Authorization": "Bearer " + a.token()},
                                  compression=None, ping_interval=None, max_queue=1, read_limit=4096,
                                  max_size=None, close_timeout=WAIT)
    slow = Client(ws)
    await slow.expect("welcome")
    await slow.join(sid)
    other = await b.connect()
    await other.join(sid)
    # from here on nothing reads slow's socket; the event loop keeps reading other's
    payload = json.dumps({"blob": "x" * 3900})
    for _ in range(12):
        await asyncio.to_thread(cluster.sql, "SELECT count(presence.broadcast(%s, %s::jsonb))"
                                " FROM generate_series(1, 400)", (sid, payload))
    await other.alive()
    code, reason = await slow.closed(timeout=WAIT * 3)
    assert code == 1008, (code, reason)
    await other.close()


# -- rate limits ---------------------------------------------------------------------

async def test_rate_limited_errors_then_recovery(cluster, user):
    c = await user().connect()
    # presence.rate_limit = 20/s, burst 40: 60 at once exceed it, but not 5x
    for i in range(60):
        await c.send({"type": "heartbeat", "ref": i})
    acks, limited = 0, 0
    while acks + limited < 60:
        m = await c.expect(predicate=lambda m: m.get("type") in ("heartbeat_ack", "error"))
        if m["type"] == "heartbeat_ack":
            acks += 1
        else:
            assert m["code"] == "rate_limited", m
            limited += 1
    assert limited > 0 and acks >= 40
    await asyncio.sleep(0.5)
    await c.alive()
    await c.close()


async def test_sustained_flood_closes_4029(cluster, user):
    c = await user().connect()
    # 5 x presence.rate_limit within a second
    try:
        for _ in range(400):
            await c.ws.send('{"type":"heartbeat"}')
    except websockets.ConnectionClosed:
        pass
    code, _ = await c.closed()
    assert code == 4029
    assert any(m.get("code") == "rate_limited" for m in c.inbox)


async def test_flood_before_auth_closes(cluster):
    c = await raw_connect(cluster)
    for i in range(400):
        try:
            await c.ws.send("garbage")
        except websockets.ConnectionClosed:
            break
    code, _ = await c.closed()
    assert code in (4001, 4029)


# -- HTTP ------------------------------------------------------------------------------

def test_healthz(cluster):
    status, headers, body = cluster.http("GET", "/healthz")
    assert status == 200 and body.strip() == b"ok"
    assert headers.get("content-type", headers.get("Content-Type", "")).startswith("text/plain")


SERIES = ["presence_connections", "presence_sessions", "presence_users", "presence_workers",
          "presence_messages_in_total", "presence_messages_out_total",
          "presence_errors_total", "presence_connections_opened_total",
          "presence_connections_refused_total", "presence_auth_failures_total",
          "presence_heartbeat_timeouts_total", "presence_keepalive_drops_total", "presence_activity_queued_total",
          "presence_activity_written_total", "presence_bytes_in_total", "presence_bytes_out_total"]


def read_metrics(cluster):
    """The /metrics series as {name{labels}: value}, checking the text format."""
    status, headers, body = cluster.http("GET", "/metrics")
    assert status == 200
    assert {k.lower(): v for k, v in headers.items()}["content-type"].startswith("text/plain")
    text = body.decode()
    values = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.match(r"# (HELP|TYPE) presence_\w+ ", line), line
            continue
        m = re.fullmatch(r'(presence_\w+)(\{[^}]*\})? (\S+)', line)
        assert m, line
        values[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return text, values


async def test_metrics(cluster, user):
    a = user()
    sid = cluster.create_session(a)
    c = await a.connect()
    await c.join(sid)
    await c.ok({"type": "activity", "sessionId": sid, "activityType": "note"})
    await c.error({"type": "session_join", "sessionId": "missing-" + a.id[:8]}, "not_found")
    text, values = read_metrics(cluster)
    for name in SERIES:
        assert name in values, name
        assert "# TYPE %s %s" % (name, "counter" if name.endswith("_total") else "gauge") in text
    assert values["presence_workers"] == 1
    assert values['presence_messages_in_by_type_total{type="session_join"}'] >= 1
    assert values['presence_messages_out_by_type_total{type="welcome"}'] >= 1
    assert values['presence_errors_by_code_total{code="not_found"}'] >= 1
    assert values["presence_activity_written_total"] >= 1
    buckets = [(k, v) for k, v in values.items() if k.startswith("presence_fanout_latency_seconds_bucket")]
    assert buckets and buckets[-1][0].endswith('{le="+Inf"}')
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)
    assert values["presence_fanout_latency_seconds_count"] == buckets[-1][1]
    # the gauges are published once per sweep
    wait_until(lambda: all(read_metrics(cluster)[1][g] >= 1 for g in
                           ("presence_connections", "presence_sessions", "presence_users")),
               what="the gauges to count our connection")
    await c.close()


def test_unknown_path_without_static_dir_is_404(cluster):
    assert cluster.http("GET", "/index.html")[0] == 404
    assert cluster.http("GET", "/")[0] == 404


@pytest.fixture
def static_dir(cluster, gucs):
    base = tempfile.mkdtemp(prefix="presence-static-")
    root = os.path.join(base, "www")
    os.makedirs(os.path.join(root, "sub"))
    os.makedirs(os.path.join(root, "empty"))
    os.makedirs(os.path.join(base, "www2"))
    files = {
        "index.html": b"<h1>home</h1>", "app.js": b"console.log(1)", "style.css": b"body{}",
        "data.json": b'{"a":1}', "logo.svg": b"<svg/>", "img.png": b"\x89PNG\r\n\x1a\n",
        "notes.txt": b"notes", "blob.bin": b"\x00\x01", "sub/index.html": b"<p>sub</p>",
        "sub/page.mjs": b"export default 1",
    }
    for name, data in files.items():
        with open(os.path.join(root, name), "wb") as f:
            f.write(data)
    with open(os.path.join(base, "secret.txt"), "w") as f:
        f.write("TOP-SECRET-OUTSIDE")
    with open(os.path.join(base, "www2", "secret.txt"), "w") as f:
        f.write("TOP-SECRET-SIBLING")
    os.symlink(os.path.join(base, "secret.txt"), os.path.join(root, "escape.txt"))
    os.symlink("/etc", os.path.join(root, "etc"))
    os.symlink(os.path.join(base, "www2"), os.path.join(root, "sib"))
    os.symlink(os.path.join(root, "notes.txt"), os.path.join(root, "inside-link.txt"))
    for d, dirs, names in os.walk(base):
        os.chmod(d, 0o755)
        for n in names:
            if not os.path.islink(os.path.join(d, n)):
                os.chmod(os.path.join(d, n), 0o644)
    gucs({"presence.static_dir": root})
    yield files
    shutil.rmtree(base)


@pytest.mark.parametrize("path, content_type, name", [
    ("/", "text/html", "index.html"),
    ("/index.html", "text/html", "index.html"),
    ("/app.js", "text/javascript", "app.js"),
    ("/sub/page.mjs", "text/javascript", "sub/page.mjs"),
    ("/style.css", "text/css", "style.css"),
    ("/data.json", "application/json", "data.json"),
    ("/logo.svg", "image/svg+xml", "logo.svg"),
    ("/img.png", "image/png", "img.png"),
    ("/notes.txt", "text/plain", "notes.txt"),
    ("/blob.bin", "application/octet-stream", "blob.bin"),
    ("/sub/", "text/html", "sub/index.html"),
    ("/inside-link.txt", "text/plain", "notes.txt"),
])
def test_static_files(cluster, static_dir, path, content_type, name):
    status, headers, body = cluster.http("GET", path)
    assert status == 200, (path, status)
    headers = {k.lower(): v for k, v in headers.items()}
    assert headers["content-type"].startswith(content_type)
    assert body == static_dir[name]


@pytest.mark.parametrize("raw_path", [
    "/../secret.txt", "/../../../../etc/hostname", "/sub/../../secret.txt",
    "/%2e%2e/secret.txt", "/%2E%2E/%2E%2E/etc/hostname", "/..%2fsecret.txt", "/%2e%2e%2fsecret.txt",
    "/sub/%2e%2e/%2e%2e/secret.txt", "/escape.txt", "/etc/hostname", "/etc/passwd",
    "/sib/secret.txt", "/../www2/secret.txt", "/empty/", "/sub", "/missing.html",
    "/notes.txt%00.html", "//etc/passwd", "/\\..\\secret.txt",
])
def test_static_no_traversal(cluster, static_dir, raw_path):
    status, raw = cluster.raw_http(("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                                    % raw_path).encode())
    assert status != 200, (raw_path, raw[:200])
    assert b"TOP-SECRET" not in raw and b"root:" not in raw


def test_healthz_and_metrics_win_over_static_files(cluster, static_dir):
    assert cluster.http("GET", "/healthz")[2].strip() == b"ok"
    assert b"presence_connections" in cluster.http("GET", "/metrics")[2]
