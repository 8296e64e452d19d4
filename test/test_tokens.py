"""presence.issue_token() checked by an independent JWT library (PyJWT).

A throwaway cluster without a WebSocket worker (test/cluster.sh, WSPORT
0) issues tokens; PyJWT verifies their HS256 signature with the cluster's
secret and reads the claims.  Also: a wrong secret or an edited token
fails, ttl is validated, presence.jwt_audience (set and reloaded) becomes
the aud claim, presence.jwt_issuer the iss and presence.jwt_user_id_claim
carries the user id too, an empty secret or presence.jwt_algorithms
without HS256 refuses to sign, PUBLIC may not call it.

    /usr/bin/python3 -m pytest test/test_tokens.py

Needs the extension installed (make install); runs as root or as the
owner of the PostgreSQL installation.
"""

import os
import socket
import subprocess
import tempfile
import time
import uuid

import jwt
import psycopg
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
CLUSTER_SH = os.path.join(HERE, "cluster.sh")
SECRET = "test-secret-0123456789abcdef0123456789"  # what cluster.sh configures
AUDIENCE = "presence-token-tests"


def free_port():
    """A free TCP port below the ephemeral range."""
    for port in range(21000 + os.getpid() % 4000, 29000):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


class TokenCluster:
    """A cluster of test/cluster.sh, and SQL on fresh connections to it."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="presence-tokens-")
        self.port = free_port()
        self.run("start", str(self.port), "0")

    def run(self, command, *args):
        subprocess.run([CLUSTER_SH, command, self.dir, *args], check=True,
                       stdout=subprocess.DEVNULL)

    def connect(self):
        return psycopg.connect(host=self.dir, port=self.port, user="postgres",
                               dbname="presence", autocommit=True)

    def sql(self, query, *params):
        with self.connect() as conn:
            return conn.execute(query, params).fetchone()

    def reload(self, **gucs):
        """Sets presence.* GUCs, reloads, and waits until new sessions see them."""
        self.run("set", *("presence.%s=%s" % item for item in gucs.items()))
        self.run("reload")
        deadline = time.monotonic() + 10
        while True:
            seen = {name: self.sql("SELECT current_setting(%s)", "presence." + name)[0]
                    for name in gucs}
            if seen == gucs:
                return
            if time.monotonic() > deadline:
                raise AssertionError("reload not applied: %r" % seen)
            time.sleep(0.05)

    def destroy(self):
        self.run("destroy")


@pytest.fixture(scope="module")
def token_cluster(request):
    cluster = TokenCluster()
    request.addfinalizer(cluster.destroy)
    return cluster


@pytest.fixture
def user(token_cluster):
    """A user in presence.users: (id, username)."""
    user_id = str(uuid.uuid4())
    username = "tok-" + user_id[:8]
    token_cluster.sql("INSERT INTO presence.users (id, username) VALUES (%s, %s) RETURNING id",
                      user_id, username)
    return user_id, username


def issue(cluster, *args):
    placeholders = ", ".join(["%s"] * len(args))
    return cluster.sql("SELECT presence.issue_token(%s)" % placeholders, *args)[0]


def decode(token, key=SECRET, **options):
    return jwt.decode(token, key, algorithms=["HS256"],
                      options={"require": ["exp", "iat", "sub"]}, **options)


def test_token_verifies_and_carries_the_claims(token_cluster, user):
    user_id, username = user
    before = int(time.time())
    token = issue(token_cluster, user_id, "10 minutes")
    after = int(time.time())

    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}
    claims = decode(token)
    assert claims["sub"] == user_id
    assert claims["name"] == username
    assert claims["iss"] == "presence"
    assert before - 1 <= claims["iat"] <= after + 1
    assert claims["exp"] - claims["iat"] == 600
    assert "aud" not in claims


def test_default_ttl_is_one_hour(token_cluster, user):
    claims = decode(issue(token_cluster, user[0]))
    assert claims["exp"] - claims["iat"] == 3600


def test_username_argument_names_the_token(token_cluster, user):
    claims = decode(issue(token_cluster, user[0], "1 hour", "Ann Example"))
    assert claims["name"] == "Ann Example"


def test_unknown_user_gets_a_token_without_name(token_cluster):
    user_id = str(uuid.uuid4())
    claims = decode(issue(token_cluster, user_id))
    assert claims["sub"] == user_id
    assert "name" not in claims


def test_wrong_secret_fails(token_cluster, user):
    token = issue(token_cluster, user[0])
    with pytest.raises(jwt.InvalidSignatureError):
        decode(token, key="not-the-secret-0123456789abcdef0123")
    with pytest.raises(jwt.InvalidSignatureError):
        decode(token, key=SECRET[:-1])


def test_edited_token_fails(token_cluster, user):
    header, payload, signature = issue(token_cluster, user[0]).split(".")
    other = issue(token_cluster, str(uuid.uuid4())).split(".")[1]
    with pytest.raises(jwt.InvalidSignatureError):
        decode(".".join([header, other, signature]))


def test_expired_token_is_refused(token_cluster, user):
    token = issue(token_cluster, user[0], "1 second")
    time.sleep(2.1)
    with pytest.raises(jwt.ExpiredSignatureError):
        decode(token)


@pytest.mark.parametrize("ttl", ["0", "-1 hour", "0.5 seconds", "367 days", "13 months",
                                 "1 day -25 hours"])
def test_ttl_out_of_range_is_refused(token_cluster, user, ttl):
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="ttl must be between"):
        issue(token_cluster, user[0], ttl)


def test_ttl_limits(token_cluster, user):
    for ttl, seconds in [("1 second", 1), ("366 days", 366 * 86400), ("12 months", 360 * 86400)]:
        claims = decode(issue(token_cluster, user[0], ttl))
        assert claims["exp"] - claims["iat"] == seconds


def test_null_arguments_are_refused(token_cluster, user):
    with pytest.raises(psycopg.errors.NullValueNotAllowed):
        issue(token_cluster, None)
    with pytest.raises(psycopg.errors.NullValueNotAllowed):
        issue(token_cluster, user[0], None)


def test_bad_usernames_are_refused(token_cluster, user):
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        issue(token_cluster, user[0], "1 hour", "")
    with pytest.raises(psycopg.errors.StringDataRightTruncation):
        issue(token_cluster, user[0], "1 hour", "n" * 256)


def test_audience_from_the_setting(token_cluster, user):
    token_cluster.reload(jwt_audience=AUDIENCE)
    try:
        token = issue(token_cluster, user[0])
        claims = decode(token, audience=AUDIENCE)
        assert claims["aud"] == AUDIENCE
        with pytest.raises(jwt.InvalidAudienceError):
            decode(token, audience="someone-else")
        with pytest.raises(jwt.InvalidAudienceError):
            decode(token)
    finally:
        token_cluster.reload(jwt_audience="")
    assert "aud" not in decode(issue(token_cluster, user[0]))


def test_issuer_and_user_id_claim_from_the_settings(token_cluster, user):
    # an identity provider's settings: the issued token still passes the workers' checks
    token_cluster.reload(jwt_issuer="https://idp.example", jwt_user_id_claim="https://example.com/user_id",
                         jwt_algorithms="HS256, RS256")
    try:
        claims = decode(issue(token_cluster, user[0]), issuer="https://idp.example")
        assert claims["sub"] == user[0] and claims["https://example.com/user_id"] == user[0]
    finally:
        token_cluster.reload(jwt_issuer="", jwt_user_id_claim="sub", jwt_algorithms="HS256")
    claims = decode(issue(token_cluster, user[0]))
    assert claims["iss"] == "presence" and "https://example.com/user_id" not in claims


def test_without_hs256_refuses_to_sign(token_cluster, user):
    # the workers would refuse an HS256 token: issue_token says so instead
    token_cluster.reload(jwt_algorithms="RS256,EdDSA")
    try:
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState,
                           match="jwt_algorithms does not allow HS256"):
            issue(token_cluster, user[0])
    finally:
        token_cluster.reload(jwt_algorithms="HS256")
    decode(issue(token_cluster, user[0]))


def test_empty_secret_refuses_to_sign(token_cluster, user):
    token_cluster.reload(jwt_secret="")
    try:
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState,
                           match="jwt_secret is not set"):
            issue(token_cluster, user[0])
    finally:
        token_cluster.reload(jwt_secret=SECRET)
    decode(issue(token_cluster, user[0]))


def test_public_may_not_issue_tokens(token_cluster, user):
    role = "tok_plain_%d" % os.getpid()
    with token_cluster.connect() as conn:
        conn.execute('CREATE ROLE "%s"' % role)
        try:
            conn.execute('SET ROLE "%s"' % role)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT presence.issue_token(%s)", (user[0],))
        finally:
            conn.execute("RESET ROLE")
            conn.execute('DROP ROLE "%s"' % role)
