"""Tokens of an identity provider (docs/protocol.md, "Authentication"):
RS256, ES256 and EdDSA as well as HS256, public keys from
presence.jwt_public_keys_file (a JWKS document or PEM), kid choosing the
key, presence.jwt_algorithms, jwt_issuer and jwt_user_id_claim; every
refusal closes with 4001 and its reason; the keys file is read again on
reload, and a broken one keeps the keys in use.

Keys are made here (RSA 2048, EC P-256, Ed25519) and tokens signed with
PyJWT (python3-jwt, python3-cryptography).  The module has a cluster of
its own, so that its settings never leak into other modules' tests.
"""

import asyncio
import json
import os
import time

import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from conftest import (BASE_GUCS, SECRET, WAIT, Closed, Cluster, hs_sign, make_token, raw_connect, run_async,
                      unsigned_token)

ISSUER = "https://idp.example"
ALL_ALGORITHMS = "HS256, RS256, ES256, EdDSA"


class Key:
    """A private key of an identity provider, its kid and its algorithm."""

    def __init__(self, private, algorithm, kid):
        self.private = private
        self.algorithm = algorithm
        self.kid = kid

    def public_pem(self):
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    def jwk(self):
        to_jwk = {"RS256": RSAAlgorithm, "ES256": ECAlgorithm, "EdDSA": OKPAlgorithm}[self.algorithm].to_jwk
        return dict(json.loads(to_jwk(self.private.public_key())), kid=self.kid, use="sig", alg=self.algorithm)

    def sign(self, sub, kid=None, ttl=3600, **claims):
        """A token for sub; kid defaults to the key's own, "" leaves it out."""
        now = int(time.time())
        payload = {k: v for k, v in dict({"sub": sub, "exp": now + ttl, "iat": now}, **claims).items()
                   if v is not None}
        kid = self.kid if kid is None else kid
        return jwt.encode(payload, self.private, algorithm=self.algorithm, headers={"kid": kid} if kid else None)


def jwks(*keys, extra=()):
    return json.dumps({"keys": [k.jwk() for k in keys] + list(extra)}, indent=1)


@pytest.fixture(scope="module")
def keys():
    return {
        "rsa": Key(rsa.generate_private_key(65537, 2048), "RS256", "rsa-1"),
        "rsa2": Key(rsa.generate_private_key(65537, 2048), "RS256", "rsa-2"),
        "ec": Key(ec.generate_private_key(ec.SECP256R1()), "ES256", "ec-1"),
        "ed": Key(ed25519.Ed25519PrivateKey.generate(), "EdDSA", "ed-1"),
        # the key of someone else: never in the file
        "stranger": Key(rsa.generate_private_key(65537, 2048), "RS256", "rsa-1"),
    }


def standard_files(keys):
    """The keys files as the tests expect them: a JWKS (with keys to skip) and PEM."""
    encryption_key = dict(keys["rsa2"].jwk(), kid="enc-1", use="enc", alg="RSA-OAEP")
    return {
        "keys.json": jwks(keys["rsa"], keys["rsa2"], keys["ec"], keys["ed"],
                          extra=[encryption_key, {"kty": "oct", "kid": "oct-1", "k": "c2VjcmV0"}]),
        "keys.pem": "".join(keys[name].public_pem() for name in ("rsa", "ec", "ed")),
    }


def write_file(cluster, name, text):
    """Writes a file the postgres user can read, atomically (the worker may read it at any reload)."""
    path = os.path.join(cluster.dir, name)
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.chmod(path + ".tmp", 0o644)
    os.replace(path + ".tmp", path)
    return path


def standard_settings(cluster):
    return {
        "presence.jwt_algorithms": ALL_ALGORITHMS,
        "presence.jwt_public_keys_file": os.path.join(cluster.dir, "keys.json"),
        "presence.jwt_issuer": "",
        "presence.jwt_user_id_claim": "sub",
        "presence.jwt_secret": SECRET,
    }


