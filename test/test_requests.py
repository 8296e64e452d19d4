"""Every request of PROTOCOL.md and its replies: results, acks, errors,
who may do what, and ref correlation."""

import uuid

import pytest

from conftest import QUIET

ERROR_CODES = {"bad_request", "unauthorized", "forbidden", "not_found", "session_full",
               "rate_limited", "unavailable", "internal"}
# Words an error message must not contain: SQL, internals, paths.
LEAKS = ("select", "insert", "update ", "sqlstate", "duplicate key", "violates", "constraint",
         "presence.", "plpgsql", "/usr/", "/tmp/", ".c:", "error:", "stack")


def assert_clean_error(reply, code):
    assert reply["type"] == "error", reply
    assert reply["code"] == code, reply
    assert reply["code"] in ERROR_CODES
    assert isinstance(reply["message"], str) and reply["message"]
    lowered = reply["message"].lower()
    assert not [w for w in LEAKS if w in lowered], reply


def presence_data_ok(data):
    assert set(data) >= {"userId", "username", "role", "status", "lastSeen"}, data
    assert data["role"] in ("viewer", "commenter", "operator")
    assert data["status"] in ("online", "away", "offline")
    assert isinstance(data["lastSeen"], int)
    return True


# -- session_create -----------------------------------------------------------

async def test_session_create_generates_an_id(cluster, user):
    a = user()
    c = await a.connect()
    reply = await c.ok({"type": "session_create"}, "session_created")
    session = reply["session"]
    sid = session["sessionId"]
    uuid.UUID(sid)
    assert session["ownerId"] == a.id and session["status"] == "active"
    assert session["metadata"] == {}
    assert cluster.sql("SELECT user_id::text, role FROM presence.participants(%s)", (sid,)) == [(a.id, "operator")]
    assert (await c.join(sid))["role"] == "operator"
    assert cluster.activity_rows(sid, "session_created")
    await c.close()


async def test_session_create_with_fields(cluster, user, gucs):
    gucs({"presence.client_session_ids": "on"})
    a = user()
    c = await a.connect()
    sid = "sess-" + uuid.uuid4().hex[:12]
    reply = await c.ok({"type": "session_create", "sessionId": sid, "operationId": "op-1", "target": "db-7",
                        "objective": "migrate", "metadata": {"k": [1, 2]}}, "session_created")
    s = reply["session"]
    assert (s["sessionId"], s["operationId"], s["target"], s["objective"], s["metadata"]) == \
        (sid, "op-1", "db-7", "migrate", {"k": [1, 2]})
    assert cluster.sql1("SELECT owner_id::text FROM presence.collaboration_sessions WHERE session_id = %s",
                        (sid,)) == a.id
    await c.close()


async def test_session_create_chosen_id_needs_the_setting(cluster, user):
    """Without presence.client_session_ids no client can take an id the
    application means to create (create_session(... session_id => ...))."""
    c = await user().connect()
    sid = "op-" + uuid.uuid4().hex[:8]
    assert_clean_error(await c.request({"type": "session_create", "sessionId": sid}), "forbidden")
    assert cluster.sql1("SELECT count(*) FROM presence.collaboration_sessions WHERE session_id = %s", (sid,)) == 0
    await c.alive()
    await c.close()


async def test_session_create_duplicate_id(cluster, user, gucs):
    gucs({"presence.client_session_ids": "on"})
    a, b = user(), user()
    sid = cluster.create_session(a, "dup-" + uuid.uuid4().hex[:8])
    c = await b.connect()
    reply = await c.request({"type": "session_create", "sessionId": sid})
    assert_clean_error(reply, "bad_request")
    # nothing changed hands
    assert cluster.sql1("SELECT owner_id::text FROM presence.collaboration_sessions WHERE session_id = %s",
                        (sid,)) == a.id
    await c.alive()
    await c.close()


