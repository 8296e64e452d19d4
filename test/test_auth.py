"""Authentication (PROTOCOL.md, "Authentication"): header and first-message
tokens, welcome, every way a token can be wrong, the auth timeout."""

import time
import uuid

import pytest

from conftest import QUIET, WAIT, hs_sign, make_token, raw_connect, unsigned_token


def check_welcome(welcome, user, username=None):
    assert welcome["type"] == "welcome"
    assert welcome["protocol"] == 1
    assert welcome["userId"] == user.id
    assert welcome["username"] == (username or user.name)
    assert isinstance(welcome["connectionId"], str) and welcome["connectionId"]
    assert welcome["heartbeatInterval"] == 30000  # presence.heartbeat_interval of the main cluster
    assert abs(welcome["serverTime"] - time.time() * 1000) < 60000
    assert "ref" not in welcome


async def test_header_auth_gets_welcome(cluster, user):
    a = user()
    client = await raw_connect(cluster, token=a.token())
    check_welcome(await client.expect("welcome"), a)
    await client.alive()
    await client.close()


async def test_first_message_auth_gets_welcome_with_ref(cluster, user):
    a = user()
    client = await raw_connect(cluster)
    await client.send({"type": "auth", "token": a.token(), "ref": 7})
    welcome = await client.expect("welcome")
    assert welcome.pop("ref") == 7
    check_welcome(welcome, a)
    await client.alive()
    await client.close()


async def test_connection_ids_differ(cluster, user):
    a = user()
    one = await raw_connect(cluster, token=a.token())
    two = await raw_connect(cluster, token=a.token())
    assert (await one.expect("welcome"))["connectionId"] != (await two.expect("welcome"))["connectionId"]
    await one.close()
    await two.close()


async def test_token_issued_by_sql_works(cluster, user):
    a = user()
    token = cluster.sql1("SELECT presence.issue_token(%s::uuid, '10 minutes')", (a.id,))
    client = await raw_connect(cluster)
    await client.send({"type": "auth", "token": token})
    welcome = await client.expect("welcome")
    assert welcome["userId"] == a.id and welcome["username"] == a.name
    await client.close()


async def test_display_name_from_claims_then_table(cluster, user):
    a = user()
    # name wins, then preferred_username, then presence.users.username
    for claims, expected in (({"name": "Ada"}, "Ada"),
                             ({"name": None, "preferred_username": "ada.l"}, "ada.l"),
                             ({"name": None}, a.name)):
        client = await raw_connect(cluster, token=make_token(a.id, **claims))
        assert (await client.expect("welcome"))["username"] == expected
        await client.close()


async def test_unknown_user_is_created(cluster):
    uid = str(uuid.uuid4())
    client = await raw_connect(cluster, token=make_token(uid, name="newcomer-" + uid[:8]))
    welcome = await client.expect("welcome")
    assert welcome["userId"] == uid
    assert cluster.sql1("SELECT username FROM presence.users WHERE id = %s", (uid,)) == "newcomer-" + uid[:8]
    await client.close()


async def test_uppercase_subject_is_canonical(cluster, user):
    a = user()
    client = await raw_connect(cluster, token=make_token(a.id.upper()))
    assert (await client.expect("welcome"))["userId"] == a.id
    await client.close()


async def test_second_auth_is_bad_request(cluster, user):
    a = user()
    client = await a.connect()
    await client.error({"type": "auth", "token": a.token()}, "bad_request")
    await client.alive()
    await client.close()


def bad_tokens(sub):
    now = int(time.time())
    return {
        "alg none": unsigned_token(sub, "none"),
        "alg HS512": make_token(sub, algorithm="HS512"),
        "alg HS256 without signature": unsigned_token(sub, "HS256"),
        "wrong secret": make_token(sub, secret="another-secret-0123456789abcdef01234"),
        "expired": make_token(sub, exp=now - 3600),
        "nbf in the future": make_token(sub, nbf=now + 3600),
        "iat in the future": make_token(sub, iat=now + 3600),
        "no exp": make_token(sub, exp=None),
        "exp not a number": make_token(sub, exp="tomorrow"),
        "missing sub": make_token(None),
        "sub not a uuid": make_token("alice"),
        "sub not a string": hs_sign({"alg": "HS256"}, {"sub": 42, "exp": now + 60}),
        "garbage": "garbage",
        "two parts": "abc.def",
        "four parts": make_token(sub) + ".x",
        "not base64": "%%%.%%%.%%%",
        "header not json": "bm90IGpzb24." + make_token(sub).split(".", 1)[1],
        "header is an array": "WzEsMl0." + make_token(sub).split(".", 1)[1],
        "crit header": hs_sign({"alg": "HS256", "crit": ["exp"]}, {"sub": sub, "exp": now + 60}),
        "long signature": make_token(sub) + "A" * 3000,
        "long token": "a" * 3000,
        "empty": "",
    }


