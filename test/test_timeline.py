"""Presence at a past moment (issue 13, part 1): a session driven by real
clients, then present_at, presence_timeline and presence_intervals asked
about the moments between the changes must say what the clients saw live.

Every change is bracketed by two wall-clock moments: `before`, taken
before the test caused it (or, for a timeout or automatic away, before
the silence that causes it), and `after`, taken once the observer had
received its presence event.  The server logs a change when it happens,
so its row lies between the two."""

import datetime
import os
import signal
import time

from conftest import SCALE, WAIT, close_all, wait_until
from test_presence import keepalive


def moment(shift_ms=0):
    """Now, truncated to the millisecond (the workers' created_at
    resolution), shifted by shift_ms."""
    return datetime.datetime.fromtimestamp((int(time.time() * 1000) + shift_ms) / 1000, datetime.timezone.utc)


class Recorder:
    """The subject's changes as the observer saw them, each with its bracket:
    a change the server makes after before() is logged after `before`, one
    the observer has seen was logged at or before `after`."""

    def __init__(self):
        self.changes = []

    def start(self):
        # a pause, so this change is logged after the last one's `after`
        time.sleep(0.02)
        self.before = moment(-1)

    def seen(self, status, cause):
        previous = self.changes[-1]["status_after"] if self.changes else "offline"
        self.changes.append(dict(before=self.before, after=moment(1), status_before=previous,
                                 status_after=status, cause=cause))


def status_at(cluster, sid, user_id, at):
    """The user's status by present_at, 'offline' when not present."""
    rows = cluster.sql("SELECT status FROM presence.present_at(%s, %s) WHERE user_id = %s::uuid",
                       (sid, at, user_id))
    assert len(rows) <= 1, rows
    return rows[0][0] if rows else "offline"


