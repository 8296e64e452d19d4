"""Bad input never crashes the worker (the autouse fixture checks its pid
and the server log after every test): malformed JSON, wrong types, huge
numbers, deep nesting, NUL, invalid UTF-8, oversize fields, random
mutations.  Where the protocol says so the connection stays open."""

import json
import random

import pytest
import websockets

from conftest import QUIET, raw_connect

OP_TEXT = 0x1


async def assert_bad_request_and_alive(client, raw):
    await client.send(raw)
    error = await client.expect("error")
    assert error["code"] == "bad_request", error
    await client.alive()


@pytest.mark.parametrize("raw", [
    "", " ", "{", "}", "{}", "[]", "null", "true", "123", "\"heartbeat\"", "nul",
    "{'type': 'heartbeat'}", '{"type":"heartbeat"} trailing', '{"type":"heartbeat",}',
    '{"type":"heartbeat" "ref":1}', '{"type":"heartbeat","type":"auth"}',
    "\ufeff{\"type\":\"heartbeat\"}", '{"type":"heart\\beat"}', '{"type":"\\ud800"}',
    '{"type":"heartbeat","ref":"\\udc00"}', '{"type":"heartbeat","x":NaN}',
    '{"type":"heartbeat","x":Infinity}', '{"type":"heartbeat","x":01}',
    '{"type":"heartbeat","x":"\x01"}', '{"type":"heartbeat"}\x00', "\x00",
])
async def test_invalid_json(cluster, user, raw):
    c = await user().connect()
    await assert_bad_request_and_alive(c, raw)
    await c.close()


@pytest.mark.parametrize("message", [
    {"type": "heartbeat", "ref": "a\u0000b"},
    {"type": "session_join", "sessionId": "abc\u0000def"},
    {"type": "session_create", "sessionId": "s\u0000", "metadata": {"k": "v"}},
    {"type": "presence_update", "sessionId": "x", "status": "away", "activity": "\u0000"},
    {"type": "cursor_update", "sessionId": "x", "cursor": {"eventId": "\u0000", "position": 1}},
    {"type": "activity", "sessionId": "x", "activityType": "note", "details": {"t": "\u0000"}},
    {"type": "activity", "sessionId": "x", "activityType": "note", "details": {"\u0000": 1}},
])
async def test_nul_in_strings(cluster, user, message):
    c = await user().connect()
    await assert_bad_request_and_alive(c, json.dumps(message))
    await c.close()


async def test_nul_in_an_auth_token_closes_4001(cluster, user):
    c = await raw_connect(cluster)
    await c.send(json.dumps({"type": "auth", "token": user().token() + "\u0000"}))
    assert (await c.closed())[0] == 4001


@pytest.mark.parametrize("number", [
    "1e400", "-1e400", "18446744073709551616", "-9223372036854775809", "9223372036854775808",
    "1" * 400, "0." + "0" * 300 + "1", "-0", "1.0",
])
async def test_huge_numbers(cluster, user, number):
    a = user()
    sid = cluster.create_session(a)
    c = await a.connect()
    await c.join(sid)
    for template in ('{"type":"cursor_update","sessionId":"%s","cursor":{"eventId":"e","position":%s},"ref":1}',
                     '{"type":"heartbeat","ref":%s}',
                     '{"type":"activity","sessionId":"%s","activityType":"n","details":{"n":%s},"ref":2}'):
        raw = template % ((sid, number) if template.count("%s") == 2 else (number,))
        await c.send(raw)
        reply = await c.expect(predicate=lambda m: m.get("type") in ("error", "ack", "heartbeat_ack"))
        assert reply["type"] != "error" or reply["code"] == "bad_request", reply
    await c.alive()
    await c.close()


async def test_largest_cursor_position(cluster, user):
    a = user()
    sid = cluster.create_session(a)
    c = await a.connect()
    await c.join(sid)
    await c.ok({"type": "cursor_update", "sessionId": sid, "cursor": {"eventId": "e", "position": 2 ** 63 - 1}})
    row = cluster.sql1("SELECT cursor FROM presence.online_users(%s)", (sid,))
    assert row is None or row["position"] == 2 ** 63 - 1
    await c.close()