@pytest.mark.parametrize("fields", [
    {"sessionId": "has space"}, {"sessionId": "-leading-dash"}, {"sessionId": "a:b"},
    {"sessionId": "session"}, {"sessionId": "x" * 129}, {"sessionId": ""}, {"sessionId": 5},
    {"metadata": [1]}, {"metadata": "{}"}, {"target": "t" * 501}, {"operationId": 7},
    {"operationId": "o" * 256},
])
async def test_session_create_invalid_fields(cluster, user, fields):
    a = user()
    c = await a.connect()
    before = cluster.sql1("SELECT count(*) FROM presence.collaboration_sessions")
    assert_clean_error(await c.request(dict(type="session_create", **fields)), "bad_request")
    assert cluster.sql1("SELECT count(*) FROM presence.collaboration_sessions") == before
    await c.alive()
    await c.close()


# -- session_join ---------------------------------------------------------------

async def test_session_join_result(cluster, user):
    a, b = user(), user()
    sid = cluster.create_session(a, participants=[(b, "commenter")])
    ca, cb = await a.connect(), await b.connect()
    joined = await ca.join(sid)
    assert joined["sessionId"] == sid and joined["role"] == "operator"
    assert [u["userId"] for u in joined["users"]] == [a.id]
    joined = await cb.join(sid, status="away", activity="reading", cursor={"eventId": "e1", "position": 3})
    assert joined["role"] == "commenter"
    users = {u["userId"]: u for u in joined["users"]}
    assert set(users) == {a.id, b.id} and all(presence_data_ok(u) for u in users.values())
    me = users[b.id]
    assert (me["username"], me["role"], me["status"], me["activity"], me["cursor"]) == \
        (b.name, "commenter", "away", "reading", {"eventId": "e1", "position": 3})
    event = await ca.event(sid, "join", b.id)
    assert event["user"]["status"] == "away" and event["user"]["cursor"]["position"] == 3
    await ca.close()
    await cb.close()


async def test_session_join_not_found(cluster, user):
    c = await user().connect()
    assert_clean_error(await c.request({"type": "session_join", "sessionId": "no-such-" + uuid.uuid4().hex}),
                       "not_found")
    await c.alive()
    await c.close()


async def test_session_join_by_a_non_participant_is_not_found(cluster, user):
    """To an outsider a session does not exist: the reply is the one for an
    id nobody uses, so ids cannot be probed."""
    a, b = user(), user()
    sid = cluster.create_session(a)
    cb = await b.connect()
    unknown = await cb.request({"type": "session_join", "sessionId": "no-such-" + uuid.uuid4().hex[:8]})
    existing = await cb.request({"type": "session_join", "sessionId": sid})
    assert_clean_error(existing, "not_found")
    assert existing["message"] == unknown["message"]
    ended = await cb.request({"type": "session_end", "sessionId": sid})
    assert_clean_error(ended, "not_found")
    assert ended["message"] == unknown["message"]
    # and a removed participant is refused too
    c = user()
    cluster.sql("SELECT presence.add_participant(%s, %s::uuid, 'viewer')", (sid, c.id))
    cluster.sql("SELECT presence.remove_participant(%s, %s::uuid)", (sid, c.id))
    cc = await c.connect()
    assert_clean_error(await cc.request({"type": "session_join", "sessionId": sid}), "not_found")
    await cb.close()
    await cc.close()


async def test_session_join_ended_session_is_refused(cluster, user):
    a = user()
    sid = cluster.create_session(a)
    cluster.sql("SELECT presence.end_session(%s)", (sid,))
    c = await a.connect()
    reply = await c.request({"type": "session_join", "sessionId": sid})
    assert reply["type"] == "error" and reply["code"] in ERROR_CODES, reply
    await c.close()


async def test_session_full_at_max_participants_present(cluster, user):
    owner = user()
    others = [user() for _ in range(5)]
    sid = cluster.create_session(owner, participants=[(u, "viewer") for u in others[:4]])
    # a sixth participant, as if presence.max_participants had been lowered since
    cluster.sql("INSERT INTO presence.session_participants (session_id, user_id, role)"
                " SELECT id, %s::uuid, 'viewer' FROM presence.collaboration_sessions WHERE session_id = %s",
                (others[4].id, sid))
    clients = [await owner.connect()] + [await u.connect() for u in others[:4]]
    for c in clients:
        await c.join(sid)
    late = await others[4].connect()
    assert_clean_error(await late.request({"type": "session_join", "sessionId": sid}), "session_full")
    # a present user's second tab still gets in
    tab = await others[0].connect()
    await tab.join(sid)
    # when someone leaves there is room again
    await clients[2].ok({"type": "session_leave", "sessionId": sid})
    await late.join(sid)
    for c in clients + [late, tab]:
        await c.close()


