"""presence.permission_function (issue 13, part 3): an application's own
SQL function, over its own table, decides who may join, log activity and
end a session, in place of the built-in matrix.  It runs as its owner (an
application role), never as the superuser the workers and has_permission()
are; its answers are cached per connection and session until
presence.permission_cache_ttl passes or the application calls
presence.permissions_changed(); an error, a loop or a lock wait denies
within presence.permission_function_timeout while the worker keeps
answering everyone else."""
import asyncio
import time

import pytest

from conftest import QUIET, SCALE, WAIT, close_all, wait_until

APP = "perm_app"
FUNCTION = APP + ".may"

SETUP = """
CREATE ROLE perm_app NOLOGIN;
CREATE SCHEMA perm_app AUTHORIZATION perm_app;
CREATE TABLE public.perm_secret (x int);
SET ROLE perm_app;
CREATE TABLE perm_app.grants (session_id text, user_id uuid, action text);
CREATE TABLE perm_app.lockme (x int);
CREATE FUNCTION perm_app.may(session_id text, user_id uuid, action text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM perm_app.grants g
                    WHERE g.session_id = may.session_id AND g.user_id = may.user_id AND g.action = may.action)
$$;
CREATE FUNCTION perm_app.raises(session_id text, user_id uuid, action text) RETURNS boolean
LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'perm_app cannot decide'; END $$;
CREATE FUNCTION perm_app.loops(session_id text, user_id uuid, action text) RETURNS boolean
LANGUAGE plpgsql AS $$ BEGIN LOOP END LOOP; END $$;
CREATE FUNCTION perm_app.sleeps(session_id text, user_id uuid, action text) RETURNS boolean
LANGUAGE sql AS $$ SELECT pg_sleep(60) IS NULL $$;
CREATE FUNCTION perm_app.locks(session_id text, user_id uuid, action text) RETURNS boolean
LANGUAGE sql AS $$ SELECT count(*) >= 0 FROM perm_app.lockme $$;
CREATE FUNCTION perm_app.escalates(session_id text, user_id uuid, action text) RETURNS boolean
LANGUAGE plpgsql AS $$ BEGIN ALTER ROLE perm_app SUPERUSER; RETURN true; END $$;
CREATE FUNCTION perm_app.peeks(session_id text, user_id uuid, action text) RETURNS boolean
LANGUAGE sql AS $$ SELECT count(*) >= 0 FROM public.perm_secret $$;
CREATE TABLE perm_app.trap (x int);
CREATE FUNCTION perm_app.springs() RETURNS trigger
LANGUAGE plpgsql AS $$ BEGIN ALTER ROLE perm_app SUPERUSER; RETURN NULL; END $$;
CREATE CONSTRAINT TRIGGER springs AFTER INSERT ON perm_app.trap DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION perm_app.springs();
CREATE FUNCTION perm_app.defers(session_id text, user_id uuid, action text) RETURNS boolean
LANGUAGE sql AS $$ INSERT INTO perm_app.trap VALUES (1); SELECT true $$;
CREATE FUNCTION perm_app.leaks(session_id text, user_id uuid, action text) RETURNS boolean
LANGUAGE sql AS $$ SELECT set_config('search_path', 'perm_app', true) IS NOT NULL $$;
CREATE FUNCTION perm_app.recurses(session_id text, user_id uuid, action text) RETURNS boolean
LANGUAGE plpgsql AS $$ BEGIN RETURN presence.has_permission(session_id, user_id, action); END $$;
CREATE FUNCTION perm_app.shouts(session_id text, user_id uuid, action text) RETURNS boolean
LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION '%', repeat('é', 5000); END $$;
CREATE TABLE perm_app.slow (x int);
CREATE FUNCTION perm_app.flaky(session_id text, user_id uuid, action text) RETURNS boolean
LANGUAGE sql AS $$ SELECT CASE WHEN EXISTS (SELECT 1 FROM perm_app.slow) THEN pg_sleep(60) IS NULL
                               ELSE true END $$;
CREATE FUNCTION perm_app.wrong(session_id text, user_id uuid, action text) RETURNS text
LANGUAGE sql AS $$ SELECT 'yes' $$;
RESET ROLE;
CREATE FUNCTION perm_app.as_superuser(session_id text, user_id uuid, action text) RETURNS boolean
LANGUAGE plpgsql SET role = SUPERUSER_NAME AS $$ BEGIN ALTER ROLE perm_app SUPERUSER; RETURN true; END $$;
ALTER FUNCTION perm_app.as_superuser(text, uuid, text) OWNER TO perm_app;
"""