@pytest.mark.parametrize("depth", [10, 500, 1000, 2020])
async def test_deep_nesting(cluster, user, depth):
    a = user()
    sid = cluster.create_session(a)
    c = await a.connect()
    await c.join(sid)
    nested = "[" * depth + "]" * depth
    await c.send('{"type":"heartbeat","ref":1,"x":%s}' % nested)
    reply = await c.expect(predicate=lambda m: m.get("ref") in (1, None) and m.get("type") in ("error", "heartbeat_ack"))
    assert reply["type"] == "heartbeat_ack" or reply["code"] == "bad_request"
    object_depth = min(depth, 600)  # 6 bytes a level, within presence.max_message_bytes
    objects = '{"a":' * object_depth + "1" + "}" * object_depth
    await c.send('{"type":"activity","sessionId":"%s","activityType":"deep","ref":2,"details":%s}' % (sid, objects))
    reply = await c.expect(predicate=lambda m: m.get("ref") == 2 or (m.get("type") == "error"))
    assert reply["type"] == "ack" or reply["code"] == "bad_request", reply
    await c.alive()
    await c.close()


@pytest.mark.parametrize("message", [
    {"type": "session_join", "sessionId": "s" * 129},
    {"type": "presence_update", "sessionId": "x", "status": "away", "activity": "a" * 257},
    {"type": "presence_update", "sessionId": "x", "status": "away", "activity": "é" * 129},
    {"type": "cursor_update", "sessionId": "x", "cursor": {"eventId": "e" * 129, "position": 1}},
    {"type": "activity", "sessionId": "x", "activityType": "a" * 65},
    {"type": "heartbeat", "ref": "r" * 65},
    {"type": "session_create", "target": "t" * 501},
    {"type": "session_create", "operationId": "o" * 256},
])
async def test_oversize_fields(cluster, user, message):
    c = await user().connect()
    await assert_bad_request_and_alive(c, json.dumps(message))
    await c.close()


@pytest.mark.parametrize("message", [
    {"type": ["heartbeat"]}, {"type": {"t": 1}}, {"type": "heartbeat", "sessionId": 1},
    {"type": "heartbeat", "sessionId": {}}, {"type": "heartbeat", "cursor": "x"},
    {"type": "session_join", "sessionId": True}, {"type": "session_join", "sessionId": "s", "status": []},
    {"type": "session_join", "sessionId": "s", "cursor": {"eventId": "e", "position": None}},
    {"type": "session_end", "sessionId": "s", "status": 1},
    {"type": "activity", "sessionId": "s", "activityType": None},
    {"type": "activity", "sessionId": "s", "activityType": "a", "details": None, "ref": [1]},
    {"type": "auth", "token": None},
])
async def test_wrong_field_types(cluster, user, message):
    c = await user().connect()
    await assert_bad_request_and_alive(c, json.dumps(message))
    await c.close()


async def test_many_and_long_keys(cluster, user):
    c = await user().connect()
    fields = {("k%d" % i): i for i in range(300)}
    await c.ok(dict(type="heartbeat", **fields), "heartbeat_ack")
    await c.ok({"type": "heartbeat", "k" * 3000: 1}, "heartbeat_ack")
    await c.close()


async def test_control_characters_and_unicode_round_trip(cluster, user):
    a, b = user(), user()
    sid = cluster.create_session(a, participants=[(b, "operator")])
    ca, cb = await a.connect(), await b.connect()
    await ca.join(sid)
    await cb.join(sid)
    await ca.event(sid, "join", b.id)
    text = "tab\tnewline\nquote\"backslash\\ emoji 🎉 rtl \u202e \u2028 \ufffd"
    await cb.ok({"type": "presence_update", "sessionId": sid, "status": "away", "activity": text})
    assert (await ca.event(sid, "update", b.id))["user"]["activity"] == text
    reply = await cb.ok({"type": "activity", "sessionId": sid, "activityType": "note", "details": {"t": text}})
    assert cluster.sql1("SELECT details->>'t' FROM presence.activity_log WHERE id = %s", (reply["activityId"],)) == text
    await ca.close()
    await cb.close()