async def test_session_join_twice_is_idempotent(cluster, user):
    a, b = user(), user()
    sid = cluster.create_session(a, participants=[(b, "viewer")])
    ca, cb = await a.connect(), await b.connect()
    await ca.join(sid)
    await cb.join(sid)
    await ca.event(sid, "join", b.id)
    again = await cb.join(sid)
    assert sorted(u["userId"] for u in again["users"]) == sorted([a.id, b.id])
    await ca.quiet(predicate=lambda m: m.get("type") == "presence")
    await ca.close()
    await cb.close()


# -- session_leave -----------------------------------------------------------

async def test_session_leave(cluster, user):
    a, b = user(), user()
    sid = cluster.create_session(a, participants=[(b, "operator")])
    ca, cb = await a.connect(), await b.connect()
    await ca.join(sid)
    await cb.join(sid)
    await ca.event(sid, "join", b.id)
    await cb.ok({"type": "session_leave", "sessionId": sid})
    event = await ca.event(sid, "leave", b.id)
    assert event["user"]["userId"] == b.id
    # no longer joined: updates are refused, leaving again is an error
    assert_clean_error(await cb.request({"type": "presence_update", "sessionId": sid, "status": "away"}),
                       "forbidden")
    reply = await cb.request({"type": "session_leave", "sessionId": sid})
    assert reply["type"] == "error" and reply["code"] in ERROR_CODES
    # and b no longer gets the session's events
    await ca.ok({"type": "presence_update", "sessionId": sid, "status": "away"})
    await cb.quiet(predicate=lambda m: m.get("type") == "presence")
    await ca.close()
    await cb.close()


# -- presence_update and cursor_update -----------------------------------------

async def joined_pair(cluster, user, role="operator"):
    a, b = user(), user()
    sid = cluster.create_session(a, participants=[(b, role)])
    ca, cb = await a.connect(), await b.connect()
    await ca.join(sid)
    await cb.join(sid)
    await ca.event(sid, "join", b.id)
    return sid, a, b, ca, cb


async def test_presence_update(cluster, user):
    sid, a, b, ca, cb = await joined_pair(cluster, user)
    await cb.ok({"type": "presence_update", "sessionId": sid, "status": "away", "activity": "lunch"})
    event = await ca.event(sid, "update", b.id)
    assert event["user"]["status"] == "away" and event["user"]["activity"] == "lunch"
    await cb.ok({"type": "presence_update", "sessionId": sid, "status": "online"})
    assert (await ca.event(sid, "update", b.id))["user"]["status"] == "online"
    await ca.close()
    await cb.close()


@pytest.mark.parametrize("fields", [
    {}, {"status": "offline"}, {"status": "busy"}, {"status": 1}, {"status": "away", "activity": "x" * 257},
    {"status": "away", "activity": 5},
])
async def test_presence_update_invalid(cluster, user, fields):
    sid, a, b, ca, cb = await joined_pair(cluster, user)
    assert_clean_error(await cb.request(dict(type="presence_update", sessionId=sid, **fields)), "bad_request")
    await ca.quiet(predicate=lambda m: m.get("type") == "presence")
    await ca.close()
    await cb.close()


async def test_cursor_update(cluster, user):
    sid, a, b, ca, cb = await joined_pair(cluster, user)
    await cb.ok({"type": "cursor_update", "sessionId": sid, "cursor": {"eventId": "evt-9", "position": 42}})
    event = await ca.event(sid, "cursor", b.id)
    assert event["user"]["cursor"] == {"eventId": "evt-9", "position": 42}
    await ca.close()
    await cb.close()


