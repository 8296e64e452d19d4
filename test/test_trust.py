"""Trust boundaries (issue 9): a role that can create objects in public
gains nothing from the workers' superuser queries; bytes from the network
are made safe before they are stored; a taken name never locks a user
out; /healthz and /metrics can be kept private."""

import io

import websockets
from websockets.legacy.client import WebSocketClientProtocol

from conftest import SCALE, WAIT, Client, make_token, wait_until
from test_scaleout import BOB, joined_client, new_session, run, world  # noqa: F401 (world: a fixture)

# Exact-match overloads of what the workers' queries call, planted in
# public by an unprivileged role: each would make that role a superuser
# and leave a mark if a worker ever ran it.
TRAPS = """
CREATE TABLE public.trap_calls (name text, at timestamptz DEFAULT clock_timestamp());
GRANT INSERT ON public.trap_calls TO PUBLIC;
CREATE FUNCTION public.trap(name text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.trap_calls (name) VALUES (name);
    EXECUTE 'ALTER ROLE mallory SUPERUSER';
END $$;
CREATE FUNCTION public.make_interval(secs int) RETURNS interval LANGUAGE plpgsql AS $$
BEGIN PERFORM public.trap('make_interval'); RETURN interval '1 second' * secs; END $$;
CREATE FUNCTION public.jsonb_build_object(text, int) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN PERFORM public.trap('jsonb_build_object'); RETURN '{}'; END $$;
CREATE FUNCTION public.to_timestamp(int) RETURNS timestamptz LANGUAGE plpgsql AS $$
BEGIN PERFORM public.trap('to_timestamp'); RETURN now(); END $$;
CREATE FUNCTION public.unnest(text[], uuid[], text[], jsonb[], inet[], text[], timestamptz[])
RETURNS SETOF record LANGUAGE plpgsql AS $$
BEGIN PERFORM public.trap('unnest'); END $$;
CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE plpgsql AS $$
BEGIN PERFORM public.trap('now'); RETURN pg_catalog.now(); END $$;
CREATE FUNCTION public.trap_eq(text, varchar) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN PERFORM public.trap('= (text, varchar)'); RETURN $1 = $2::text; END $$;
CREATE OPERATOR public.= (LEFTARG = text, RIGHTARG = varchar, FUNCTION = public.trap_eq);
CREATE FUNCTION public.trap_uuid_eq(uuid, text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN PERFORM public.trap('= (uuid, text)'); RETURN $1::text = $2; END $$;
CREATE OPERATOR public.= (LEFTARG = uuid, RIGHTARG = text, FUNCTION = public.trap_uuid_eq);
"""


def plant_traps(cluster):
    cluster.sql("CREATE ROLE mallory LOGIN")
    # PostgreSQL 14 and earlier gave this to everyone; on 15 a database owner has it
    cluster.sql("GRANT CREATE ON SCHEMA public TO mallory")
    with cluster.connect() as conn:
        conn.execute("SET ROLE mallory")
        conn.execute(TRAPS)


def assert_not_sprung(cluster):
    assert cluster.sql1("SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'") is False
    assert cluster.sql("SELECT name FROM public.trap_calls") == []


async def test_objects_planted_in_public_never_run_as_the_worker(fresh_cluster):
    c = fresh_cluster({"presence.session_timeout": "2s", "presence.log_flush_interval": "100ms"})
    plant_traps(c)
    # every path of the ws worker: authentication that adds the user, join,
    # activity batches (with and without ref), session create and end
    owner = c.create_user()
    newcomer_id = "d00d0000-0000-4000-8000-0000000000aa"
    sid = c.create_session(owner)
    client = await Client.open(c, token=make_token(newcomer_id, name="newcomer"))
    await client.expect("welcome")
    owner_client = await owner.connect()
    await owner_client.join(sid)
    for i in range(5):
        await owner_client.send({"type": "activity", "sessionId": sid, "activityType": "under.trap",
                                 "details": {"i": i}})
    await owner_client.ok({"type": "activity", "sessionId": sid, "activityType": "under.trap"})
    created = await owner_client.ok({"type": "session_create", "objective": "trap"}, "session_created")
    await owner_client.join(created["session"]["sessionId"])
    await owner_client.ok({"type": "session_end", "sessionId": created["session"]["sessionId"]})
    await client.close()
    await owner_client.close()
    assert c.sql1("SELECT status FROM presence.collaboration_sessions WHERE session_id = %s",
                  (created["session"]["sessionId"],)) == "completed"
    assert len(c.activity_rows(sid, "under.trap")) == 6
    # the maintenance worker: the idle session expires, then retention purges
    wait_until(lambda: c.sql1("SELECT status FROM presence.collaboration_sessions WHERE session_id = %s",
                              (sid,)) == "inactive", timeout=WAIT + 5 * SCALE, what="the session's expiry")
    c.reload({"presence.activity_retention": "1s"})
    wait_until(lambda: not c.activity_rows(sid, "under.trap"), timeout=WAIT + 5 * SCALE, what="the purge")
    assert_not_sprung(c)


