"""SQL reaching live clients (ARCHITECTURE.md, "From SQL to the workers"):
broadcast, end_session, remove_participant, role changes, transactions;
online_users() and stats() reflecting live state."""

import json

import psycopg
import pytest

from conftest import close_all, joined_session, wait_until


# -- broadcast -----------------------------------------------------------------------

async def test_broadcast_reaches_joined_clients_and_counts_them(cluster, user):
    sid, users, clients = await joined_session(cluster, ("viewer", "commenter"))
    tab = await users[1].connect()
    await tab.join(sid)
    outsider = await user().connect()
    payload = {"kind": "notice", "text": "deploy at 5", "n": [1, 2, {"x": None}]}
    reached = cluster.sql1("SELECT presence.broadcast(%s, %s::jsonb)", (sid, json.dumps(payload)))
    assert reached == 4
    for c in clients + [tab]:
        message = await c.expect("broadcast", sessionId=sid)
        assert message["payload"] == payload
    await outsider.quiet(predicate=lambda m: m.get("type") == "broadcast")
    await close_all(clients + [tab, outsider])


async def test_broadcast_to_a_session_without_clients(cluster, user):
    sid = cluster.create_session(user())
    assert cluster.sql1("SELECT presence.broadcast(%s, '{}')", (sid,)) == 0


@pytest.mark.parametrize("payload", ["[1]", "1", "\"x\"", "null"])
def test_broadcast_payload_must_be_an_object(cluster, user, payload):
    sid = cluster.create_session(user())
    with pytest.raises(psycopg.Error):
        cluster.sql("SELECT presence.broadcast(%s, %s::jsonb)", (sid, payload))


def test_broadcast_unknown_session(cluster):
    with pytest.raises(psycopg.Error):
        cluster.sql("SELECT presence.broadcast('no-such-session-x', '{}')")


async def test_broadcast_is_sent_at_commit_only(cluster, user):
    sid, users, (ca, cb) = await joined_session(cluster)
    with cluster.connect() as conn:
        conn.autocommit = False
        conn.execute("SELECT presence.broadcast(%s, '{\"n\": 1}')", (sid,))
        await ca.quiet(predicate=lambda m: m.get("type") == "broadcast")
        conn.commit()
    assert (await ca.expect("broadcast"))["payload"] == {"n": 1}
    await cb.expect("broadcast")
    await close_all([ca, cb])


async def test_rolled_back_broadcasts_reach_nobody(cluster, user):
    sid, users, (ca, cb) = await joined_session(cluster)
    with cluster.connect() as conn:
        conn.autocommit = False
        conn.execute("SELECT presence.broadcast(%s, '{\"n\": 1}')", (sid,))
        conn.rollback()
        # a rolled-back savepoint inside a committed transaction
        conn.execute("SAVEPOINT s")
        conn.execute("SELECT presence.broadcast(%s, '{\"n\": 2}')", (sid,))
        conn.execute("ROLLBACK TO SAVEPOINT s")
        conn.execute("SELECT presence.broadcast(%s, '{\"n\": 3}')", (sid,))
        conn.commit()
    assert (await ca.expect("broadcast"))["payload"] == {"n": 3}
    await ca.quiet(predicate=lambda m: m.get("type") == "broadcast")
    await close_all([ca, cb])


async def test_commands_keep_commit_order(cluster, user):
    sid, users, (ca,) = await joined_session(cluster, ())
    for n in range(20):
        cluster.sql("SELECT presence.broadcast(%s, %s::jsonb)", (sid, json.dumps({"n": n})))
    got = [(await ca.expect("broadcast"))["payload"]["n"] for _ in range(20)]
    assert got == list(range(20))
    await ca.close()


# -- end_session ----------------------------------------------------------------------

@pytest.mark.parametrize("status", ["completed", "failed"])
async def test_end_session_through_sql(cluster, user, status):
    sid, users, clients = await joined_session(cluster, ("viewer", "operator"))
    cluster.sql("SELECT presence.end_session(%s, %s)", (sid, status))
    for c in clients:
        ended = await c.expect("session_ended", sessionId=sid)
        assert ended["status"] == status
    # clients left the session with it
    reply = await clients[1].request({"type": "presence_update", "sessionId": sid, "status": "away"})
    assert reply["type"] == "error" and reply["code"] == "forbidden"
    await clients[0].quiet(predicate=lambda m: m.get("type") == "presence")
    wait_until(lambda: cluster.sql1("SELECT count(*) FROM presence.online_users(%s)", (sid,)) == 0,
               what="online_users to empty")
    await close_all(clients)


async def test_rolled_back_end_session_reaches_nobody(cluster, user):
    sid, users, (ca, cb) = await joined_session(cluster)
    with cluster.connect() as conn:
        conn.autocommit = False
        conn.execute("SELECT presence.end_session(%s)", (sid,))
        conn.rollback()
    await ca.quiet(predicate=lambda m: m.get("type") == "session_ended")
    await cb.quiet(predicate=lambda m: m.get("type") == "session_ended")
    # the session still works
    await cb.ok({"type": "presence_update", "sessionId": sid, "status": "away"})
    await ca.event(sid, "update", users[1].id)
    assert cluster.sql1("SELECT status FROM presence.collaboration_sessions WHERE session_id = %s",
                        (sid,)) == "active"
    await close_all([ca, cb])