@pytest.mark.parametrize("cursor", [
    None, {"eventId": "e"}, {"position": 1}, {"eventId": "e", "position": -1},
    {"eventId": "e", "position": 1.5}, {"eventId": "e", "position": "1"}, {"eventId": 5, "position": 1},
    {"eventId": "e" * 129, "position": 1}, [1, 2], "e:1",
])
async def test_cursor_update_invalid(cluster, user, cursor):
    sid, a, b, ca, cb = await joined_pair(cluster, user)
    assert_clean_error(await cb.request({"type": "cursor_update", "sessionId": sid, "cursor": cursor}),
                       "bad_request")
    await cb.alive()
    await ca.close()
    await cb.close()


async def test_updates_need_a_joined_session(cluster, user):
    a = user()
    sid = cluster.create_session(a)
    c = await a.connect()
    for message in ({"type": "presence_update", "sessionId": sid, "status": "away"},
                    {"type": "cursor_update", "sessionId": sid, "cursor": {"eventId": "e", "position": 1}},
                    {"type": "activity", "sessionId": sid, "activityType": "note"}):
        assert_clean_error(await c.request(message), "forbidden")
    await c.close()


# -- heartbeat -------------------------------------------------------------------

async def test_heartbeat_ack(cluster, user):
    a = user()
    sid = cluster.create_session(a)
    c = await a.connect()
    reply = await c.ok({"type": "heartbeat", "ref": 11}, "heartbeat_ack")
    assert reply["ref"] == 11 and isinstance(reply["serverTime"], int)
    await c.join(sid)
    reply = await c.ok({"type": "heartbeat", "sessionId": sid}, "heartbeat_ack")
    assert isinstance(reply["serverTime"], int)
    await c.close()


async def test_heartbeat_refreshes_last_seen(cluster, user):
    sid, a, b, ca, cb = await joined_pair(cluster, user)

    def last_seen():
        return cluster.sql1("SELECT last_seen FROM presence.online_users(%s) WHERE user_id = %s", (sid, b.id))
    first = last_seen()
    await cb.ok({"type": "heartbeat"}, "heartbeat_ack")
    from conftest import wait_until
    wait_until(lambda: last_seen() > first, what="lastSeen to move")
    await cb.ok({"type": "heartbeat", "sessionId": sid}, "heartbeat_ack")
    await ca.close()
    await cb.close()


async def test_heartbeat_with_moved_cursor_is_a_cursor_event(cluster, user):
    sid, a, b, ca, cb = await joined_pair(cluster, user)
    await cb.ok({"type": "heartbeat", "sessionId": sid, "cursor": {"eventId": "e", "position": 5}}, "heartbeat_ack")
    assert (await ca.event(sid, "cursor", b.id))["user"]["cursor"]["position"] == 5
    # the same cursor again is no move
    await cb.ok({"type": "heartbeat", "sessionId": sid, "cursor": {"eventId": "e", "position": 5}}, "heartbeat_ack")
    await ca.quiet(predicate=lambda m: m.get("type") == "presence")
    await ca.close()
    await cb.close()


async def test_heartbeat_without_ref_gets_its_result(cluster, user):
    # docs/protocol.md: requests whose result is data always get it
    c = await user().connect()
    await c.send({"type": "heartbeat"})
    reply = await c.expect("heartbeat_ack")
    assert "ref" not in reply
    await c.close()


# -- activity ----------------------------------------------------------------------

async def test_activity_ack_after_commit(cluster, user):
    sid, a, b, ca, cb = await joined_pair(cluster, user)
    reply = await cb.ok({"type": "activity", "sessionId": sid, "activityType": "step.done",
                         "details": {"step": 3, "note": "ok"}})
    activity_id = reply["activityId"]
    # the row is committed by the time the ack arrives: no waiting here
    row = cluster.sql("SELECT a.activity_type, a.user_id::text, a.details FROM presence.activity_log a"
                      " WHERE a.id = %s", (activity_id,))
    assert row == [("step.done", b.id, {"step": 3, "note": "ok"})]
    event = await ca.expect("activity", sessionId=sid)
    act = event["activity"]
    assert (act["id"], act["userId"], act["activityType"], act["details"]) == \
        (activity_id, b.id, "step.done", {"step": 3, "note": "ok"})
    assert isinstance(act["createdAt"], int)
    await ca.close()
    await cb.close()


