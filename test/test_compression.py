"""permessage-deflate for a whole session (issue 8): Python websockets with
its default offer and with variants, bursts of small messages, large
compressed frames both ways, small and large frames interleaved, and a
connection kept open.

The first tests of compression sent one or two small messages; real
clients compress with a 32 KiB window and context takeover, and the
server, inflating with a smaller window, closed them (1006) after about a
dozen cursor updates."""

import asyncio
import base64
import json
import random
import time

import pytest
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

from conftest import BASE_GUCS, SCALE, Client, Cluster, upgrade_response

# Room for bursts and large frames; the shared cluster's small limits are
# for the tests that reach them.
GUCS = dict(BASE_GUCS, **{"presence.rate_limit": "1000", "presence.max_message_bytes": "65536"})

WORDS = ("cursor moved line event position review comment alpha bravo charlie delta "
         "timeline incident owner status online away offer window deflate").split()

# What a client may offer (websockets' keyword arguments); {} is its default.
OFFERS = {
    "default": {},
    "client_no_context_takeover": {"client_no_context_takeover": True},
    "server_no_context_takeover": {"server_no_context_takeover": True},
    "both_no_context_takeover": {"client_no_context_takeover": True, "server_no_context_takeover": True},
    **{"client_max_window_bits=%d" % bits: {"client_max_window_bits": bits} for bits in range(9, 16)},
}


@pytest.fixture(scope="module")
def cluster():
    """This module's own cluster (it overrides the shared one, so the
    worker_survives check applies to it)."""
    c = Cluster()
    try:
        c.start(GUCS)
        yield c
    finally:
        c.destroy()


async def deflate_client(user, **offer):
    """A welcomed client that offered permessage-deflate the way websockets
    does by default (compression="deflate"), with offer's changes; its
    .frames lists (compressed, message bytes) of each data frame it
    received once compression was negotiated."""
    factory = ClientPerMessageDeflateFactory(compress_settings={"memLevel": 5}, **offer)
    c = await Client.open(user.cluster, token=user.token(), extensions=[factory])
    c.frames = []
    if c.ws.extensions:
        extension = c.ws.extensions[0]
        decode = extension.decode

        def recording(frame, *, max_size=None):
            decoded = decode(frame, max_size=max_size)
            if not frame.opcode.name.startswith(("PING", "PONG", "CLOSE")):
                c.frames.append((frame.rsv1, len(decoded.data)))
            return decoded
        extension.decode = recording
    await c.expect("welcome")
    return c


async def deflate_session(user, count=1, **offer):
    """A session and count compressing clients joined to it, owner first
    (the others are operators); inboxes empty."""
    owner = user()
    others = [user() for _ in range(count - 1)]
    cluster = owner.cluster
    sid = cluster.create_session(owner, participants=[(u, "operator") for u in others])
    clients = []
    for u in [owner] + others:
        c = await deflate_client(u, **offer)
        await c.join(sid)
        clients.append(c)
    for c in clients:
        await c.alive()
        c.inbox.clear()
    return sid, [owner] + others, clients


def words(rng, count):
    return " ".join(rng.choice(WORDS) for _ in range(count))