# -- participants ------------------------------------------------------------------------

async def test_remove_participant_through_sql(cluster, user):
    sid, (owner, b, c), (co, cb, cc) = await joined_session(cluster, ("operator", "viewer"))
    tab = await b.connect()
    await tab.join(sid)
    co.inbox.clear()
    cluster.sql("SELECT presence.remove_participant(%s, %s::uuid)", (sid, b.id))
    for conn in (cb, tab):
        removed = await conn.expect("session_removed", sessionId=sid)
        assert removed["sessionId"] == sid
    for other in (co, cc):
        assert (await other.event(sid, "leave", b.id))["user"]["userId"] == b.id
    # b's connections stay open but are out of the session
    reply = await cb.request({"type": "presence_update", "sessionId": sid, "status": "away"})
    assert reply["code"] == "forbidden"
    # to one who is no longer a participant the session does not exist
    reply = await tab.request({"type": "session_join", "sessionId": sid})
    assert reply["code"] == "not_found"
    await cc.ok({"type": "presence_update", "sessionId": sid, "status": "away"})
    await cb.quiet(predicate=lambda m: m.get("type") == "presence")
    wait_until(lambda: cluster.sql1("SELECT count(*) FROM presence.online_users(%s) WHERE user_id = %s",
                                    (sid, b.id)) == 0, what="b to leave online_users")
    await close_all([co, cb, cc, tab])


async def test_remove_participant_not_connected(cluster, user):
    sid, (owner, b), (co, cb) = await joined_session(cluster, ("viewer",))
    c = user()
    cluster.sql("SELECT presence.add_participant(%s, %s::uuid)", (sid, c.id))
    cluster.sql("SELECT presence.remove_participant(%s, %s::uuid)", (sid, c.id))
    await co.quiet(predicate=lambda m: m.get("type") == "presence")
    await close_all([co, cb])


async def test_role_change_reaches_live_state(cluster, user):
    sid, (owner, b), (co, cb) = await joined_session(cluster, ("viewer",))
    reply = await cb.request({"type": "activity", "sessionId": sid, "activityType": "comment"})
    assert reply["code"] == "forbidden"
    cluster.sql("SELECT presence.add_participant(%s, %s::uuid, 'commenter')", (sid, b.id))
    event = await co.event(sid, "update", b.id)
    assert event["user"]["role"] == "commenter"
    wait_until(lambda: cluster.sql1("SELECT role FROM presence.online_users(%s) WHERE user_id = %s",
                                    (sid, b.id)) == "commenter", what="the role in online_users")
    await cb.ok({"type": "activity", "sessionId": sid, "activityType": "comment"})
    await close_all([co, cb])


# -- online_users and stats ------------------------------------------------------------------

async def test_online_users_reflects_live_state(cluster, user):
    sid, (owner, b), (co, cb) = await joined_session(cluster, ("commenter",))

    def online():
        return {r[0]: r for r in cluster.sql(
            "SELECT user_id::text, username, role, status, last_seen, cursor, activity"
            "  FROM presence.online_users(%s)", (sid,))}
    rows = online()
    assert set(rows) == {owner.id, b.id}
    assert rows[b.id][1:4] == (b.name, "commenter", "online")
    assert rows[b.id][5] is None and rows[b.id][6] is None
    await cb.ok({"type": "presence_update", "sessionId": sid, "status": "away", "activity": "reviewing"})
    await cb.ok({"type": "cursor_update", "sessionId": sid, "cursor": {"eventId": "ev", "position": 12}})
    wait_until(lambda: online()[b.id][3] == "away" and online()[b.id][5] == {"eventId": "ev", "position": 12}
               and online()[b.id][6] == "reviewing", what="online_users to show b's update")
    await cb.ok({"type": "session_leave", "sessionId": sid})
    wait_until(lambda: set(online()) == {owner.id}, what="b to leave")
    # a participant who never joined is not online
    assert cluster.sql1("SELECT count(*) FROM presence.online_users(%s) WHERE user_id = %s", (sid, b.id)) == 0
    await close_all([co, cb])


async def test_stats_reflect_live_state(cluster, user):
    def stats():
        with cluster.connect() as conn:
            cur = conn.execute("SELECT * FROM presence.stats()")
            return dict(zip([d.name for d in cur.description], cur.fetchone()))
    before = stats()
    assert before["workers_running"] == 1
    sid, users, clients = await joined_session(cluster, ("viewer", "viewer"))
    await clients[0].ok({"type": "activity", "sessionId": sid, "activityType": "note"})
    wait_until(lambda: stats()["active_connections"] >= before["active_connections"] + 3 and
               stats()["active_users"] >= 3 and stats()["active_sessions"] >= 1,
               what="stats() to count the new connections")
    after = stats()
    assert after["messages_in"] >= before["messages_in"] + 4
    assert after["messages_out"] > before["messages_out"]
    assert after["activity_written"] >= before["activity_written"] + 1
    assert after["activity_queued"] >= after["activity_written"] - before["activity_written"]
    await close_all(clients)
    wait_until(lambda: stats()["active_connections"] <= after["active_connections"] - 3,
               what="stats() to drop the closed connections")