async def test_activity_without_ref_is_written_without_ack(cluster, user):
    sid, a, b, ca, cb = await joined_pair(cluster, user)
    await cb.send({"type": "activity", "sessionId": sid, "activityType": "quiet.one"})
    rows = cluster.wait_activity(sid, "quiet.one")
    assert rows[0][1] == b.id
    await ca.expect("activity", sessionId=sid)
    await cb.quiet(predicate=lambda m: m.get("type") in ("ack", "error"))
    await ca.close()
    await cb.close()


@pytest.mark.parametrize("role, activity_type, allowed", [
    ("viewer", "comment", False), ("viewer", "note", False),
    ("commenter", "comment", True), ("commenter", "note", False),
    ("operator", "comment", True), ("operator", "note", True),
])
async def test_activity_permissions(cluster, user, role, activity_type, allowed):
    sid, a, b, ca, cb = await joined_pair(cluster, user, role)
    reply = await cb.request({"type": "activity", "sessionId": sid, "activityType": activity_type})
    if allowed:
        assert reply["type"] == "ack" and reply["activityId"]
    else:
        assert_clean_error(reply, "forbidden")
        assert not cluster.activity_rows(sid, activity_type)
    await ca.close()
    await cb.close()


@pytest.mark.parametrize("fields", [
    {}, {"activityType": "Upper"}, {"activityType": "1abc"}, {"activityType": "a-b"},
    {"activityType": "a" * 65}, {"activityType": 3}, {"activityType": "note", "details": [1]},
    {"activityType": "note", "details": "x"},
])
async def test_activity_invalid(cluster, user, fields):
    sid, a, b, ca, cb = await joined_pair(cluster, user)
    assert_clean_error(await cb.request(dict(type="activity", sessionId=sid, **fields)), "bad_request")
    await cb.alive()
    await ca.close()
    await cb.close()


# -- session_end ---------------------------------------------------------------------

async def test_session_end_owner_only(cluster, user):
    owner, op, viewer = user(), user(), user()
    sid = cluster.create_session(owner, participants=[(op, "operator"), (viewer, "viewer")])
    co, cp, cv = await owner.connect(), await op.connect(), await viewer.connect()
    tab = await owner.connect()
    for c in (co, cp, cv, tab):
        await c.join(sid)
    assert_clean_error(await cp.request({"type": "session_end", "sessionId": sid}), "forbidden")
    assert_clean_error(await cv.request({"type": "session_end", "sessionId": sid}), "forbidden")
    assert cluster.sql1("SELECT status FROM presence.collaboration_sessions WHERE session_id = %s", (sid,)) == "active"
    reply = await co.request({"type": "session_end", "sessionId": sid, "status": "failed"})
    assert reply["type"] in ("ack", "session_ended"), reply
    if reply["type"] == "session_ended":
        await co.expect("ack")
    # committed before the ack
    assert cluster.sql1("SELECT status FROM presence.collaboration_sessions WHERE session_id = %s",
                        (sid,)) == "failed"
    for c in (cp, cv, tab, co):
        ended = await c.expect("session_ended", sessionId=sid)
        assert ended["status"] == "failed"
    # the session is gone from live state: no more events, updates refused
    assert_clean_error(await cp.request({"type": "presence_update", "sessionId": sid, "status": "away"}),
                       "forbidden")
    reply = await cp.request({"type": "session_join", "sessionId": sid})
    assert reply["type"] == "error"
    assert cluster.activity_rows(sid, "session_ended")
    for c in (co, cp, cv, tab):
        await c.close()


