"""Presence semantics: users aggregated over connections (tabs), heartbeat
timeouts and automatic away, who receives which events, and batching
(ARCHITECTURE.md, "Timing model")."""

import asyncio
import contextlib

from conftest import QUIET, SCALE, WAIT, close_all, joined_session, raw_connect, wait_until


def presence_frames(client, session_id):
    return [m for m in client.inbox if m.get("type") == "presence" and m.get("sessionId") == session_id]


@contextlib.asynccontextmanager
async def keepalive(*clients, interval=0.25 * SCALE):
    """Sends heartbeats (not activity) from clients in the background."""
    async def beat():
        while True:
            for c in clients:
                await c.send({"type": "heartbeat"})
            await asyncio.sleep(interval)
    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


# -- several connections of one user ----------------------------------------------

async def test_multi_tab_leave_only_with_the_last_tab(cluster, user):
    sid, (a, b), (ca, cb1) = await joined_session(cluster)
    cb2 = await b.connect()
    joined = await cb2.join(sid)
    assert sorted(u["userId"] for u in joined["users"]) == sorted([a.id, b.id])
    # the second tab is no new join
    await ca.quiet(predicate=lambda m: m.get("type") == "presence" and
                   any(e["kind"] in ("join", "leave") for e in m["events"]))
    await cb1.close()
    await ca.quiet(predicate=lambda m: m.get("type") == "presence" and
                   any(e["kind"] == "leave" for e in m["events"]))
    assert cluster.sql1("SELECT count(*) FROM presence.online_users(%s) WHERE user_id = %s", (sid, b.id)) == 1
    # the remaining tab still gets the session's events
    await ca.ok({"type": "presence_update", "sessionId": sid, "status": "away"})
    await cb2.event(sid, "update", a.id)
    await cb2.close()
    event = await ca.event(sid, "leave", b.id)
    assert event["user"]["userId"] == b.id
    wait_until(lambda: cluster.sql1("SELECT count(*) FROM presence.online_users(%s) WHERE user_id = %s",
                                    (sid, b.id)) == 0, what="b to leave online_users")
    await ca.close()


async def test_multi_tab_session_leave_of_one_tab(cluster, user):
    sid, (a, b), (ca, cb1) = await joined_session(cluster)
    cb2 = await b.connect()
    await cb2.join(sid)
    await cb1.ok({"type": "session_leave", "sessionId": sid})
    await ca.quiet(predicate=lambda m: m.get("type") == "presence" and
                   any(e["kind"] == "leave" for e in m["events"]))
    await cb2.ok({"type": "session_leave", "sessionId": sid})
    await ca.event(sid, "leave", b.id)
    await close_all([ca, cb1, cb2])


async def test_other_tabs_of_the_sender_get_its_events(cluster, user):
    sid, (a, b), (ca, cb1) = await joined_session(cluster)
    cb2 = await b.connect()
    await cb2.join(sid)
    await cb1.ok({"type": "cursor_update", "sessionId": sid, "cursor": {"eventId": "e", "position": 7}})
    assert (await cb2.event(sid, "cursor", b.id))["user"]["cursor"]["position"] == 7
    assert (await ca.event(sid, "cursor", b.id))["user"]["cursor"]["position"] == 7
    await cb1.quiet(predicate=lambda m: m.get("type") == "presence")
    await close_all([ca, cb1, cb2])


# -- who receives what -------------------------------------------------------------------

async def test_sender_does_not_receive_its_own_events(cluster, user):
    sid, (a, b), (ca, cb) = await joined_session(cluster)
    await cb.ok({"type": "presence_update", "sessionId": sid, "status": "away", "activity": "x"})
    await cb.ok({"type": "cursor_update", "sessionId": sid, "cursor": {"eventId": "e", "position": 1}})
    await cb.ok({"type": "heartbeat", "sessionId": sid, "cursor": {"eventId": "e", "position": 2}},
                "heartbeat_ack")
    await ca.event(sid, "update", b.id)
    await ca.event(sid, "cursor", b.id)
    await cb.quiet(predicate=lambda m: m.get("type") == "presence")
    await close_all([ca, cb])