TEARDOWN = """
DROP SCHEMA IF EXISTS perm_app CASCADE;
DROP TABLE IF EXISTS public.perm_secret;
DROP ROLE IF EXISTS perm_app;
"""

# The permission function's timeout in these tests, and how long a check
# that hits it may hold up another client on the same worker (generous: a
# loaded two-core machine).
TIMEOUT_MS = 200
STALL_BOUND = 2.0 * SCALE


@pytest.fixture
def app(cluster, gucs):
    """The application's role, tables and functions; presence.permission_function
    set to perm_app.may (a test may name another); a long cache unless changed."""
    with cluster.connect() as conn:
        conn.execute(TEARDOWN)
        superuser = conn.execute("SELECT current_user").fetchone()[0]
        conn.execute(SETUP.replace("SUPERUSER_NAME", '"%s"' % superuser))
    gucs({"presence.permission_function": FUNCTION,
          "presence.permission_function_timeout": "%dms" % TIMEOUT_MS,
          "presence.permission_cache_ttl": "1h"})
    yield gucs
    # back to the matrix before the function goes
    gucs({"presence.permission_function": ""})
    cluster.sql(TEARDOWN)


def grant(cluster, session_id, user, *actions):
    for action in actions:
        cluster.sql("INSERT INTO perm_app.grants VALUES (%s, %s, %s)", (session_id, user.id, action))


def revoke(cluster, session_id, user, *actions):
    cluster.sql("DELETE FROM perm_app.grants WHERE session_id = %s AND user_id = %s AND action = ANY (%s)",
                (session_id, user.id, list(actions)))


def has_permission(cluster, session_id, user, action, function=FUNCTION):
    with cluster.connect() as conn:
        conn.execute("SET presence.permission_function = '%s'" % function)
        return conn.execute("SELECT presence.has_permission(%s, %s::uuid, %s)",
                            (session_id, user.id, action)).fetchone()[0]


async def comment(client, session_id):
    return await client.request({"type": "activity", "sessionId": session_id, "activityType": "comment",
                                 "details": {"text": "hi"}})


async def member_and_watcher(cluster):
    """A session whose owner is not there and two users the table lets view it, each joined
    with a client: (session_id, member, other, member's client, other's client)."""
    owner, member, other = cluster.create_user(), cluster.create_user(), cluster.create_user()
    sid = cluster.create_session(owner)
    grant(cluster, sid, member, "view")
    grant(cluster, sid, other, "view")
    client, watcher = await member.connect(), await other.connect()
    try:
        await client.join(sid)
        await watcher.join(sid)
    except BaseException:
        await close_all([client, watcher])
        raise
    return sid, member, other, client, watcher


async def after_notice(request, expected, timeout=WAIT):
    """A notice (permissions_changed) reaches the workers through their command queue, which
    they read once a loop pass, like NOTIFY: a request sent at once may still meet the old
    answer.  Repeats request until its reply has type expected (and returns it)."""
    deadline = time.monotonic() + timeout
    while True:
        reply = await request()
        if reply["type"] == expected or time.monotonic() > deadline:
            assert reply["type"] == expected, reply
            return reply
        await asyncio.sleep(0.05)


async def test_the_function_decides_who_joins(cluster, app):
    owner, member, outsider = cluster.create_user(), cluster.create_user(), cluster.create_user()
    sid = cluster.create_session(owner)
    grant(cluster, sid, member, "view")
    clients = [await u.connect() for u in (member, outsider, owner)]
    try:
        joined = await clients[0].join(sid)
        # no participant row: shown as a viewer; what they may do is the function's to say
        assert joined["role"] == "viewer"
        assert [u["userId"] for u in joined["users"]] == [member.id]
        # refused as a non-participant is today: the session does not exist for them
        for client in clients[1:]:
            reply = await client.error({"type": "session_join", "sessionId": sid}, "not_found")
            assert reply["message"] == "session not found"
        assert await clients[0].error({"type": "session_join", "sessionId": "perm-no-such"}, "not_found")
        assert has_permission(cluster, sid, member, "view") is True
        assert has_permission(cluster, sid, outsider, "view") is False
        assert has_permission(cluster, sid, owner, "view") is False
    finally:
        await close_all(clients)