@pytest.mark.parametrize("payload", [
    b'{"type":"heartbeat","x":"\xc3\x28"}', b'{"type":"heartbeat","x":"\xed\xa0\x80"}',
    b'{"type":"heartbeat","x":"\xf4\x90\x80\x80"}', b'{"type":"heartbeat","x":"\xc0\xaf"}',
    b'\xff', b'{"type":"auth","token":"\xfe"}',
])
async def test_invalid_utf8_closes_1007(cluster, user, payload):
    c = await user().connect()
    await c.ws.write_frame(True, OP_TEXT, payload)
    assert (await c.closed())[0] == 1007


def mutations(seed, count):
    """Seeded random variations of valid messages: type swaps, dropped,
    retyped and oversized fields, truncation, byte flips kept valid UTF-8."""
    rng = random.Random(seed)
    base = [
        {"type": "session_join", "sessionId": "fuzz", "status": "away", "cursor": {"eventId": "e", "position": 1}},
        {"type": "presence_update", "sessionId": "fuzz", "status": "online", "activity": "x"},
        {"type": "cursor_update", "sessionId": "fuzz", "cursor": {"eventId": "e", "position": 3}},
        {"type": "heartbeat", "sessionId": "fuzz", "cursor": {"eventId": "e", "position": 2}},
        {"type": "activity", "sessionId": "fuzz", "activityType": "note", "details": {"a": [1, {"b": 2}]}},
        {"type": "session_create", "metadata": {"m": 1}, "target": "t"},
        {"type": "session_leave", "sessionId": "fuzz"},
        {"type": "session_end", "sessionId": "fuzz-other", "status": "failed"},
    ]
    values = [None, True, 0, -1, 2 ** 70, 1.5, "", "x" * 300, [], {}, [None], {"a": {}}, "\u00e9\u4e2d"]
    for _ in range(count):
        message = json.loads(json.dumps(rng.choice(base)))
        for _ in range(rng.randint(1, 3)):
            key = rng.choice(list(message) + ["ref", "cursor", "extra"])
            action = rng.random()
            if action < 0.4:
                message[key] = rng.choice(values)
            elif action < 0.6:
                message.pop(key, None)
            elif action < 0.8 and isinstance(message.get("cursor"), dict):
                message["cursor"][rng.choice(["eventId", "position", "x"])] = rng.choice(values)
            else:
                message["type"] = rng.choice(["heartbeat", "activity", "session_join", "auth", "bogus", 7])
        text = json.dumps(message)
        if rng.random() < 0.15:
            text = text[:rng.randint(0, len(text))]
        if rng.random() < 0.1:
            i = rng.randrange(len(text) or 1)
            text = text[:i] + rng.choice("{}[]\",:\\ 0a") + text[i + 1:]
        yield text


@pytest.mark.parametrize("seed", range(4))
async def test_random_mutations(cluster, user, seed):
    a = user()
    cluster.create_session(a, session_id="fuzz-%s-%d" % (a.id[:8], seed))
    c = await a.connect()
    for n, text in enumerate(mutations(seed, 30)):
        await c.send(text.replace('"fuzz"', '"fuzz-%s-%d"' % (a.id[:8], seed)))
    await c.collect(QUIET)
    # every error is one of the protocol's codes; the connection is fine
    errors = {m["code"] for m in c.inbox if m.get("type") == "error"}
    assert errors <= {"bad_request", "forbidden", "not_found", "rate_limited"}, errors
    await c.alive()
    await c.close()


async def test_garbage_handshakes(cluster):
    for request in (b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
                    b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Key: !!!\r\nSec-WebSocket-Version: 99\r\n\r\n",
                    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,
                    b"GET " + b"/" * 20000 + b" HTTP/1.1\r\n\r\n",
                    b"POST /healthz HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
                    b"GET /healthz HTTP/1.1\r\n" + b"X-A: b\r\n" * 2000 + b"\r\n",
                    b"\r\n\r\n\r\n"):
        try:
            cluster.raw_http(request)
        except OSError:
            pass
    assert cluster.http("GET", "/healthz")[0] == 200


async def test_abrupt_disconnects(cluster, user):
    a = user()
    sid = cluster.create_session(a)
    for _ in range(5):
        c = await a.connect()
        await c.join(sid)
        await c.send({"type": "activity", "sessionId": sid, "activityType": "note", "ref": 1})
        c.ws.transport.abort()
    with pytest.raises(websockets.InvalidHandshake):
        await raw_connect(cluster, path="/nope")
    c = await a.connect()
    await c.join(sid)
    await c.close()
