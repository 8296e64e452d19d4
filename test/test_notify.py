"""Presence for backends (issue 11): every presence change the activity
log records is NOTIFYed on presence.channel(session_id) once, at commit,
with the row's id, which presence.presence_change() reads under the
caller's grants; cursors never are.  A backend LISTENs with psycopg as
the server-side subscribeToPresence."""
import json
import time

import pytest
from psycopg import sql

from conftest import QUIET, SCALE, WAIT, close_all


class Listener:
    """A backend LISTENing on a session's channel."""

    def __init__(self, cluster, session_id):
        self.cluster = cluster
        self.channel = cluster.sql1("SELECT presence.channel(%s)", (session_id,))
        self.conn = cluster.connect()
        self.received = []
        self.conn.add_notify_handler(lambda n: self.received.append((n.channel, json.loads(n.payload))))
        self.conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))

    def changes(self, count, timeout=WAIT):
        """The next count changes, waiting for them, as presence_change() reads them."""
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            self.conn.execute("SELECT 1")  # notifications arrive with any answer
            time.sleep(0.05)
        got, self.received = self.received[:count], self.received[count:]
        assert len(got) == count, got
        assert all(channel == self.channel and list(payload) == ["activityId"] for channel, payload in got), got
        return [change(self.cluster, payload["activityId"]) for _, payload in got]

    def quiet(self, seconds=QUIET):
        time.sleep(seconds)
        self.conn.execute("SELECT 1")
        assert self.received == []

    def close(self):
        self.conn.close()


@pytest.fixture
def listen(cluster):
    listeners = []

    def make(session_id):
        listener = Listener(cluster, session_id)
        listeners.append(listener)
        return listener
    yield make
    for listener in listeners:
        listener.close()


def change(cluster, activity_id):
    row = cluster.sql("SELECT session_id, user_id::text, username, event, status, automatic,"
                      " floor(extract(epoch FROM at) * 1000)::bigint FROM presence.presence_change(%s)",
                      (activity_id,))
    assert len(row) == 1, (activity_id, row)
    keys = ("sessionId", "userId", "username", "event", "status", "automatic", "at")
    return dict(zip(keys, row[0]), activityId=activity_id)


def brief(change):
    return change["event"], change["userId"], change["status"]


async def test_joins_status_and_leaves_are_announced_once(cluster, user, listen):
    alice, bob = user(), user()
    sid = cluster.create_session(alice, participants=[(bob, "operator")])
    changes = listen(sid)
    a1 = await alice.connect()
    await a1.request({"type": "session_join", "sessionId": sid})
    (joined,) = changes.changes(1)
    assert joined["sessionId"] == sid and joined["username"] == alice.name and joined["automatic"] is None
    assert brief(joined) == ("join", alice.id, "online")
    row = cluster.sql1("SELECT id::text FROM presence.activity_log WHERE activity_type = 'user_joined'"
                       " ORDER BY created_at DESC LIMIT 1")
    assert joined["activityId"] == row and joined["at"] > 0
    # a second tab of the same user is no change; cursors never are
    a2 = await alice.connect()
    await a2.request({"type": "session_join", "sessionId": sid})
    b = await bob.connect()
    await b.request({"type": "session_join", "sessionId": sid})
    for position in range(3):
        await b.request({"type": "cursor_update", "sessionId": sid, "cursor": {"eventId": "e", "position": position}})
    assert [brief(c) for c in changes.changes(1)] == [("join", bob.id, "online")]
    await a1.request({"type": "presence_update", "sessionId": sid, "status": "away"})
    (away,) = changes.changes(1)
    assert brief(away) == ("status", alice.id, "away") and away["automatic"] is False
    # closing one of two tabs is no change; the last one is
    await a1.close()
    changes.quiet()
    await a2.request({"type": "session_leave", "sessionId": sid})
    assert [brief(c) for c in changes.changes(1)] == [("leave", alice.id, "offline")]
    changes.quiet()
    await close_all([a2, b])
    assert [brief(c) for c in changes.changes(1)] == [("leave", bob.id, "offline")]


async def test_timeouts_and_automatic_away_are_announced(cluster, user, listen, timing):
    alice, bob = user(), user()
    sid = cluster.create_session(alice, participants=[(bob, "operator")])
    changes = listen(sid)
    a = await alice.connect()
    await a.request({"type": "session_join", "sessionId": sid})
    b = await bob.connect()
    await b.request({"type": "session_join", "sessionId": sid})
    assert [c["event"] for c in changes.changes(2)] == ["join", "join"]
    # alice only heartbeats: away, automatically; bob sends nothing: timeout
    deadline = time.monotonic() + 6 * SCALE
    seen = []
    while time.monotonic() < deadline and len(seen) < 2:
        await a.send({"type": "heartbeat", "sessionId": sid})
        time.sleep(0.3 * SCALE)
        a.inbox.clear()
        changes.conn.execute("SELECT 1")
        seen = list(changes.received)
    got = {brief(c): c for c in changes.changes(2)}
    assert got.keys() == {("status", alice.id, "away"), ("timeout", bob.id, "offline")}, got
    assert got[("status", alice.id, "away")]["automatic"] is True
    # bob's next message brings him back
    await b.send({"type": "heartbeat", "sessionId": sid})
    assert [brief(c) for c in changes.changes(1)] == [("join", bob.id, "online")]
    await close_all([a, b])


async def test_only_presence_rows_are_read_back(cluster, user, listen):
    owner = user()
    sid = cluster.create_session(owner)
    note = cluster.sql1("SELECT presence.log_activity(%s, %s::uuid, 'note')::text", (sid, owner.id))
    assert cluster.sql("SELECT * FROM presence.presence_change(%s)", (note,)) == []
    assert cluster.sql("SELECT * FROM presence.presence_change(gen_random_uuid())") == []
    # rows of the types written by applications are read safely, whatever their details
    row = cluster.sql1("SELECT presence.log_activity(%s, %s::uuid, 'status_changed',"
                       " '{\"status\": \"away\", \"automatic\": \"yes\"}')::text", (sid, owner.id))
    assert cluster.sql("SELECT status, automatic FROM presence.presence_change(%s)", (row,)) == [("away", False)]


async def test_other_sessions_are_not_heard_and_long_ids_get_a_channel(cluster, user, listen):
    owner = user()
    long_id = "s" + "x" * 100
    sid = cluster.create_session(owner, session_id=long_id)
    other = cluster.create_session(owner)
    changes = listen(sid)
    assert changes.channel.startswith("presence#") and len(changes.channel) <= 63
    elsewhere = listen(other)
    client = await owner.connect()
    await client.request({"type": "session_join", "sessionId": sid})
    assert changes.changes(1)[0]["sessionId"] == long_id
    elsewhere.quiet()
    await client.close()
