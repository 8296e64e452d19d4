#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/: real messages, as clients
(docs/protocol.md), the application (test/conftest.py's make_token) and
the workers (live_state.c's change_message and presence_data, the sweep
script, ws_worker.c's commands, the snapshot script) make them, and
public-key files as identity providers publish them (JWKS, PEM).  Run it
again after changing a format; regression inputs (regression-*) that
fuzzing found are kept as they are.  Needs python3-cryptography (the PEM
encodings of the fixed keys below)."""
import base64, hashlib, hmac, json, os, pathlib

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

ROOT = pathlib.Path(__file__).resolve().parent / "corpus"
SECRET = b"fuzz-secret-0123456789abcdef-0123456789"   # fuzz_jwt.c's FUZZ_SECRET
NOW = 1764526000                                     # fuzz_jwt.c's FUZZ_NOW
BOB = "b0b00000-0000-4000-8000-000000000002"
ALICE = "a11ce000-0000-4000-8000-000000000001"
ORIGIN = "db1-5432:0.19ad4f2c3e1"
OTHER = "db2-5432:1.19ad4f2c400"
ISSUER = "https://issuer.example"                    # fuzz_jwt.c's FUZZ_ISSUER
# Fixed public keys (fixed so that the seeds do not change on every run):
# RSA 2048 n, P-256 x and y, Ed25519 x, base64url.
RSA_N = ("vITT-mSpJTVo1bCo9T3R5iaFtawPR8ve1_Z6ve-Cx35uM2p70vDu4wX0i9C4ARh9l2HDON11qvgsRpak7HqZMAlvAxV3TGguTk_q"
         "58sMVeicKnuFQYGsdwYWI-p_mWEnAs3OtPbRG_d2-WVJaA8D612gxt5XAPfH06eH5FWIVFy84H0iKFsD4YKiWchS_RevY3LlqwY-"
         "fDMLhgNlxSMHWUlqHkm2FgKU_kH1TYUAOxDRRQIxFk1QdfPsDU389yVHakasjc7LZqmatsBVRc9GlXpqDMDTLvSTq3Bry3UEtQMF"
         "dZWfh7diAMA8ccdl1jCJNk3MGoKNVYWoDcrcTOZjVQ")
EC_X = "Rxw-dYxJBChbun5TEY7Q9SSt6wdX0lvS-Oew1236cUw"
EC_Y = "3VIPesqKi5F6zDf1HejwybvjrYWDgucC3CWhLQn3qFg"
ED_X = "A6EHv_POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg"


def compact(value):
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def write(target, name, data):
    directory = ROOT / target
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def token(claims, header=None):
    header = header or {"alg": "HS256", "typ": "JWT"}
    signing = "%s.%s" % (b64url(compact(header).encode()), b64url(compact(claims).encode()))
    return signing + "." + b64url(hmac.new(SECRET, signing.encode(), hashlib.sha256).digest())


def presence(user, name, role="operator", status="online", cursor=None, activity=None):
    data = {"userId": user, "username": name, "role": role, "status": status,
            "lastSeen": NOW * 1000 + 200}
    if cursor:
        data["cursor"] = {"eventId": cursor[0], "position": cursor[1]}
    if activity:
        data["activity"] = activity
    return data


# protocol: client frames (docs/protocol.md)
bob = token({"sub": BOB, "exp": NOW + 3600, "iat": NOW, "name": "Bob"})
frames = {
    "auth": {"type": "auth", "token": bob, "ref": 1},
    "session_create": {"type": "session_create", "sessionId": "op-2024.07_a", "operationId": "OP-7",
                       "target": "bridge 4", "objective": "inspect", "metadata": {"priority": 2}, "ref": "c1"},
    "session_join": {"type": "session_join", "sessionId": "demo", "ref": "j1"},
    "session_join_full": {"type": "session_join", "sessionId": "demo", "status": "away",
                          "activity": "reading", "cursor": {"eventId": "e3", "position": 42}, "ref": 2},
    "cursor_update": {"type": "cursor_update", "sessionId": "demo", "cursor": {"eventId": "e4", "position": 17}},
    "presence_update": {"type": "presence_update", "sessionId": "demo", "status": "away", "activity": "lunch"},
    "heartbeat": {"type": "heartbeat", "ref": "h"},
    "heartbeat_cursor": {"type": "heartbeat", "sessionId": "demo", "cursor": {"eventId": "e4", "position": 18}},
    "activity": {"type": "activity", "sessionId": "demo", "activityType": "comment",
                 "details": {"text": "looks good"}, "ref": 5},
    "session_leave": {"type": "session_leave", "sessionId": "demo", "ref": 6},
    "session_end": {"type": "session_end", "sessionId": "demo", "status": "failed", "ref": 7},
    "bad_session_id": {"type": "session_join", "sessionId": "-no", "ref": 8},
    "unicode": {"type": "presence_update", "sessionId": "demo", "status": "online", "activity": "r\u00e9vision \u2713"},
}
for name, frame in frames.items():
    write("protocol", name, compact(frame))
write("protocol", "not_json", "{\"type\": \"heartbeat\"")

# header_text: two bytes of output size less one (a user_agent buffer is 256), then a User-Agent
for name, size, value in [
        ("firefox", 256, "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
        ("python", 256, "Python/3.11 websockets/10.4"),
        ("cut_in_character", 8, "caf\u00e9 \u2713 \U0001f600"),
        ("invalid_utf8", 256, b"bad \xc3\x28 \xed\xa0\x80 \xf4\x90\x80\x80 \x00 \x1b[31m"),
]:
    value = value if isinstance(value, bytes) else value.encode()
    write("header_text", name, (size - 1).to_bytes(2, "big") + value)

# jwt: mode byte 0 a token as sent, 1 header \n claims (signed by the
# target), 2 claims (signed by jwt_sign); 0x80 checks the audience.
write("jwt", "bob", b"\x00" + bob.encode())
write("jwt", "alice_preferred", b"\x00" + token({"sub": ALICE.upper(), "exp": NOW + 60, "nbf": NOW - 5,
                                                  "preferred_username": "alice"}).encode())
write("jwt", "audience", b"\x80" + token({"sub": BOB, "exp": NOW + 3600, "aud": ["x", "presence"]}).encode())
write("jwt", "expired", b"\x00" + token({"sub": BOB, "exp": NOW - 3600}).encode())
write("jwt", "alg_none", b"\x00" + ("%s.%s." % (b64url(b'{"alg":"none","typ":"JWT"}'),
                                                 b64url(compact({"sub": BOB, "exp": NOW + 3600}).encode()))).encode())
write("jwt", "signed_claims", b"\x01" + compact({"alg": "HS256", "typ": "JWT"}).encode() + b"\n" +
      compact({"sub": BOB, "exp": NOW + 3600, "iat": NOW, "name": "Bob", "aud": "presence"}).encode())
write("jwt", "signed_real_times", b"\x81" + b'{"alg":"HS256"}\n' +
      compact({"sub": BOB.replace("-", ""), "exp": NOW + 0.5, "iat": NOW - 1.5, "aud": "presence"}).encode())
write("jwt", "issued", b"\x02" + compact({"sub": BOB, "exp": NOW + 3600, "iat": NOW, "name": "Bob"}).encode())
# the public-key algorithms: mode 1 signs by the header's alg with the
# target's keys (kids rsa, ec, ed; bit 0x20 the same keys as PEM, no kid);
# bits 2-4 pick the allowed set; 0x40 checks iss and reads the user from uid;
# mode 3 is HS256 keyed with the RSA public key's PEM (key confusion).
claims = compact({"sub": BOB, "exp": NOW + 3600, "iat": NOW, "name": "Bob"}).encode()
for name, first, header in [
        ("rs256_kid", 0x01, {"alg": "RS256", "typ": "JWT", "kid": "rsa"}),
        ("es256_kid", 0x01, {"alg": "ES256", "kid": "ec"}),
        ("eddsa_kid", 0x01, {"alg": "EdDSA", "kid": "ed"}),
        ("rs256_pem_any_kid", 0x21, {"alg": "RS256", "kid": "rotated-away"}),
        ("es256_unknown_kid", 0x01, {"alg": "ES256", "kid": "nope"}),
        ("rs256_kid_of_ec_key", 0x01, {"alg": "RS256", "kid": "ec"}),
        ("eddsa_not_allowed", 0x15, {"alg": "EdDSA", "kid": "ed"}),   # set 5: HS256, RS256
        ("confusion_hs256", 0x17, {"alg": "HS256", "typ": "JWT"}),
        ("confusion_hs256_kid", 0x03, {"alg": "HS256", "kid": "rsa"}),
]:
    write("jwt", name, bytes([first]) + compact(header).encode() + b"\n" + claims)
write("jwt", "es256_issuer_uid", b"\x41" + compact({"alg": "ES256", "kid": "ec"}).encode() + b"\n" +
      compact({"sub": "auth0|5f7c", "uid": BOB, "iss": ISSUER, "exp": NOW + 3600}).encode())
write("jwt", "rs256_as_sent", b"\x00" + ("%s.%s.%s" % (
    b64url(compact({"alg": "RS256", "kid": "rsa"}).encode()), b64url(claims), b64url(bytes(256)))).encode())

# jwks: presence.jwt_public_keys_file as identity providers publish it
rsa_jwk = {"kty": "RSA", "kid": "rsa-1", "use": "sig", "alg": "RS256", "n": RSA_N, "e": "AQAB"}
ec_jwk = {"kty": "EC", "kid": "ec-1", "crv": "P-256", "x": EC_X, "y": EC_Y}
ed_jwk = {"kty": "OKP", "kid": "ed-1", "crv": "Ed25519", "x": ED_X}
write("jwks", "three_keys", json.dumps({"keys": [rsa_jwk, ec_jwk, ed_jwk]}, indent=2))
write("jwks", "skipped_keys", compact({"keys": [
    dict(rsa_jwk, use="enc", alg="RSA-OAEP"), {"kty": "oct", "k": "c2VjcmV0"}, dict(ec_jwk, crv="P-384"),
    dict(rsa_jwk, kid="rsa-384", alg="RS384"), {k: v for k, v in ec_jwk.items() if k != "kid"}]}))
write("jwks", "duplicate_kid", compact({"keys": [rsa_jwk, dict(ec_jwk, kid="rsa-1")]}))
write("jwks", "bad_coordinate", compact({"keys": [dict(ec_jwk, y=EC_X)]}))
write("jwks", "empty", compact({"keys": []}))
public_keys = [
    rsa.RSAPublicNumbers(65537, int.from_bytes(b64decode(RSA_N), "big")).public_key(),
    ec.EllipticCurvePublicNumbers(int.from_bytes(b64decode(EC_X), "big"), int.from_bytes(b64decode(EC_Y), "big"),
                                  ec.SECP256R1()).public_key(),
    ed25519.Ed25519PublicKey.from_public_bytes(b64decode(ED_X)),
]
pems = [k.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        for k in public_keys]
write("jwks", "pem_three_keys", b"# identity provider keys\n" + b"".join(pems))
write("jwks", "pem_private_key", b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f\n"
      b"-----END PRIVATE KEY-----\n")
write("jwks", "pem_cut", pems[0][:200])

# redis_event: 0x00 + a channel name, 0x01 + a message on it
write("redis_event", "channel", b"\x00fuzz:presence:updates:demo")
write("redis_event", "channel_other", b"\x00fuzz:presence:commands")


def change(kind, conn, user, data=None):
    message = '{"o":"%s","k":"%s","c":"%s","uid":"%s"%s}' % (
        conn.rsplit(":", 1)[0], kind, conn, user, ',"u":' + compact(data) if data else "")
    return b"\x01" + message.encode()


write("redis_event", "join", change("join", OTHER + ":7", ALICE, presence(ALICE, "Alice")))
write("redis_event", "update", change("update", OTHER + ":7", ALICE,
                                      presence(ALICE, "Alice", status="away", activity="lunch")))
write("redis_event", "cursor", change("cursor", OTHER + ":7", ALICE,
                                      presence(ALICE, "Alice", cursor=("e2", 3))))
write("redis_event", "leave", change("leave", OTHER + ":7", ALICE))
write("redis_event", "own", change("join", ORIGIN + ":1", BOB, presence(BOB, "Bob", role="owner")))
# the sweep script's cjson.encode
write("redis_event", "sweep_timeout", b"\x01" + compact({"uid": ALICE, "c": "*", "k": "timeout", "o": OTHER}).encode())

# redis_command: ws_worker.c's apply_commands
commands = {
    "broadcast": {"o": "db2-5432", "cmd": "broadcast", "sessionId": "demo", "payload": {"notice": "deploy in 5 minutes"}},
    "session_ended": {"o": "db2-5432", "cmd": "session_ended", "sessionId": "demo", "payload": "completed"},
    "participant_removed": {"o": "db2-5432", "cmd": "participant_removed", "sessionId": "demo", "userId": ALICE},
    "participant_changed": {"o": "db2-5432", "cmd": "participant_changed", "sessionId": "demo", "userId": ALICE,
                            "payload": "viewer"},
}
for name, command in commands.items():
    write("redis_command", name, compact(command))

# redis_snapshot: the snapshot script's reply, one entry per line
write("redis_snapshot", "two_users", "\n".join([
    compact(presence(ALICE, "Alice", cursor=("e2", 3))), OTHER + ":7 " + OTHER + ":9",
    compact(presence(BOB, "Bob", role="owner", status="away", activity="r\u00e9vision")), ORIGIN + ":1"]))
write("redis_snapshot", "one_user", compact(presence(ALICE, "Alice")) + "\n" + OTHER + ":7")