async def test_only_joined_clients_receive_session_events(cluster, user):
    sid, (a, b), (ca, cb) = await joined_session(cluster)
    c = user()
    other_sid = cluster.create_session(c, participants=[(a, "viewer")])
    cc = await c.connect()
    await cc.join(other_sid)
    # a participant of sid who is connected but not joined
    d = user()
    cluster.sql("SELECT presence.add_participant(%s, %s::uuid)", (sid, d.id))
    cd = await d.connect()
    await cb.ok({"type": "presence_update", "sessionId": sid, "status": "away"})
    await cb.ok({"type": "activity", "sessionId": sid, "activityType": "note"})
    cluster.sql("SELECT presence.broadcast(%s, '{\"n\": 1}')", (sid,))
    await ca.event(sid, "update", b.id)
    await ca.expect("activity", sessionId=sid)
    await ca.expect("broadcast", sessionId=sid)
    for outsider in (cc, cd):
        await outsider.quiet(predicate=lambda m: m.get("sessionId") == sid)
    await close_all([ca, cb, cc, cd])


# -- heartbeat timeout and away ----------------------------------------------------------

async def test_heartbeat_timeout_then_back_with_join(cluster, user, timing):
    sid, (a, b), (ca, cb) = await joined_session(cluster)
    async with keepalive(ca):
        event = await ca.event(sid, "timeout", b.id, timeout=WAIT + 3 * SCALE)
        assert event["user"]["status"] == "offline"
        rows = cluster.wait_activity(sid, "user_timeout", user_id=b.id)
        assert rows[0][3] == "127.0.0.1" and rows[0][4] == "presence-tests/1.0"
        wait_until(lambda: cluster.sql1("SELECT status FROM presence.online_users(%s) WHERE user_id = %s",
                                        (sid, b.id)) == "offline", what="b offline in online_users")
        # the socket stayed open; its next message brings b back
        await cb.alive()
        event = await ca.event(sid, "join", b.id)
        assert event["user"]["status"] == "online"
        rows = cluster.wait_activity(sid, "user_joined", count=2, user_id=b.id)
        assert rows[-1][2]["resumed"] is True
    assert cluster.sql1("SELECT heartbeats_missed FROM presence.stats()") >= 1
    await close_all([ca, cb])


async def test_heartbeats_prevent_the_timeout(cluster, user, timing):
    sid, (a, b), (ca, cb) = await joined_session(cluster)
    async with keepalive(ca, cb):
        await ca.quiet(3 * SCALE + 1, predicate=lambda m: m.get("type") == "presence" and
                       any(e["kind"] == "timeout" for e in m["events"]))
    await close_all([ca, cb])


async def test_a_silent_tab_does_not_time_the_user_out(cluster, user, timing):
    sid, (a, b), (ca, cb1) = await joined_session(cluster)
    cb2 = await b.connect()
    await cb2.join(sid)
    async with keepalive(ca, cb2):
        await ca.quiet(3 * SCALE + 1, predicate=lambda m: m.get("type") == "presence" and
                       any(e["kind"] in ("timeout", "leave") for e in m["events"]))
    await close_all([ca, cb1, cb2])


async def test_away_after_inactivity_and_back(cluster, user, timing):
    sid, (a, b), (ca, cb) = await joined_session(cluster)
    async with keepalive(ca, cb):
        event = await ca.event(sid, "update", b.id, predicate=lambda e: e["user"]["status"] == "away",
                               timeout=WAIT + 2 * SCALE)
        assert event["user"]["status"] == "away"
        wait_until(lambda: cluster.sql1("SELECT status FROM presence.online_users(%s) WHERE user_id = %s",
                                        (sid, b.id)) == "away", what="b away in online_users")
        rows = cluster.wait_activity(sid, "status_changed", user_id=b.id)
        assert rows[0][2] == {"status": "away", "automatic": True}
        # any message but a heartbeat is activity: b is back online
        await cb.ok({"type": "cursor_update", "sessionId": sid, "cursor": {"eventId": "e", "position": 1}})
        event = await ca.event(sid, "update", b.id, predicate=lambda e: e["user"]["status"] == "online")
        assert event["user"]["status"] == "online"
    await close_all([ca, cb])


async def test_chosen_away_is_not_undone_by_activity(cluster, user, timing):
    sid, (a, b), (ca, cb) = await joined_session(cluster)
    await cb.ok({"type": "presence_update", "sessionId": sid, "status": "away"})
    await ca.event(sid, "update", b.id)
    await cb.ok({"type": "cursor_update", "sessionId": sid, "cursor": {"eventId": "e", "position": 1}})
    await ca.event(sid, "cursor", b.id)
    await ca.quiet(predicate=lambda m: m.get("type") == "presence" and
                   any(e["user"]["userId"] == b.id and e["user"]["status"] == "online" for e in m["events"]))
    await close_all([ca, cb])


# -- batching ---------------------------------------------------------------------