async def test_a_connected_client_gains_and_loses_rights(cluster, app):
    sid, member, other, client, watcher = await member_and_watcher(cluster)
    try:
        reply = await comment(client, sid)
        assert reply["type"] == "error" and reply["code"] == "forbidden", reply
        assert "comment permission" in reply["message"]

        # the table alone changes nothing while the answer is cached...
        grant(cluster, sid, member, "comment")
        reply = await comment(client, sid)
        assert reply["type"] == "error" and reply["code"] == "forbidden", reply
        # ...the application's notice does
        cluster.sql("SELECT presence.permissions_changed(%s)", (sid,))
        assert (await after_notice(lambda: comment(client, sid), "ack"))["activityId"]
        assert has_permission(cluster, sid, member, "comment") is True

        # view revoked and notified for the user: removed at once, as remove_participant does
        revoke(cluster, sid, member, "view")
        cluster.sql("SELECT presence.permissions_changed(%s, %s::uuid)", (sid, member.id))
        removed = await client.expect("session_removed", sessionId=sid)
        assert removed["reason"] == "removed from the session"
        await watcher.event(sid, "leave", member.id)
        reply = await comment(client, sid)
        assert reply["type"] == "error" and reply["code"] == "forbidden", reply
        assert reply["message"] == "join the session first"
        await client.error({"type": "session_join", "sessionId": sid}, "not_found")

        # a notice for the whole session: the next request is decided anew
        revoke(cluster, sid, other, "view")
        cluster.sql("SELECT presence.permissions_changed(%s)", (sid,))
        reply = await after_notice(lambda: watcher.request({"type": "presence_update", "sessionId": sid,
                                                            "status": "away"}), "error")
        assert reply["code"] == "forbidden", reply
        await watcher.expect("session_removed", sessionId=sid)
    finally:
        await close_all([client, watcher])


async def test_the_cache_expires(cluster, app):
    app({"presence.permission_cache_ttl": "%dms" % int(1000 * SCALE)})
    owner, member = cluster.create_user(), cluster.create_user()
    sid = cluster.create_session(owner)
    grant(cluster, sid, member, "view", "comment")
    client = await member.connect()
    try:
        await client.join(sid)
        await client.ok({"type": "activity", "sessionId": sid, "activityType": "comment", "details": {}})
        revoke(cluster, sid, member, "comment")
        # no notice: after the TTL the function is asked again
        await asyncio.sleep(1.3 * SCALE)
        reply = await comment(client, sid)
        assert reply["type"] == "error" and reply["code"] == "forbidden", reply
        grant(cluster, sid, member, "operate")
        await asyncio.sleep(1.3 * SCALE)
        await client.ok({"type": "activity", "sessionId": sid, "activityType": "deploy", "details": {}})
    finally:
        await client.close()


async def test_end_is_the_functions_to_allow(cluster, app):
    owner, member = cluster.create_user(), cluster.create_user()
    sid = cluster.create_session(owner)
    grant(cluster, sid, member, "view")
    grant(cluster, sid, owner, "view")
    client, owner_client = await member.connect(), await owner.connect()
    try:
        await client.join(sid)
        await owner_client.join(sid)
        # the owner without end may not; the member with it may
        reply = await owner_client.error({"type": "session_end", "sessionId": sid}, "forbidden")
        assert "end permission" in reply["message"]
        grant(cluster, sid, member, "end")
        cluster.sql("SELECT presence.permissions_changed(%s)", (sid,))
        await after_notice(lambda: client.request({"type": "session_end", "sessionId": sid}), "ack")
        await owner_client.expect("session_ended", sessionId=sid)
        assert cluster.sql1("SELECT status FROM presence.collaboration_sessions WHERE session_id = %s",
                            (sid,)) == "completed"
    finally:
        await close_all([client, owner_client])