@pytest.mark.parametrize("case", sorted(bad_tokens("x")))
async def test_bad_token_in_message_closes_4001(cluster, user, case):
    a = user()
    token = bad_tokens(a.id)[case]
    client = await raw_connect(cluster)
    await client.send({"type": "auth", "token": token})
    code, reason = await client.closed()
    assert code == 4001, (code, reason)
    assert not [m for m in client.inbox if m.get("type") == "welcome"]
    if len(token) > 8:
        assert token not in reason and token[:20] not in reason


@pytest.mark.parametrize("case", ["alg none", "wrong secret", "expired", "nbf in the future",
                                  "missing sub", "garbage", "long signature"])
async def test_bad_token_in_header_closes_4001(cluster, user, case):
    a = user()
    token = bad_tokens(a.id)[case]
    client = await raw_connect(cluster, token=token)
    code, reason = await client.closed()
    assert code == 4001, (code, reason)
    assert token[:20] not in reason


async def test_non_bearer_authorization_closes_4001(cluster, user):
    a = user()
    client = await raw_connect(cluster, headers={"Authorization": "Basic " + a.token()})
    code, _ = await client.closed()
    assert code == 4001


async def test_leeway_accepts_slightly_expired_token(cluster, user):
    a = user()
    client = await raw_connect(cluster, token=make_token(a.id, exp=int(time.time()) - 5))
    await client.expect("welcome")
    await client.close()


@pytest.mark.parametrize("first", [
    {"type": "heartbeat"},
    {"type": "session_join", "sessionId": "s1"},
    {"type": "nonsense"},
    {"type": "auth"},
    {"type": "auth", "token": 12},
    "not json",
    "[]",
])
async def test_anything_before_auth_closes_4001(cluster, first):
    client = await raw_connect(cluster)
    await client.send(first)
    code, _ = await client.closed()
    assert code == 4001
    assert not client.inbox


async def test_audience(cluster, user, gucs):
    a = user()
    gucs({"presence.jwt_audience": "presence-tests"})
    for claims, accepted in (({"aud": "presence-tests"}, True),
                             ({"aud": ["other", "presence-tests"]}, True),
                             ({"aud": "other"}, False),
                             ({}, False)):
        client = await raw_connect(cluster, token=a.token(**claims))
        if accepted:
            await client.expect("welcome")
            await client.close()
        else:
            assert (await client.closed())[0] == 4001, claims


async def test_auth_timeout_closes_4008(cluster, timing):
    client = await raw_connect(cluster)
    code, _ = await client.closed()
    assert code == 4008
    assert not client.inbox


async def test_authenticated_client_is_not_closed_by_auth_timeout(cluster, user, timing):
    a = user()
    client = await a.connect()
    await client.quiet(3 * QUIET + 1.5)  # past presence.auth_timeout (1 s)
    await client.alive()
    await client.close()


async def test_token_expiry_closes_4001(cluster, user, gucs):
    gucs({"presence.jwt_leeway": "0"})
    a = user()
    client = await raw_connect(cluster, token=a.token(ttl=2))
    await client.expect("welcome")
    code, reason = await client.closed(timeout=WAIT + 3)
    assert code == 4001 and "expired" in reason


async def test_user_id_in_messages_is_ignored(cluster, user):
    a, b = user(), user()
    sid = cluster.create_session(b, participants=[(a, "operator")])
    client = await a.connect()
    joined = await client.join(sid, userId=b.id)
    assert [u["userId"] for u in joined["users"]] == [a.id]
    reply = await client.ok({"type": "activity", "sessionId": sid, "activityType": "note", "userId": b.id})
    assert cluster.sql1("SELECT user_id::text FROM presence.activity_log WHERE id = %s",
                        (reply["activityId"],)) == a.id
    await client.close()


async def test_without_auto_create_unknown_user_is_refused(cluster, gucs):
    gucs({"presence.auto_create_users": "off"})
    client = await raw_connect(cluster, token=make_token(str(uuid.uuid4())))
    assert (await client.closed())[0] == 4001