async def test_replay_agrees_with_what_clients_saw(cluster, user, timing):
    owner, b = user(), user()
    sid = cluster.create_session(owner, participants=[(b, "commenter")])
    begin = moment(-1)
    ca = await owner.connect()
    await ca.join(sid)
    seen = Recorder()

    async def observed(kind, **kwargs):
        """b's status in the owner's next presence event of kind about b."""
        return (await ca.event(sid, kind, b.id, **kwargs))["user"]["status"]

    async with keepalive(ca):
        # b joins, then a second tab of b's joins: no change for others
        seen.start()
        cb1 = await b.connect()
        await cb1.join(sid)
        seen.seen(await observed("join"), "join")
        async with keepalive(cb1):
            cb2 = await b.connect()
            joined = await cb2.join(sid)
            assert sorted(u["userId"] for u in joined["users"]) == sorted([owner.id, b.id])
            time.sleep(0.02)
            second_tab_at = moment()

            # away, chosen in one tab; the other tab closing changes nothing
            seen.start()
            await cb2.ok({"type": "presence_update", "sessionId": sid, "status": "away"})
            seen.seen(await observed("update"), "status")
            await cb2.close()
            await ca.quiet(predicate=lambda m: m.get("type") == "presence" and
                           any(e["user"]["userId"] == b.id for e in m["events"]))

        # b's remaining tab falls silent: a timeout
        seen.start()
        seen.seen(await observed("timeout", timeout=WAIT + 3 * SCALE), "timeout")

        # its next message brings b back, online; heartbeats alone are no
        # activity, so b goes away by itself, and activity ends that
        seen.start()
        await cb1.alive()
        seen.seen(await observed("join"), "resumed")
        seen.start()
        async with keepalive(cb1):
            seen.seen(await observed("update", timeout=WAIT + 3 * SCALE,
                                     predicate=lambda e: e["user"]["status"] == "away"), "automatic_away")
            seen.start()
            await cb1.ok({"type": "cursor_update", "sessionId": sid, "cursor": {"eventId": "e", "position": 1}})
            seen.seen(await observed("update", predicate=lambda e: e["user"]["status"] == "online"),
                      "automatic_online")

            # b leaves
            seen.start()
            await cb1.ok({"type": "session_leave", "sessionId": sid})
            seen.seen(await observed("leave"), "leave")

            # b joins again away from the start; a second tab's join sets online
            seen.start()
            await cb1.join(sid, status="away")
            seen.seen(await observed("join"), "join")
            cb3 = await b.connect()
            async with keepalive(cb3):
                seen.start()
                await cb3.join(sid, status="online")
                seen.seen(await observed("update"), "status")

                # the session ends
                seen.start()
                cluster.sql("SELECT presence.end_session(%s)", (sid,))
                await ca.expect("session_ended", sessionId=sid)
                seen.seen("offline", "session_ended")
    await close_all([ca, cb1, cb3])
    end = moment(1000)

    assert [c["status_after"] for c in seen.changes] == \
        ["online", "away", "offline", "online", "away", "online", "offline", "away", "online", "offline"]
    # every worker row is in the log before the session's end is
    cluster.wait_activity(sid, "session_ended")

    # present_at: the state before and after each change
    for change in seen.changes:
        assert status_at(cluster, sid, b.id, change["before"]) == change["status_before"], change
        assert status_at(cluster, sid, b.id, change["after"]) == change["status_after"], change
    assert status_at(cluster, sid, b.id, begin) == "offline"
    assert status_at(cluster, sid, b.id, second_tab_at) == "online"
    since = cluster.sql1("SELECT since FROM presence.present_at(%s, %s) WHERE user_id = %s::uuid",
                         (sid, second_tab_at, b.id))
    assert seen.changes[0]["before"] <= since <= seen.changes[0]["after"]

    # presence_timeline: the same changes, each inside its bracket
    timeline = cluster.sql("SELECT at, status_before, status_after, cause"
                           "  FROM presence.presence_timeline(%s, %s, %s) WHERE user_id = %s::uuid",
                           (sid, begin, end, b.id))
    assert [row[1:] for row in timeline] == \
        [(c["status_before"], c["status_after"], c["cause"]) for c in seen.changes]
    for row, change in zip(timeline, seen.changes):
        assert change["before"] <= row[0] <= change["after"], (row, change)
    # the owner was there from before b until the end
    owner_causes = cluster.sql("SELECT cause FROM presence.presence_timeline(%s, %s, %s)"
                               " WHERE user_id = %s::uuid AND (status_before = 'offline' OR status_after = 'offline')",
                               (sid, begin, end, owner.id))
    assert owner_causes == [("join",), ("session_ended",)]

    # presence_intervals: join to timeout, resumed to leave, join to the end
    intervals = cluster.sql("SELECT present_from, present_to FROM presence.presence_intervals(%s, %s, %s)"
                            " WHERE user_id = %s::uuid", (sid, begin, end, b.id))
    assert intervals == [(timeline[0][0], timeline[2][0]), (timeline[3][0], timeline[6][0]),
                         (timeline[7][0], timeline[9][0])]
    # clipped to a window that starts while b is away and ends while b is back
    middle = cluster.sql("SELECT present_from, present_to FROM presence.presence_intervals(%s, %s, %s)"
                         " WHERE user_id = %s::uuid",
                         (sid, seen.changes[1]["after"], seen.changes[4]["after"], b.id))
    assert middle == [(seen.changes[1]["after"], timeline[2][0]), (timeline[3][0], seen.changes[4]["after"])]


async def test_join_status_and_second_tab_status_are_logged(cluster, user):
    """What the replay needs from the worker: the status a join sets, and a
    status a further tab's join changes."""
    owner, b = user(), user()
    sid = cluster.create_session(owner, participants=[(b, "viewer")])
    cb1, cb2 = await b.connect(), await b.connect()
    await cb1.join(sid, status="away")
    await cb2.join(sid, status="online")
    await cb2.join(sid, status="online")   # already joined: nothing new
    rows = cluster.wait_activity(sid, "status_changed", user_id=b.id)
    joins = cluster.activity_rows(sid, "user_joined")
    assert [r[2]["status"] for r in joins] == ["away"]
    assert [r[2] for r in rows] == [{"status": "online", "automatic": False}]
    wait_until(lambda: cluster.sql("SELECT status FROM presence.present_at(%s, now())", (sid,)) == [("online",)],
               what="b online by present_at")
    await close_all([cb1, cb2])