async def refused_without_stalling(cluster, function_name, warning):
    """Joins under a failing function are refused, logged, and cost a client
    of the same worker at most about one timeout."""
    owner, member, bystander = cluster.create_user(), cluster.create_user(), cluster.create_user()
    sid = cluster.create_session(owner)
    offset = cluster.log_size()
    client, other = await member.connect(), await bystander.connect()
    try:
        for _ in range(3):
            started = time.monotonic()
            await client.send({"type": "session_join", "sessionId": sid, "ref": "j"})
            await other.send({"type": "heartbeat", "ref": "h"})
            ack = await other.expect(predicate=lambda m: m.get("ref") == "h")
            stalled = time.monotonic() - started
            assert ack["type"] == "heartbeat_ack"
            assert stalled < STALL_BOUND, "a client waited %.2f s" % stalled
            reply = await client.expect(predicate=lambda m: m.get("ref") == "j")
            assert reply["type"] == "error" and reply["code"] == "not_found", reply
        wait_until(lambda: warning in cluster.log_since(offset), what="the warning in the log")
        log = cluster.log_since(offset)
        assert "permission function %s denied view to user %s" % (function_name, member.id) in log, log
    finally:
        await close_all([client, other])


@pytest.mark.parametrize("name, warning", [
    ("raises", "perm_app cannot decide"),
    ("loops", "canceling statement due to statement timeout"),
    ("sleeps", "canceling statement due to statement timeout"),
])
async def test_a_failing_function_denies_without_stalling(cluster, app, name, warning):
    app({"presence.permission_function": APP + "." + name})
    await refused_without_stalling(cluster, APP + "." + name, warning)


async def test_a_function_waiting_on_a_lock_denies_without_stalling(cluster, app):
    app({"presence.permission_function": APP + ".locks"})
    with cluster.connect() as holder:
        holder.execute("BEGIN")
        holder.execute("LOCK TABLE perm_app.lockme IN ACCESS EXCLUSIVE MODE")
        # the statement and lock timeouts are equal: either may end the wait
        await refused_without_stalling(cluster, APP + ".locks", "canceling statement due to")
        holder.execute("ROLLBACK")
    # the lock gone, the function answers again once its back-off (a few hundred ms) is over
    owner, member = cluster.create_user(), cluster.create_user()
    sid = cluster.create_session(owner)
    client = await member.connect()
    try:
        deadline = time.monotonic() + WAIT
        while (await client.request({"type": "session_join", "sessionId": sid}))["type"] != "session_joined":
            assert time.monotonic() < deadline, "the function never answered again"
            await asyncio.sleep(0.1)
    finally:
        await client.close()