@pytest.fixture(scope="module")
def cluster(keys):
    """This module's cluster, with every algorithm allowed and the JWKS file loaded."""
    c = Cluster(name="presence-jwt-")
    try:
        for name, text in standard_files(keys).items():
            write_file(c, name, text)
        c.start(BASE_GUCS)
        c.reload(standard_settings(c))
        yield c
    finally:
        c.destroy()


async def outcome(cluster, token, channel="message"):
    """One attempt: ("welcome", userId), or the close code and reason."""
    if channel == "header":
        client = await raw_connect(cluster, token=token)
    else:
        client = await raw_connect(cluster)
        await client.send({"type": "auth", "token": token, "ref": 1})
    try:
        message = await client.recv()
    except Closed:
        return await client.closed()
    await client.close()
    assert message["type"] == "welcome", message
    return "welcome", message["userId"]


async def until(cluster, token, expected, channel="message"):
    """Tries the token until the outcome is expected (the worker applies a reload
    on its next pass), for at most WAIT seconds; returns it."""
    deadline = time.monotonic() + WAIT
    while True:
        got = await outcome(cluster, token, channel)
        if got == expected or time.monotonic() > deadline:
            assert got == expected, (got, expected)
            return got
        await asyncio.sleep(0.1)


@pytest.fixture
def idp(cluster, keys):
    """Changes the JWT settings or keys files for one test; afterwards the
    standard ones are back and applied."""
    changed = {}

    class Idp:
        def apply(self, values):
            changed.update(values)
            cluster.reload(values)

        def write(self, name, text):
            changed["file"] = True
            return write_file(cluster, name, text)

        def reload(self):
            cluster.sh("reload")

    yield Idp()
    if changed:
        for name, text in standard_files(keys).items():
            write_file(cluster, name, text)
        cluster.reload(standard_settings(cluster))
        # each is refused by one of the changes the tests make
        uid = cluster.create_user().id
        probes = [keys["ec"].sign(uid), make_token(uid), keys["rsa2"].sign(uid)]

        async def applied():
            for probe in probes:
                await until(cluster, probe, ("welcome", uid))
        run_async(applied())


def token_of(keys, algorithm, sub, **claims):
    if algorithm == "HS256":
        return make_token(sub, **claims)
    return keys[{"RS256": "rsa", "ES256": "ec", "EdDSA": "ed"}[algorithm]].sign(sub, **claims)


@pytest.mark.parametrize("channel", ["header", "message"])
@pytest.mark.parametrize("algorithm", ["HS256", "RS256", "ES256", "EdDSA"])
async def test_each_algorithm_is_accepted(cluster, keys, user, algorithm, channel):
    a = user()
    assert await outcome(cluster, token_of(keys, algorithm, a.id, name="Ada"), channel) == ("welcome", a.id)


async def test_welcome_carries_the_name_claim(cluster, keys, user):
    a = user()
    client = await raw_connect(cluster, token=keys["ec"].sign(a.id, preferred_username="ada.l"))
    assert (await client.expect("welcome"))["username"] == "ada.l"
    await client.alive()
    await client.close()


async def test_kid_selects_among_keys(cluster, keys, user):
    a = user()
    assert await outcome(cluster, keys["rsa2"].sign(a.id)) == ("welcome", a.id)
    # rsa2's signature under rsa-1's kid: that key is tried, and only it
    assert await outcome(cluster, keys["rsa2"].sign(a.id, kid="rsa-1")) == (4001, "invalid token signature")
    # no kid: every key of the algorithm is tried
    assert await outcome(cluster, keys["rsa2"].sign(a.id, kid="")) == ("welcome", a.id)
    assert await outcome(cluster, keys["ed"].sign(a.id, kid="")) == ("welcome", a.id)


async def test_skipped_jwks_keys_are_not_used(cluster, keys, user):
    a = user()
    # enc-1 is rsa2's key marked "use": "enc"; oct-1 a symmetric secret
    assert await outcome(cluster, keys["rsa2"].sign(a.id, kid="enc-1")) == (4001, "unknown token key (kid)")
    assert await outcome(cluster, hs_sign({"alg": "HS256", "kid": "oct-1"}, {"sub": a.id, "exp": int(time.time()) + 60},
                                          secret="secret")) == (4001, "invalid token signature")


