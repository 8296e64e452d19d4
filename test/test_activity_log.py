"""What the worker writes to presence.activity_log: presence changes with
the client's address and user agent, client activity, and nothing for
cursor moves or heartbeats."""

from collections import Counter

from conftest import Client, close_all, joined_session

UA = "presence-tests/1.0"


def types_of(cluster, sid, user_id=None):
    return Counter(r[0] for r in cluster.activity_rows(sid) if user_id is None or r[1] == user_id)


async def barrier(client, sid):
    """An activity with a ref: once acked, everything queued before it is written."""
    return (await client.ok({"type": "activity", "sessionId": sid, "activityType": "barrier"}))["activityId"]


async def test_join_and_leave_are_logged_with_address_and_agent(cluster, user):
    a, b = user(), user()
    sid = cluster.create_session(a, participants=[(b, "viewer")])
    ca = await a.connect()
    await ca.join(sid)
    cb = await Client.open(cluster, token=b.token(), user_agent="Browser/1 (test)")
    await cb.expect("welcome")
    await cb.join(sid)
    await cb.ok({"type": "session_leave", "sessionId": sid})
    await cb.join(sid)
    await cb.close()
    rows = cluster.wait_activity(sid, "user_left", count=2, user_id=b.id)
    joined = [r for r in cluster.activity_rows(sid, "user_joined") if r[1] == b.id]
    assert len(joined) == 2
    for r in joined + rows:
        assert r[3] == "127.0.0.1" and r[4] == "Browser/1 (test)", r
    a_joined = [r for r in cluster.activity_rows(sid, "user_joined") if r[1] == a.id]
    assert [(r[3], r[4]) for r in a_joined] == [("127.0.0.1", UA)]
    await ca.close()


async def test_status_changes_are_logged(cluster, user):
    sid, (a, b), (ca, cb) = await joined_session(cluster)
    for status in ("away", "away", "online", "online", "away"):
        await cb.ok({"type": "presence_update", "sessionId": sid, "status": status})
    await barrier(cb, sid)
    rows = [r for r in cluster.activity_rows(sid, "status_changed") if r[1] == b.id]
    assert [r[2] for r in rows] == [{"status": "away", "automatic": False},
                                    {"status": "online", "automatic": False},
                                    {"status": "away", "automatic": False}]
    assert all(r[3] == "127.0.0.1" and r[4] == UA for r in rows)
    await close_all([ca, cb])


async def test_cursor_moves_and_heartbeats_are_not_logged(cluster, user):
    sid, (a, b), (ca, cb) = await joined_session(cluster)
    await barrier(cb, sid)
    before = types_of(cluster, sid)
    for i in range(10):
        await cb.send({"type": "cursor_update", "sessionId": sid, "cursor": {"eventId": "e", "position": i}})
        await cb.send({"type": "heartbeat", "sessionId": sid, "cursor": {"eventId": "f", "position": i}})
        await cb.send({"type": "heartbeat"})
    await barrier(cb, sid)
    after = types_of(cluster, sid)
    assert after - before == Counter({"barrier": 1})
    await close_all([ca, cb])


async def test_second_tab_logs_nothing(cluster, user):
    sid, (a, b), (ca, cb1) = await joined_session(cluster)
    cb2 = await b.connect()
    await cb2.join(sid)
    await cb2.close()
    await barrier(cb1, sid)
    counts = types_of(cluster, sid, b.id)
    assert counts["user_joined"] == 1 and counts["user_left"] == 0
    await cb1.close()
    cluster.wait_activity(sid, "user_left", user_id=b.id)
    await ca.close()


async def test_client_activity_rows(cluster, user):
    sid, (a, b), (ca, cb) = await joined_session(cluster, ("commenter",))
    reply = await cb.ok({"type": "activity", "sessionId": sid, "activityType": "comment",
                         "details": {"text": "looks good", "line": 12}})
    row = cluster.sql("SELECT activity_type, user_id::text, details, host(ip_address), user_agent"
                      "  FROM presence.activity_log WHERE id = %s", (reply["activityId"],))
    assert row == [("comment", b.id, {"text": "looks good", "line": 12}, "127.0.0.1", UA)]
    await close_all([ca, cb])


async def test_worker_rows_keep_the_audit_chain_valid(cluster, user):
    sid, (a, b), (ca, cb) = await joined_session(cluster)
    for i in range(5):
        await cb.send({"type": "activity", "sessionId": sid, "activityType": "step", "details": {"i": i}})
        await ca.send({"type": "presence_update", "sessionId": sid, "status": "away" if i % 2 else "online"})
    await barrier(ca, sid)
    await close_all([ca, cb])
    cluster.wait_activity(sid, "user_left", count=2)
    ok, checked, bad = cluster.sql("SELECT ok, rows_checked, first_bad_id FROM presence.verify_audit_chain(%s)", (sid,))[0]
    assert ok and bad is None and checked >= 10
    # rows of one session keep their order
    steps = [r[2]["i"] for r in cluster.activity_rows(sid, "step")]
    assert steps == list(range(5))