async def test_the_owner_of_the_function_gets_no_superuser_rights(cluster, app):
    owner, member = cluster.create_user(), cluster.create_user()
    sid = cluster.create_session(owner)
    client = await member.connect()
    try:
        for name, warning in [("escalates", "must be superuser"),
                              ("peeks", "permission denied for table perm_secret")]:
            app({"presence.permission_function": APP + "." + name})
            offset = cluster.log_size()
            await client.error({"type": "session_join", "sessionId": sid}, "not_found")
            wait_until(lambda: warning in cluster.log_since(offset), what="the warning in the log")
            with cluster.connect() as conn:
                conn.execute("SET presence.permission_function = '%s.%s'" % (APP, name))
                assert conn.execute("SELECT presence.has_permission(%s, %s::uuid, 'view')",
                                    (sid, member.id)).fetchone()[0] is False
        assert cluster.sql1("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (APP,)) is False
    finally:
        await client.close()


@pytest.mark.parametrize("name", ["defers", "as_superuser"])
async def test_the_function_cannot_act_as_the_worker_after_it_returns(cluster, app, name):
    """A deferred trigger the function queues would fire at the worker's
    commit, as the superuser; a SET role clause would switch to it."""
    app({"presence.permission_function": APP + "." + name})
    owner, member = cluster.create_user(), cluster.create_user()
    sid = cluster.create_session(owner)
    offset = cluster.log_size()
    client = await member.connect()
    try:
        await client.error({"type": "session_join", "sessionId": sid}, "not_found")
        wait_until(lambda: "permission function %s.%s denied view" % (APP, name) in cluster.log_since(offset),
                   what="the warning in the log")
        assert cluster.sql1("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (APP,)) is False
        assert has_permission(cluster, sid, member, "view", APP + "." + name) is False
        assert cluster.sql1("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (APP,)) is False
        await client.alive()
    finally:
        await client.close()


async def test_the_functions_settings_do_not_outlive_it(cluster, app):
    """set_config(..., true) in the function ends with the call, in the
    worker's transaction and in has_permission's caller."""
    app({"presence.permission_function": APP + ".leaks"})
    owner, member = cluster.create_user(), cluster.create_user()
    sid = cluster.create_session(owner)
    client = await member.connect()
    try:
        await client.join(sid)
        with cluster.connect() as conn:
            conn.execute("BEGIN")
            conn.execute("SET LOCAL presence.permission_function = '%s.leaks'" % APP)
            assert conn.execute("SELECT presence.has_permission(%s, %s::uuid, 'view')",
                                (sid, member.id)).fetchone()[0] is True
            assert conn.execute("SHOW search_path").fetchone()[0] != "perm_app"
            conn.execute("ROLLBACK")
        # the worker still writes activity as itself, with its own search_path
        app({"presence.permission_function": APP + ".may"})
        grant(cluster, sid, member, "view", "comment")
        cluster.sql("SELECT presence.permissions_changed(%s)", (sid,))
        await after_notice(lambda: comment(client, sid), "ack")
    finally:
        await client.close()


async def test_a_function_calling_has_permission_denies(cluster, app):
    """Recursion into has_permission ends at the stack limit, denied, the
    worker unharmed."""
    app({"presence.permission_function": APP + ".recurses"})
    owner, member = cluster.create_user(), cluster.create_user()
    sid = cluster.create_session(owner)
    cluster.sql("GRANT USAGE ON SCHEMA presence TO perm_app")
    cluster.sql("GRANT EXECUTE ON FUNCTION presence.has_permission(text, uuid, text) TO perm_app")
    client = await member.connect()
    try:
        await client.error({"type": "session_join", "sessionId": sid}, "not_found")
        assert has_permission(cluster, sid, member, "view", APP + ".recurses") is False
        await client.alive()
    finally:
        await client.close()
        cluster.sql("REVOKE EXECUTE ON FUNCTION presence.has_permission(text, uuid, text) FROM perm_app")
        cluster.sql("REVOKE USAGE ON SCHEMA presence FROM perm_app")


def test_the_application_role_may_call_permissions_changed(cluster):
    cluster.sql("DROP ROLE IF EXISTS perm_grantee")
    cluster.sql("CREATE ROLE perm_grantee NOLOGIN")
    try:
        cluster.sql("SELECT presence.grant_application_role('perm_grantee')")
        assert cluster.sql1("SELECT has_function_privilege('perm_grantee', "
                            "'presence.permissions_changed(text, uuid)', 'EXECUTE')") is True
    finally:
        cluster.sql("DROP OWNED BY perm_grantee")
        cluster.sql("DROP ROLE perm_grantee")


@pytest.mark.parametrize("value, warning", [
    ("may", "is not a schema-qualified function name"),
    (APP + ".missing", "does not exist"),
    (APP + ".wrong", "must return a single boolean"),
])
async def test_a_bad_setting_denies_and_logs(cluster, app, value, warning):
    app({"presence.permission_function": value})
    owner, member = cluster.create_user(), cluster.create_user()
    sid = cluster.create_session(owner, participants=[(member, "operator")])
    offset = cluster.log_size()
    client = await member.connect()
    try:
        # a participant of the matrix is refused too: the setting fails closed
        await client.error({"type": "session_join", "sessionId": sid}, "not_found")
        wait_until(lambda: warning in cluster.log_since(offset), what="the warning in the log")
        await client.alive()
    finally:
        await client.close()
    await asyncio.sleep(QUIET)


async def test_a_member_who_only_heartbeats_loses_the_session_when_revoked(cluster, app):
    """Heartbeats are the only requests of a client that just watches: its
    view is asked again on them once the cached answer expires, or it
    would receive everyone's presence for as long as it stays connected."""
    app({"presence.permission_cache_ttl": "%dms" % int(1000 * SCALE)})
    sid, member, _, client, watcher = await member_and_watcher(cluster)
    try:
        # within the TTL a heartbeat keeps the cached answer
        await client.ok({"type": "heartbeat"}, "heartbeat_ack")
        revoke(cluster, sid, member, "view")
        await client.ok({"type": "heartbeat", "sessionId": sid}, "heartbeat_ack")
        await client.quiet(predicate=lambda m: m.get("type") == "session_removed")
        await asyncio.sleep(1.3 * SCALE)
        await client.send({"type": "heartbeat", "ref": "h"})
        await client.expect("session_removed", sessionId=sid)
        await watcher.event(sid, "leave", member.id)
        await watcher.ok({"type": "presence_update", "sessionId": sid, "status": "away"})
        # no longer sent the session's presence
        await client.quiet(predicate=lambda m: m.get("type") == "presence" and any(
            e["kind"] == "update" for e in m["events"]))
    finally:
        await close_all([client, watcher])


async def test_a_huge_error_is_logged_cut_at_a_character(cluster, app):
    """The worker keeps a bounded copy of the function's error: cut at a
    character, not inside one (the log stays valid UTF-8)."""
    app({"presence.permission_function": APP + ".shouts"})
    owner, member = cluster.create_user(), cluster.create_user()
    sid = cluster.create_session(owner)
    offset = cluster.log_size()
    client = await member.connect()
    try:
        await client.error({"type": "session_join", "sessionId": sid}, "not_found")
        wanted = "permission function %s.shouts denied view" % APP
        wait_until(lambda: wanted in cluster.log_since(offset), what="the warning in the log")
        with open(cluster.log_path, "rb") as f:
            f.seek(offset)
            line = next(l for l in f.read().splitlines() if wanted.encode() in l)
        text = line.decode("utf-8")
        assert "éééé" in text and len(text) < 1000, text
        await client.alive()
    finally:
        await client.close()


@pytest.mark.parametrize("how", ["raises", "cancelled"])
async def test_the_worker_is_itself_again_after_a_failed_call(cluster, app, how):
    """After the function raised, or the worker was cancelled in the middle
    of it, the worker's next transactions run as the worker again (the
    application's role may not write the log) with its own bounds."""
    app({"presence.permission_function": APP + (".raises" if how == "raises" else ".sleeps"),
         "presence.permission_function_timeout": "5s"})
    owner, member = cluster.create_user(), cluster.create_user()
    sid = cluster.create_session(owner)
    client = await member.connect()
    try:
        await client.send({"type": "session_join", "sessionId": sid, "ref": "j"})
        if how == "cancelled":
            wait_until(lambda: cluster.sql1("SELECT count(*) FROM pg_stat_activity "
                                            "WHERE backend_type = 'presence ws worker' "
                                            "AND wait_event = 'PgSleep'") == 1, what="the call in progress")
            cluster.sql("SELECT pg_cancel_backend(pid) FROM pg_stat_activity "
                        "WHERE backend_type = 'presence ws worker'")
        reply = await client.expect(predicate=lambda m: m.get("ref") == "j")
        assert reply["type"] == "error" and reply["code"] == "not_found", reply
        app({"presence.permission_function": FUNCTION})
        grant(cluster, sid, member, "view", "comment")
        await client.join(sid)
        activity = (await client.ok({"type": "activity", "sessionId": sid, "activityType": "comment",
                                     "details": {}}))["activityId"]
        wait_until(lambda: cluster.sql1("SELECT count(*) FROM presence.activity_log WHERE id::text = %s",
                                        (str(activity),)) == 1, what="the comment in the log")
    finally:
        await client.close()


async def test_a_failing_function_does_not_remove_joined_members(cluster, app):
    """A timeout is no answer: the request it decided is refused, but a
    joined member is removed only when the function says no, not because
    it was slow for a while (or every watcher would be dropped at its next
    heartbeat)."""
    app({"presence.permission_function": APP + ".flaky",
         "presence.permission_cache_ttl": "%dms" % int(1000 * SCALE)})
    owner, member, other = cluster.create_user(), cluster.create_user(), cluster.create_user()
    sid = cluster.create_session(owner)
    client, watcher = await member.connect(), await other.connect()
    try:
        await client.join(sid)
        await watcher.join(sid)
        cluster.sql("INSERT INTO perm_app.slow VALUES (1)")
        await asyncio.sleep(1.3 * SCALE)
        await client.ok({"type": "heartbeat", "sessionId": sid}, "heartbeat_ack")
        reply = await watcher.request({"type": "presence_update", "sessionId": sid, "status": "away"})
        assert reply["type"] == "error" and reply["code"] == "forbidden", reply
        await client.quiet(predicate=lambda m: m.get("type") == "session_removed")
        await watcher.quiet(predicate=lambda m: m.get("type") == "session_removed")
        cluster.sql("DELETE FROM perm_app.slow")
        deadline = time.monotonic() + WAIT
        while (await watcher.request({"type": "presence_update", "sessionId": sid,
                                      "status": "away"}))["type"] != "ack":
            assert time.monotonic() < deadline, "the function never answered again"
            await asyncio.sleep(0.2)
        await client.event(sid, "update", other.id)
    finally:
        await close_all([client, watcher])


async def test_a_revoked_view_ends_the_presence_in_the_log_with_its_cause(cluster, app):
    """A user the function no longer lets view leaves the session: the log
    must say so, and why, or present_at would show them present (and the
    audit trail a plain leave) while the worker has removed them."""
    sid, member, other, client, watcher = await member_and_watcher(cluster)
    try:
        revoke(cluster, sid, member, "view")
        cluster.sql("SELECT presence.permissions_changed(%s, %s::uuid)", (sid, member.id))
        await client.expect("session_removed", sessionId=sid)
        await watcher.event(sid, "leave", member.id)
        # a refused join logs nothing
        await client.error({"type": "session_join", "sessionId": sid}, "not_found")

        def ended():
            return cluster.sql("SELECT status_after, cause FROM presence.presence_timeline(%s, '-infinity', now())"
                               " WHERE user_id = %s::uuid ORDER BY at", (sid, member.id))
        wait_until(lambda: len(ended()) == 2, what="the member's removal logged")
        assert ended() == [("online", "join"), ("offline", "permission_revoked")]
        present = [r[0] for r in cluster.sql("SELECT user_id::text FROM presence.present_at(%s, now())", (sid,))]
        assert present == [other.id]
        assert cluster.sql("SELECT details FROM presence.activity_log WHERE session_id = "
                           "(SELECT id FROM presence.collaboration_sessions WHERE session_id = %s)"
                           " AND user_id = %s::uuid AND activity_type = 'user_left'",
                           (sid, member.id)) == [({"cause": "permission_revoked"},)]
    finally:
        await close_all([client, watcher])


async def test_remove_participant_ends_the_presence_once(cluster, user):
    """remove_participant logs participant_removed and the worker the
    user_left of the connection it closes: one end in the replay."""
    owner, member = user(), user()
    sid = cluster.create_session(owner, participants=[(member, "viewer")])
    client, watcher = await member.connect(), await owner.connect()
    try:
        await client.join(sid)
        await watcher.join(sid)
        cluster.sql("SELECT presence.remove_participant(%s, %s::uuid)", (sid, member.id))
        await client.expect("session_removed", sessionId=sid)
        await watcher.event(sid, "leave", member.id)
        wait_until(lambda: cluster.sql1(
            "SELECT count(*) FROM presence.activity_log WHERE activity_type = 'user_left' AND user_id = %s::uuid",
            (member.id,)) == 1, what="the worker's user_left")
        assert cluster.sql("SELECT status_after, cause FROM presence.presence_timeline(%s, '-infinity', now())"
                           " WHERE user_id = %s::uuid ORDER BY at", (sid, member.id)) == [
            ("online", "join"), ("offline", "removed")]
        assert cluster.sql1("SELECT details FROM presence.activity_log WHERE activity_type = 'user_left'"
                            " AND user_id = %s::uuid", (member.id,)) == {"cause": "removed"}
    finally:
        await close_all([client, watcher])


def test_the_application_role_cannot_forge_audit_rows(cluster, app):
    """The permission function runs as its owner, an application role: with
    what grant_application_role gives it, it can write neither the log nor
    the checkpoints directly (the chain and the signatures would be the
    worker's word otherwise)."""
    cluster.sql("SELECT presence.grant_application_role('perm_app')")
    try:
        for table in ("presence.activity_log", "presence.audit_checkpoints", "presence.audit_chain_anchors"):
            for privilege in ("INSERT", "UPDATE", "DELETE", "TRUNCATE"):
                assert cluster.sql1("SELECT has_table_privilege('perm_app', %s, %s)", (table, privilege)) is False, \
                    (table, privilege)
        assert cluster.sql1("SELECT has_function_privilege('perm_app', 'presence.audit_checkpoint(text)', "
                            "'EXECUTE')") is False
    finally:
        cluster.sql("DROP OWNED BY perm_app")