async def test_pem_file(cluster, keys, user, idp):
    a = user()
    idp.apply({"presence.jwt_public_keys_file": os.path.join(cluster.dir, "keys.pem")})
    # PEM keys have no kid: they are tried for a token without one or with any
    await until(cluster, keys["rsa"].sign(a.id, kid=""), ("welcome", a.id))
    for name in ("rsa", "ec", "ed"):
        for kid in ("", "whatever"):
            assert await outcome(cluster, keys[name].sign(a.id, kid=kid)) == ("welcome", a.id), (name, kid)
    assert await outcome(cluster, keys["rsa2"].sign(a.id)) == (4001, "invalid token signature")


def confusion_token(keys, sub, kid=None):
    """HS256 "signed" with the RSA public key's PEM as the HMAC secret."""
    header = {"alg": "HS256", "typ": "JWT"}
    if kid:
        header["kid"] = kid
    return hs_sign(header, {"sub": sub, "exp": int(time.time()) + 3600}, secret=keys["rsa"].public_pem())


# case: (settings, token maker, reason)
REFUSALS = {
    "wrong key": ({}, lambda k, sub: k["stranger"].sign(sub), "invalid token signature"),
    "unknown kid": ({}, lambda k, sub: k["rsa"].sign(sub, kid="rsa-9"), "unknown token key (kid)"),
    "kid of a key of another type": ({}, lambda k, sub: k["rsa"].sign(sub, kid="ec-1"),
                                     "token key type does not match its algorithm"),
    "algorithm not allowed": ({"presence.jwt_algorithms": "HS256,RS256"}, lambda k, sub: k["ec"].sign(sub),
                              "token algorithm not allowed"),
    "HS256 with the RSA public key as secret": ({"presence.jwt_algorithms": "HS256,RS256"}, confusion_token,
                                                "invalid token signature"),
    "HS256 with the RSA public key as secret and its kid": (
        {"presence.jwt_algorithms": "HS256,RS256"}, lambda k, sub: confusion_token(k, sub, kid="rsa-1"),
        "token key type does not match its algorithm"),
    "expired": ({}, lambda k, sub: k["ed"].sign(sub, ttl=-3600), "token expired"),
    "wrong issuer": ({"presence.jwt_issuer": ISSUER}, lambda k, sub: k["rsa"].sign(sub, iss="https://evil.example"),
                     "token issuer mismatch"),
    "no issuer": ({"presence.jwt_issuer": ISSUER}, lambda k, sub: k["ec"].sign(sub), "token issuer mismatch"),
    "alg none": ({}, lambda k, sub: unsigned_token(sub, "none"), "unsupported token algorithm"),
    "alg RS512": ({}, lambda k, sub: jwt.encode({"sub": sub, "exp": int(time.time()) + 60}, k["rsa"].private,
                                                algorithm="RS512", headers={"kid": "rsa-1"}),
                  "unsupported token algorithm"),
    "no public keys": ({"presence.jwt_public_keys_file": ""}, lambda k, sub: k["rsa"].sign(sub),
                       "no public keys configured"),
}


@pytest.mark.parametrize("channel", ["header", "message"])
@pytest.mark.parametrize("case", list(REFUSALS))
async def test_refusal_closes_4001_with_reason(cluster, keys, user, idp, case, channel):
    settings, make, reason = REFUSALS[case]
    a = user()
    token = make(keys, a.id)
    if settings:
        idp.apply(settings)
    code, got = await until(cluster, token, (4001, reason), channel)
    assert token[:20] not in got


async def test_hs256_needs_the_secret(cluster, keys, user, idp):
    a = user()
    idp.apply({"presence.jwt_secret": ""})
    await until(cluster, make_token(a.id), (4001, "token algorithm not allowed"))
    assert await outcome(cluster, keys["rsa"].sign(a.id)) == ("welcome", a.id)
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
        cluster.sql("SELECT presence.issue_token(%s::uuid, '1 minute')", (a.id,))