async def test_session_end_errors(cluster, user):
    a = user()
    c = await a.connect()
    assert_clean_error(await c.request({"type": "session_end", "sessionId": "nope-" + uuid.uuid4().hex[:8]}),
                       "not_found")
    sid = cluster.create_session(a)
    assert_clean_error(await c.request({"type": "session_end", "sessionId": sid, "status": "cancelled"}),
                       "bad_request")
    await c.ok({"type": "session_end", "sessionId": sid})
    reply = await c.request({"type": "session_end", "sessionId": sid})
    assert reply["type"] == "error" and reply["code"] in ERROR_CODES
    await c.close()


# -- ref correlation ----------------------------------------------------------------------

@pytest.mark.parametrize("ref", ["abc", "", "r" * 64, 0, -5, 2 ** 53, "ünïcødé"])
async def test_refs_are_echoed(cluster, user, ref):
    c = await user().connect()
    await c.send({"type": "heartbeat", "ref": ref})
    reply = await c.expect("heartbeat_ack")
    assert reply["ref"] == ref and type(reply["ref"]) is type(ref)
    # errors carry the ref too
    await c.send({"type": "session_join", "sessionId": "no-such-" + uuid.uuid4().hex[:8], "ref": ref})
    error = await c.expect("error")
    assert error["ref"] == ref and error["code"] == "not_found"
    await c.close()


@pytest.mark.parametrize("ref", ["r" * 65, 1.5, True, {"a": 1}, [1]])
async def test_bad_refs_are_bad_requests(cluster, user, ref):
    c = await user().connect()
    await c.send({"type": "heartbeat", "ref": ref})
    error = await c.expect("error")
    assert_clean_error(error, "bad_request")
    assert error["ref"] is None
    await c.quiet(ignore=())
    await c.alive()
    await c.close()


async def test_one_reply_per_ref(cluster, user):
    sid, a, b, ca, cb = await joined_pair(cluster, user)
    await cb.send({"type": "cursor_update", "sessionId": sid, "cursor": {"eventId": "e", "position": 1}, "ref": "x"})
    await cb.send({"type": "presence_update", "sessionId": sid, "status": "away", "ref": "y"})
    await cb.send({"type": "activity", "sessionId": sid, "activityType": "note", "ref": "z"})
    replies = [await cb.expect(predicate=lambda m: "ref" in m) for _ in range(3)]
    assert sorted(r["ref"] for r in replies) == ["x", "y", "z"]
    await cb.quiet(predicate=lambda m: "ref" in m)
    await ca.close()
    await cb.close()


async def test_acks_need_a_ref(cluster, user):
    sid, a, b, ca, cb = await joined_pair(cluster, user)
    await cb.send({"type": "presence_update", "sessionId": sid, "status": "away"})
    await cb.send({"type": "cursor_update", "sessionId": sid, "cursor": {"eventId": "e", "position": 1}})
    await ca.event(sid, "cursor", b.id)
    await cb.quiet(predicate=lambda m: m.get("type") in ("ack", "error"))
    # failures are answered even without a ref, with ref null
    await cb.send({"type": "presence_update", "sessionId": sid, "status": "bogus"})
    error = await cb.expect("error")
    assert error["ref"] is None and error["code"] == "bad_request"
    await ca.close()
    await cb.close()


@pytest.mark.parametrize("message", [
    {"type": "teleport", "ref": 1}, {"type": 5, "ref": 1}, {"ref": 1}, {"type": None, "ref": 1},
    {"type": "session_join", "ref": 1}, {"type": "session_join", "sessionId": None, "ref": 1},
    {"type": "session_leave", "sessionId": ["x"], "ref": 1},
])
async def test_malformed_requests_keep_the_connection(cluster, user, message):
    c = await user().connect()
    error = await c.request(message)
    assert_clean_error(error, "bad_request")
    assert error["ref"] == 1
    await c.alive()
    await c.close()


async def test_unknown_fields_are_ignored(cluster, user):
    c = await user().connect()
    reply = await c.ok({"type": "heartbeat", "extra": {"deep": [1, 2]}, "future": True}, "heartbeat_ack")
    assert reply["type"] == "heartbeat_ack"
    await c.quiet(QUIET / 2)
    await c.close()