class RawHeaderProtocol(WebSocketClientProtocol):
    """Sends header values as bytes: str characters U+DC80..U+DCFF
    (surrogateescape) go out as the single bytes 0x80..0xFF."""

    def write_http_request(self, path, headers):
        self.path = path
        self.request_headers = headers
        self.transport.write(("GET %s HTTP/1.1\r\n%s" % (path, headers)).encode("utf-8", "surrogateescape"))


async def test_invalid_bytes_in_headers_are_repaired_and_the_log_restores(cluster, user):
    a = user()
    sid = cluster.create_session(a)
    agent = "bad \udcff\udcfe agent \udcc3( ok \u00e9 \udce2\udc82 end"
    ws = await websockets.connect(cluster.ws_url, create_protocol=RawHeaderProtocol,
                                  extra_headers={"Authorization": "Bearer " + a.token()},
                                  user_agent_header=agent + "x" * 400, compression=None, open_timeout=WAIT)
    client = Client(ws)
    await client.expect("welcome")
    await client.join(sid)
    await client.ok({"type": "activity", "sessionId": sid, "activityType": "odd.agent"})
    await client.close()
    stored = cluster.sql1("SELECT a.user_agent FROM presence.activity_log a JOIN presence.collaboration_sessions s"
                          " ON s.id = a.session_id WHERE s.session_id = %s AND a.activity_type = 'odd.agent'",
                          (sid,))
    assert stored.startswith("bad \ufffd\ufffd agent \ufffd( ok \u00e9 \ufffd\ufffd end"), stored
    assert len(stored.encode()) <= 255
    # what pg_dump and a restore do with the log
    with cluster.connect() as conn:
        buffer = io.BytesIO()
        with conn.cursor().copy("COPY presence.activity_log TO STDOUT") as copy:
            for data in copy:
                buffer.write(data)
        conn.execute("CREATE TEMP TABLE restored (LIKE presence.activity_log)")
        with conn.cursor().copy("COPY restored FROM STDIN") as copy:
            copy.write(buffer.getvalue())
        assert conn.execute("SELECT count(*) FROM restored").fetchone()[0] == \
            conn.execute("SELECT count(*) FROM presence.activity_log").fetchone()[0]


async def test_a_taken_name_never_locks_a_new_user_out(cluster):
    new_id = "abcd1234-0000-4000-8000-0000000000bb"
    cluster.sql("INSERT INTO presence.users (username) VALUES ('vera'), ('vera #abcd1234')")
    client = await Client.open(cluster, token=make_token(new_id, name="vera"))
    welcome = await client.expect("welcome")
    await client.close()
    assert cluster.sql1("SELECT username FROM presence.users WHERE id = %s", (new_id,)) == \
        "vera #abcd12340000400080000000000000bb"
    assert welcome["userId"] == new_id, welcome


def test_monitoring_behind_a_token(cluster, gucs):
    gucs({"presence.metrics_token": "s3cret-metrics-token"})
    for path in ("/metrics", "/healthz"):
        assert cluster.http("GET", path)[0] == 401
        assert cluster.http("GET", path, {"Authorization": "Bearer wrong-token-of-same-len"})[0] == 401
        assert cluster.http("GET", path, {"Authorization": "Bearer s3cret-metrics-token"})[0] == 200
    gucs({"presence.metrics_token": "", "presence.metrics_loopback_only": "on"})
    # these tests reach the server over loopback only, so this is the allowed side
    assert cluster.http("GET", "/metrics")[0] == 200


def test_objects_planted_in_public_never_run_for_a_standby(world):
    """A standby's writes run on the primary through libpq: the link pins
    the same search path (and it is a superuser connection too)."""
    primary, standby, _ = world
    primary.sql("CREATE ROLE mallory LOGIN")
    primary.sql("GRANT CREATE ON SCHEMA public TO mallory")
    primary.sql("SET ROLE mallory; " + TRAPS)
    session_id = new_session(primary, standby, BOB)
    newcomer = "d00d0000-0000-4000-8000-0000000000dd"

    async def scenario():
        bob = await joined_client(standby, BOB, session_id)
        for i in range(3):
            reply = await bob.request({"type": "activity", "sessionId": session_id, "activityType": "via.standby"})
            assert reply["type"] == "ack", reply
        # a user the standby's link adds on the primary
        stranger = websockets.connect("ws://127.0.0.1:%d/ws" % standby.wsport, compression=None,
                                      extra_headers={"Authorization": "Bearer " + make_token(newcomer, name="nova")})
        async with stranger as ws:
            welcome = await ws.recv()
            assert '"welcome"' in welcome, welcome
        await bob.close()
    run(scenario())
    assert primary.sql("SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'") == "f"
    assert primary.sql("SELECT count(*) FROM public.trap_calls") == "0"
    assert primary.sql(f"SELECT count(*) FROM presence.users WHERE id = '{newcomer}'") == "1"