@contextlib.contextmanager
def worker_blocked(cluster):
    """Holds a lock the worker needs to authenticate anyone, so the worker
    stalls in a callback; messages sent meanwhile arrive in one loop pass.
    The caller raises presence.db_lock_timeout so the worker waits."""
    conn = cluster.connect()
    conn.autocommit = False
    conn.execute("LOCK TABLE presence.users IN ACCESS EXCLUSIVE MODE")
    try:
        yield
    finally:
        conn.rollback()
        conn.close()


async def test_events_of_one_pass_travel_in_one_frame(cluster, user, gucs):
    gucs({"presence.db_lock_timeout": "10s"})
    sid, (a, b, c), (ca, cb, cc) = await joined_session(cluster, ("operator", "operator"))
    ca.inbox.clear()
    newcomer = user()
    with worker_blocked(cluster):
        # a connection that authenticates now stalls the worker on the lock
        stall = await raw_connect(cluster, token=newcomer.token())
        await asyncio.sleep(0.3 * SCALE)
        await cb.send({"type": "presence_update", "sessionId": sid, "status": "away", "activity": "b"})
        await cc.send({"type": "presence_update", "sessionId": sid, "status": "away", "activity": "c"})
        await asyncio.sleep(0.3 * SCALE)
    await stall.expect("welcome")
    frame = await ca.expect("presence", sessionId=sid)
    assert [(e["kind"], e["user"]["userId"]) for e in frame["events"]] in (
        [("update", b.id), ("update", c.id)], [("update", c.id), ("update", b.id)]), frame
    # each sender got the other's event only
    assert [e["user"]["userId"] for e in (await cb.expect("presence", sessionId=sid))["events"]] == [c.id]
    assert [e["user"]["userId"] for e in (await cc.expect("presence", sessionId=sid))["events"]] == [b.id]
    await close_all([ca, cb, cc, stall])


async def cursor_burst(client, session_id, positions, gap=0.002):
    """Cursor updates a few milliseconds apart: each lands in its own loop pass,
    far more than presence.batch_max (3) passes per batch_interval (100 ms)."""
    for position in positions:
        await client.send({"type": "cursor_update", "sessionId": session_id,
                           "cursor": {"eventId": "e", "position": position}})
        await asyncio.sleep(gap)


def cursor_positions(frames, user_id):
    return [e["user"]["cursor"]["position"] for f in frames for e in f["events"]
            if e["kind"] == "cursor" and e["user"]["userId"] == user_id]


async def test_busy_session_switches_to_timed_batching_and_back(cluster, user, gucs):
    gucs({"presence.rate_limit": "1000"})
    sid, (a, b), (ca, cb) = await joined_session(cluster)
    ca.inbox.clear()
    await cursor_burst(cb, sid, range(150))
    await ca.event(sid, "cursor", b.id, predicate=lambda e: e["user"]["cursor"]["position"] == 149)
    frames = presence_frames(ca, sid)
    positions = cursor_positions(frames, b.id) + [149]
    # cursor events were coalesced per user (latest wins), never reordered
    assert len(positions) < 150, positions
    assert positions == sorted(positions)
    for f in frames:
        users = [e["user"]["userId"] for e in f["events"] if e["kind"] == "cursor"]
        assert len(users) == len(set(users)), f
    # quiet again: updates sent back-to-back are all delivered, none coalesced
    await asyncio.sleep(0.5 + QUIET)
    ca.inbox.clear()
    await cursor_burst(cb, sid, (1000, 1001, 1002), gap=0)
    await ca.event(sid, "cursor", b.id, predicate=lambda e: e["user"]["cursor"]["position"] == 1002)
    assert cursor_positions(presence_frames(ca, sid), b.id) == [1000, 1001], ca.inbox
    await close_all([ca, cb])


async def test_timed_batching_keeps_other_kinds_of_events(cluster, user, gucs):
    gucs({"presence.rate_limit": "1000"})
    sid, (a, b, c), (ca, cb, cc) = await joined_session(cluster, ("operator", "operator"))
    ca.inbox.clear()
    await cursor_burst(cb, sid, range(60))
    await cc.send({"type": "presence_update", "sessionId": sid, "status": "away"})
    await cursor_burst(cb, sid, range(60, 120))
    await ca.event(sid, "cursor", b.id, predicate=lambda e: e["user"]["cursor"]["position"] == 119)
    # non-cursor events are never coalesced away
    await ca.event(sid, "update", c.id)
    await close_all([ca, cb, cc])