def big_text(kind, size, rng):
    """size characters: base64 of random bytes (barely compressible) or
    repetitive prose."""
    if kind == "random":
        return base64.b64encode(rng.randbytes(size * 3 // 4 + 3)).decode()[:size]
    return (words(rng, 12) + ". ") * (size // 40) + "x" * (size % 40)


async def burst(client, sid, count, tag, rng, details_size=0):
    """count cursor updates and activities, alternating, sent without
    waiting; every one must be acked.  Returns the activities' details."""
    sent = []
    for i in range(count):
        ref = "%s-%d" % (tag, i)
        if i % 2:
            details = {"tag": tag, "i": i, "note": words(rng, 20)}
            if details_size:
                details["body"] = big_text("random" if i % 4 == 1 else "prose", details_size, rng)
            sent.append(details)
            await client.send({"type": "activity", "sessionId": sid, "activityType": "burst",
                               "details": details, "ref": ref})
        else:
            await client.send({"type": "cursor_update", "sessionId": sid, "ref": ref,
                               "cursor": {"eventId": "ev-%s-%d" % (tag, i), "position": rng.randrange(10 ** 6)}})
    for i in range(count):
        reply = await client.expect(ref="%s-%d" % (tag, i))
        assert reply["type"] == "ack", reply
    return sent


def min_bytes(cluster):
    return cluster.sql1("SELECT setting::int FROM pg_settings WHERE name = 'presence.compression_min_bytes'")


def logged(cluster, sid, tag):
    return [r[2] for r in cluster.activity_rows(sid, "burst") if r[2]["tag"] == tag]


@pytest.mark.parametrize("offer", OFFERS.values(), ids=OFFERS.keys())
async def test_bursts_keep_the_connection(cluster, user, offer):
    rng = random.Random(1)
    sid, _, (c,) = await deflate_session(user, **offer)
    assert c.ws.extensions and c.ws.extensions[0].name == "permessage-deflate"
    sent = []
    for round_ in range(3):
        sent += await burst(c, sid, 70, "b%d" % round_, rng)
    await c.alive()
    rows = [d for tag in ("b0", "b1", "b2") for d in logged(cluster, sid, tag)]
    assert rows == sent
    await c.close()


async def test_offer_of_server_max_window_bits_is_declined(cluster, user):
    # the server does not answer server_max_window_bits, so it declines the
    # offer instead of accepting one it does not honour; the client works
    # uncompressed
    rng = random.Random(2)
    sid, _, (c,) = await deflate_session(user, server_max_window_bits=10)
    assert not c.ws.extensions
    sent = await burst(c, sid, 40, "plain", rng)
    assert logged(cluster, sid, "plain") == sent
    await c.close()


# Every accepted offer is answered with no context takeover both ways, so
# that neither side keeps a window between messages.
BOTH_AFRESH = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"


@pytest.mark.parametrize("offer, answer", [
    ("permessage-deflate", BOTH_AFRESH),
    ("permessage-deflate; client_max_window_bits", BOTH_AFRESH),
    ("permessage-deflate; client_no_context_takeover; server_no_context_takeover", BOTH_AFRESH),
    ("permessage-deflate; server_max_window_bits=10", None),
    ("permessage-deflate; server_max_window_bits=10, permessage-deflate; client_max_window_bits",
     BOTH_AFRESH),
    ("permessage-deflate; client_max_window_bits=16", None),
], ids=["bare", "client_max_window_bits", "no_context_takeover", "server_max_window_bits",
        "declined_then_accepted", "window_out_of_range"])
async def test_negotiation_answers(cluster, user, offer, answer):
    status, headers = await upgrade_response(cluster, token=user().token(), extensions=offer)
    assert status == 101
    assert headers.get("sec-websocket-extensions") == answer


@pytest.mark.parametrize("kind", ["random", "prose"])
async def test_large_frames_both_ways(cluster, user, kind):
    rng = random.Random(3)
    sid, _, (ca, cb) = await deflate_session(user, count=2)
    for size in (3000, 9000, 30000):
        details = {"size": size, "body": big_text(kind, size, rng)}
        reply = await ca.ok({"type": "activity", "sessionId": sid, "activityType": "large", "details": details})
        event = await cb.expect("activity", predicate=lambda m: m["activity"]["id"] == reply["activityId"])
        assert event["activity"]["details"] == details
        payload = {"size": size, "notice": big_text(kind, size, rng)}
        assert cluster.sql1("SELECT presence.broadcast(%s, %s::jsonb)", (sid, json.dumps(payload))) == 2
        for c in (ca, cb):
            assert (await c.expect("broadcast"))["payload"] == payload
    # messages from presence.compression_min_bytes on went out compressed,
    # smaller ones (acks, presence frames) as they are
    threshold = min_bytes(cluster)
    for c in (ca, cb):
        assert all(compressed == (size >= threshold) for compressed, size in c.frames), c.frames
        assert any(size > 20000 for _, size in c.frames)
    assert any(size < threshold for _, size in ca.frames)
    await ca.alive()
    await cb.alive()
    await ca.close()
    await cb.close()


@pytest.mark.parametrize("threshold", [None, "0"], ids=["default_threshold", "compress_everything"])
async def test_small_and_large_frames_interleaved(cluster, user, gucs, threshold):
    if threshold is not None:
        gucs({"presence.compression_min_bytes": threshold})
    rng = random.Random(4)
    sid, _, (ca, cb, cc) = await deflate_session(user, count=3)
    expected_broadcasts = []
    sent = []
    for round_ in range(4):
        # large activity events and small acks and presence frames to every
        # client, with large broadcasts between them
        sends = asyncio.ensure_future(burst(ca, sid, 20, "i%d" % round_, rng, details_size=3000 + round_ * 2000))
        payload = {"round": round_, "notice": big_text("prose", 6000, rng)}
        await asyncio.get_running_loop().run_in_executor(
            None, cluster.sql, "SELECT presence.broadcast(%s, %s::jsonb)", (sid, json.dumps(payload)))
        expected_broadcasts.append(payload)
        sent += await sends
        await cb.send({"type": "cursor_update", "sessionId": sid, "cursor": {"eventId": "b", "position": round_}})
    for c in (cb, cc):
        for details in sent:
            event = await c.expect("activity", predicate=lambda m, d=details: m["activity"]["details"] == d)
            assert event["activity"]["activityType"] == "burst"
    for c in (ca, cb, cc):
        for payload in expected_broadcasts:
            assert (await c.expect("broadcast", predicate=lambda m, p=payload: m["payload"] == p))
        await c.alive()
    assert [d for r in range(4) for d in logged(cluster, sid, "i%d" % r)] == sent
    # small frames went compressed too (unless that made them larger)
    assert any(compressed and size < 256 for compressed, size in cc.frames) == (threshold == "0")
    for c in (ca, cb, cc):
        await c.close()


async def test_connection_kept_open_for_a_while(cluster, user):
    rng = random.Random(5)
    sid, _, (ca, cb) = await deflate_session(user, count=2)
    deadline = time.monotonic() + 15 * SCALE
    rounds = 0
    while time.monotonic() < deadline:
        await burst(ca, sid, 6, "k%d" % rounds, rng, details_size=rng.choice([0, 0, 1500, 5000]))
        await cb.ok({"type": "cursor_update", "sessionId": sid,
                     "cursor": {"eventId": "k", "position": rounds}})
        rounds += 1
        await asyncio.sleep(0.5 * SCALE)
    assert rounds >= 10
    for r in range(rounds):
        assert len(logged(cluster, sid, "k%d" % r)) == 3
    await ca.alive()
    await cb.alive()
    await ca.close()
    await cb.close()