async def test_user_id_claim_and_issuer(cluster, keys, user, idp):
    a = user()
    claim = "https://example.com/user_id"
    idp.apply({"presence.jwt_user_id_claim": claim, "presence.jwt_issuer": ISSUER})
    mapped = keys["ec"].sign("auth0|5f7c3a", iss=ISSUER, **{claim: a.id.upper()})
    await until(cluster, mapped, ("welcome", a.id))
    assert await outcome(cluster, mapped, "header") == ("welcome", a.id)
    # sub alone no longer names the user
    assert await outcome(cluster, keys["ec"].sign(a.id, iss=ISSUER)) == (4001, "token user id must be a UUID")
    # issue_token follows both settings, so its tokens still work
    issued = cluster.sql1("SELECT presence.issue_token(%s::uuid, '10 minutes')", (a.id,))
    claims = jwt.decode(issued, SECRET, algorithms=["HS256"], options={"verify_aud": False})
    assert claims["iss"] == ISSUER and claims[claim] == a.id and claims["sub"] == a.id
    assert await outcome(cluster, issued) == ("welcome", a.id)


async def test_keys_file_is_read_again_on_reload(cluster, keys, user, idp):
    a = user()
    old, new = keys["rsa"].sign(a.id), keys["rsa2"].sign(a.id, kid="rsa-new")
    client = await raw_connect(cluster, token=old)
    await client.expect("welcome")
    assert await outcome(cluster, new) == (4001, "unknown token key (kid)")

    # rotate: only the new key, under a new kid, in the same file
    idp.write("keys.json", json.dumps({"keys": [dict(keys["rsa2"].jwk(), kid="rsa-new")]}))
    idp.reload()
    await until(cluster, new, ("welcome", a.id))
    assert await outcome(cluster, new, "header") == ("welcome", a.id)
    assert await outcome(cluster, old) == (4001, "unknown token key (kid)")
    assert await outcome(cluster, old, "header") == (4001, "unknown token key (kid)")
    # a connection authenticated with the old key stays open
    await client.alive()
    await client.close()


@pytest.mark.parametrize("broken, why", [
    ("{\"keys\": [", "not valid JSON"),
    ("-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f\n"
     "-----END PRIVATE KEY-----\n", "PEM block 1 is not a PUBLIC KEY"),
    ("{\"keys\": [{\"kty\": \"EC\", \"crv\": \"P-256\", \"x\": \"AAAA\", \"y\": \"AAAA\"}]}", "key 1 (ES256) does not decode"),
    (None, "No such file or directory"),
])
async def test_broken_keys_file_keeps_the_keys(cluster, keys, user, idp, broken, why):
    a = user()
    offset = cluster.log_size()
    if broken is None:
        idp.apply({"presence.jwt_public_keys_file": os.path.join(cluster.dir, "missing.json")})
    else:
        idp.write("keys.json", broken)
        idp.reload()

    def logged():
        text = cluster.log_since(offset)
        return "could not load JWT public keys from" in text and why in text and \
            "the previous keys stay in use" in text
    deadline = time.monotonic() + WAIT
    while not logged():
        assert time.monotonic() < deadline, cluster.log_since(offset)
        time.sleep(0.1)
    for name in ("rsa", "ec", "ed"):
        assert await outcome(cluster, keys[name].sign(a.id)) == ("welcome", a.id), name


@pytest.mark.parametrize("setting, value", [
    ("presence.jwt_algorithms", "none"),
    ("presence.jwt_algorithms", "hs256"),
    ("presence.jwt_algorithms", "RS512"),
    ("presence.jwt_algorithms", ""),
    ("presence.jwt_algorithms", "HS256,"),
    ("presence.jwt_algorithms", "HS256 RS256"),
    ("presence.jwt_user_id_claim", ""),
])
def test_invalid_settings_are_refused(cluster, setting, value):
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        cluster.sql("ALTER SYSTEM SET %s = '%s'" % (setting, value))