async def test_presences_open_at_a_crash_end_at_the_restart(fresh_cluster):
    """Without Redis a restarted worker logs the end of the presences its
    killed predecessor held, and only those: not one another node's worker
    holds, nor one it opened that another node's worker joined since (the
    nodes do not see each other's users, so that node may hold the user
    still)."""
    c = fresh_cluster()
    a, b, elsewhere, shared = c.create_user(), c.create_user(), c.create_user(), c.create_user()
    sid = c.create_session(a, participants=[(b, "viewer"), (elsewhere, "viewer"), (shared, "viewer")])
    ca, cb, cs = await a.connect(), await b.connect(), await shared.connect()
    await ca.join(sid)
    await cb.join(sid)
    await cs.join(sid)
    await ca.event(sid, "join", shared.id)
    joins = c.wait_activity(sid, "user_joined", count=3)
    worker = joins[0][2]["worker"]
    assert worker.endswith("/0") and all(r[2]["worker"] == worker for r in joins)
    # presences another node's worker holds, as its joins say
    for user in (elsewhere, shared):
        c.sql("SELECT presence.log_activity(%s, %s::uuid, 'user_joined', '{\"worker\": \"elsewhere-1/0\"}')",
              (sid, user.id))
    time.sleep(0.02)
    before_kill = moment()

    os.kill(c.worker_pid(), signal.SIGKILL)
    for client in (ca, cb, cs):
        await client.closed(timeout=WAIT + 10 * SCALE)
    c.wait_worker(timeout=30 * SCALE)
    left = c.wait_activity(sid, "user_left", count=2)
    assert sorted(r[1] for r in left) == sorted([a.id, b.id])
    assert all(r[2] == {"cause": "server_restart"} for r in left)

    def present(at):
        return sorted(r[0] for r in c.sql("SELECT user_id::text FROM presence.present_at(%s, %s)", (sid, at)))
    assert present(before_kill) == sorted([a.id, b.id, elsewhere.id, shared.id])
    assert present(moment(1000)) == sorted([elsewhere.id, shared.id])
    causes = c.sql("SELECT cause FROM presence.presence_timeline(%s, %s, %s) WHERE user_id IN (%s::uuid, %s::uuid)",
                   (sid, before_kill, moment(1000), a.id, b.id))
    assert causes == [("server_restart",), ("server_restart",)]
    # a second restart finds nothing more to close
    c.stop()
    c.start()
    time.sleep(0.5)
    assert len(c.activity_rows(sid, "user_left")) == 2


async def test_a_client_cannot_write_the_rows_the_replay_reads(cluster, user):
    """An operator may log any activity type it likes, but not the ones the
    server writes: a client's user_left, session_ended or status_changed
    would rewrite who the replay (and the audit trail) says was there."""
    owner, b = user(), user()
    sid = cluster.create_session(owner, participants=[(b, "operator")])
    ca, cb = await owner.connect(), await b.connect()
    try:
        await ca.join(sid)
        await cb.join(sid)
        wait_until(lambda: len(cluster.sql("SELECT 1 FROM presence.present_at(%s, now())", (sid,))) == 2,
                   what="both present by present_at")
        for kind, details in [("user_left", {"cause": "server_restart"}), ("session_ended", {}),
                              ("user_timeout", {}), ("participant_removed", {}), ("user_joined", {}),
                              ("status_changed", {"status": "away"}), ("session_created", {}),
                              ("participant_added", {}), ("session_timeout", {})]:
            reply = await cb.error({"type": "activity", "sessionId": sid, "activityType": kind,
                                    "details": details}, "bad_request")
            assert "written by the server" in reply["message"], reply
        await cb.ok({"type": "activity", "sessionId": sid, "activityType": "deploy", "details": {}})
        assert sorted(r[0] for r in cluster.sql("SELECT status FROM presence.present_at(%s, now())", (sid,))) == [
            "online", "online"]
        assert cluster.sql("SELECT activity_type FROM presence.activity_log WHERE user_id = %s::uuid"
                           " AND activity_type IN ('user_joined', 'user_left', 'user_timeout', 'status_changed',"
                           " 'participant_removed', 'session_ended', 'deploy') ORDER BY chain_seq",
                           (b.id,)) == [("user_joined",), ("deploy",)]
    finally:
        await close_all([ca, cb])
