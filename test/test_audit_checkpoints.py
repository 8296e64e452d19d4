"""Signed audit checkpoints (issue 13, part 2).

A cluster with an Ed25519 key in presence.audit_signing_key_file signs
chain heads (presence.audit_checkpoint(), and the maintenance worker on
its own); verify_audit_chain checks them; and the offline verifier,
given only an export, the checkpoint JSON an auditor saved and the public
key, catches what a superuser does to the chain: an edited row, an edited
row with its hash recomputed, an inserted row, the newest rows cut off,
and a rewrite with every following hash recomputed.

    /usr/bin/python3 -m pytest test/test_audit_checkpoints.py
"""

import json
import os
import pwd
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import psycopg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from conftest import BASE_GUCS, SCALE, Cluster, free_ports, wait_until

HERE = os.path.dirname(os.path.abspath(__file__))
PGBIN = os.environ.get("PGBIN", "/usr/lib/postgresql/15/bin")
VERIFY = os.path.join(os.path.dirname(HERE), "scripts", "verify-activity-export.py")

# The chain recipe of docs/sql-reference.md in SQL, for a superuser who
# rewrites rows and recomputes their hashes.
TAMPER_SQL = r"""
CREATE SCHEMA IF NOT EXISTS tamper;
CREATE OR REPLACE FUNCTION tamper.f(value anyelement) RETURNS bytea LANGUAGE sql IMMUTABLE AS $$
	SELECT CASE WHEN value IS NULL THEN '\xffffffff'::bytea
				ELSE int4send(octet_length(format('%s', value))) || convert_to(format('%s', value), 'UTF8') END
$$;
CREATE OR REPLACE FUNCTION tamper.hash(a presence.activity_log, prev bytea) RETURNS bytea LANGUAGE sql STABLE AS $$
	SELECT sha256(prev || tamper.f(a.chain_seq) || tamper.f(a.id) || tamper.f(a.session_id) || tamper.f(a.user_id)
				  || tamper.f(a.activity_type) || tamper.f(a.details) || tamper.f(a.ip_address)
				  || tamper.f(a.user_agent) || tamper.f((extract(epoch FROM a.created_at) * 1000000)::bigint))
$$;
-- Rehashes a session's rows from chain_seq from_seq on, each linked to the one before.
CREATE OR REPLACE FUNCTION tamper.rehash(p_session uuid, from_seq bigint, last_seq bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
	r presence.activity_log;
	prev bytea;
BEGIN
	SELECT coalesce((SELECT row_hash FROM presence.activity_log WHERE session_id = p_session AND chain_seq = from_seq - 1),
					decode(repeat('00', 32), 'hex')) INTO prev;
	FOR r IN SELECT * FROM presence.activity_log WHERE session_id = p_session AND chain_seq BETWEEN from_seq AND last_seq
			  ORDER BY chain_seq LOOP
		UPDATE presence.activity_log SET prev_hash = prev, row_hash = tamper.hash(r, prev) WHERE id = r.id
		RETURNING row_hash INTO prev;
	END LOOP;
END $$;
"""


def write_key_file(cluster, name, pem, mode=0o600):
    """A key file owned by the cluster's OS user, as an operator installs it."""
    path = os.path.join(cluster.dir, name)
    with open(path + ".tmp", "wb") as f:
        f.write(pem)
    os.chmod(path + ".tmp", mode)
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(path + ".tmp", owner.pw_uid, owner.pw_gid)
    os.replace(path + ".tmp", path)
    return path


def private_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@pytest.fixture(scope="module")
def signing_key():
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def public_key_file(signing_key, tmp_path_factory):
    path = tmp_path_factory.mktemp("auditor") / "audit.pub.pem"
    path.write_bytes(signing_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                           serialization.PublicFormat.SubjectPublicKeyInfo))
    return str(path)


@pytest.fixture(scope="module")
def cluster(signing_key):
    c = Cluster(name="presence-ckpt-")
    try:
        key_path = write_key_file(c, "audit-signing.pem", private_pem(signing_key))
        c.start(dict(BASE_GUCS, **{"presence.audit_signing_key_file": key_path,
                                   "presence.audit_checkpoint_interval": "0"}))
        c.sql(TAMPER_SQL)
        c.key_path = key_path
        yield c
    finally:
        c.destroy()


def chain_session(cluster, rows=8):
    """A session with rows activity rows, logged through the API: (session_id, uuid)."""
    session_id = "ckpt-" + uuid.uuid4().hex[:10]
    owner = str(uuid.uuid4())
    cluster.sql("INSERT INTO presence.users (id, username) VALUES (%s, %s)", (owner, "owner " + session_id))
    cluster.sql("SELECT presence.create_session(%s, session_id => %s)", (owner, session_id))
    cluster.sql("""SELECT count(*) FROM presence.log_activity_batch(array_fill(%s::text, ARRAY[%s]),
                                                                   array_fill(%s::uuid, ARRAY[%s]),
                                                                   ARRAY(SELECT 'step.' || i FROM generate_series(1, %s) i),
                                                                   ARRAY(SELECT jsonb_build_object('step', i)
                                                                           FROM generate_series(1, %s) i))""",
                (session_id, rows - 1, owner, rows - 1, rows - 1, rows - 1))
    return session_id, cluster.sql1("SELECT id FROM presence.collaboration_sessions WHERE session_id = %s",
                                    (session_id,))


def save_checkpoint(cluster, session_id, tmp_path, name="checkpoint.json"):
    """What an auditor keeps: the checkpoint as row_to_json gives it (docs/sql-reference.md)."""
    text = cluster.sql1("SELECT row_to_json(c)::text FROM presence.audit_checkpoint(%s) c", (session_id,))
    path = tmp_path / name
    path.write_text(text + "\n")
    return str(path), json.loads(text)


def export(cluster, session_id, tmp_path, name="export.csv"):
    path = tmp_path / name
    path.write_bytes(cluster.sql1("SELECT presence.export_activity_csv(%s)", (session_id,)).encode("utf-8"))
    return str(path)


def verify(csv_path, *args):
    return subprocess.run([sys.executable, VERIFY, csv_path, *args], capture_output=True, text=True, timeout=60)


def verify_with(csv_path, checkpoint_path, public_key_file, session_id):
    return verify(csv_path, "--checkpoint", checkpoint_path, "--public-key", public_key_file,
                  "--session-id", session_id)


def superuser(cluster, sql, params=None):
    """SQL with the guarding triggers off, as a superuser who tampers does it."""
    with cluster.connect() as conn:
        with conn.transaction():
            conn.execute("SET LOCAL session_replication_role = replica")
            conn.execute(sql, params)


def in_database(cluster, session_id):
    return cluster.sql("SELECT ok, rows_checked, first_bad_id, checkpoints_checked, first_bad_checkpoint"
                       " FROM presence.verify_audit_chain(%s)", (session_id,))[0]


def test_checkpoint_is_signed_head(cluster, signing_key):
    session_id, session_uuid = chain_session(cluster, rows=5)
    head_seq, head_hash = cluster.sql("SELECT chain_seq, row_hash FROM presence.audit_chain_head(%s)", (session_id,))[0]
    seq, row_hash, signed_at, signature = cluster.sql(
        "SELECT chain_seq, row_hash, (extract(epoch FROM signed_at) * 1000000)::bigint, signature"
        "  FROM presence.audit_checkpoint(%s)", (session_id,))[0]
    assert (seq, bytes(row_hash).hex()) == (head_seq, head_hash) == (5, head_hash)
    name = session_id.encode()
    message = (b"presence-audit-checkpoint-v1\x00" + session_uuid.bytes + struct.pack(">I", len(name)) + name
               + struct.pack(">q", seq) + bytes(row_hash) + struct.pack(">q", signed_at))
    signing_key.public_key().verify(bytes(signature), message)  # raises when it does not verify
    stored = cluster.sql("SELECT chain_seq, signature, public_key FROM presence.audit_checkpoints c"
                         " WHERE c.session_id = %s", (session_uuid,))
    raw_public = signing_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert stored == [(5, signature, raw_public)]
    assert in_database(cluster, session_id) == (True, 5, None, 1, None)


def test_errors(cluster):
    with pytest.raises(Exception, match='session "no-such-session" does not exist'):
        cluster.sql("SELECT * FROM presence.audit_checkpoint('no-such-session')")
    owner = str(uuid.uuid4())
    cluster.sql("INSERT INTO presence.users (id, username) VALUES (%s, 'empty owner')", (owner,))
    cluster.sql("INSERT INTO presence.collaboration_sessions (session_id, owner_id) VALUES ('ckpt-empty', %s)", (owner,))
    with pytest.raises(Exception, match='session "ckpt-empty" has no activity to checkpoint'):
        cluster.sql("SELECT * FROM presence.audit_checkpoint('ckpt-empty')")
    assert cluster.sql1("SELECT has_function_privilege('public', 'presence.audit_checkpoint(text)', 'EXECUTE')") is False


def test_unusable_keys_are_refused(cluster, tmp_path):
    session_id, _ = chain_session(cluster, rows=2)
    cases = [
        (write_key_file(cluster, "open.pem", private_pem(ed25519.Ed25519PrivateKey.generate()), 0o644),
         "has group or world access"),
        (write_key_file(cluster, "garbage.pem", b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n"),
         "holds no usable private key"),
        (write_key_file(cluster, "ec.pem", private_pem(ec.generate_private_key(ec.SECP256R1()))),
         "is not an Ed25519 key"),
        (os.path.join(cluster.dir, "missing.pem"), "could not open"),
    ]
    try:
        for path, problem in cases:
            cluster.reload({"presence.audit_signing_key_file": path})
            with pytest.raises(Exception, match=problem):
                cluster.sql("SELECT * FROM presence.audit_checkpoint(%s)", (session_id,))
        # the maintenance worker logs the bad key and goes on
        maintenance = "SELECT pid FROM pg_stat_activity WHERE backend_type = 'presence maintenance'"
        pid = wait_until(lambda: cluster.sql1(maintenance), timeout=30 * SCALE, what="the maintenance worker")
        offset = cluster.log_size()
        cluster.reload({"presence.audit_checkpoint_interval": "1s"})
        wait_until(lambda: "could not open presence.audit_signing_key_file" in cluster.log_since(offset),
                   what="the maintenance worker's warning")
        time.sleep(2 * SCALE)
        assert cluster.sql1(maintenance) == pid
    finally:
        cluster.reload({"presence.audit_signing_key_file": cluster.key_path,
                        "presence.audit_checkpoint_interval": "0"})
    assert cluster.sql1("SELECT chain_seq FROM presence.audit_checkpoint(%s)", (session_id,)) == 2


def test_maintenance_worker_signs_grown_chains(cluster):
    session_id, session_uuid = chain_session(cluster, rows=3)
    count = "SELECT count(*), max(chain_seq) FROM presence.audit_checkpoints WHERE session_id = %s"
    try:
        cluster.reload({"presence.audit_checkpoint_interval": "1s"})
        wait_until(lambda: cluster.sql(count, (session_uuid,))[0] == (1, 3), what="a checkpoint at 3")
        cluster.sql("SELECT presence.log_activity(%s, NULL, 'more.work')", (session_id,))
        wait_until(lambda: cluster.sql(count, (session_uuid,))[0] == (2, 4), what="a checkpoint at 4")
        # an unchanged head is not signed again
        time.sleep(3 * SCALE)
        assert cluster.sql(count, (session_uuid,))[0] == (2, 4)
    finally:
        cluster.reload({"presence.audit_checkpoint_interval": "0"})
    assert in_database(cluster, session_id) == (True, 4, None, 2, None)


def test_untampered_export_verifies(cluster, public_key_file, tmp_path):
    session_id, _ = chain_session(cluster)
    older, _ = save_checkpoint(cluster, session_id, tmp_path, "older.json")
    cluster.sql("SELECT presence.log_activity(%s, NULL, 'later.work')", (session_id,))
    newer, _ = save_checkpoint(cluster, session_id, tmp_path, "newer.json")
    result = verify(export(cluster, session_id, tmp_path), "--checkpoint", older, "--checkpoint", newer,
                    "--public-key", public_key_file, "--session-id", session_id)
    assert result.returncode == 0, result.stderr
    assert "9 rows verify" in result.stdout
    assert result.stdout.count("signed and matches the export") == 2


def test_checkpoint_forms(cluster, public_key_file, tmp_path):
    """The self-describing JSON (with session_id) and psql's CSV both verify; another session's does not."""
    session_id, session_uuid = chain_session(cluster, rows=3)
    other_id, _ = chain_session(cluster, rows=3)
    csv_path = export(cluster, session_id, tmp_path)
    described = tmp_path / "described.json"
    described.write_text(cluster.sql1(
        "SELECT row_to_json(c)::text FROM (SELECT %s AS session_id, * FROM presence.audit_checkpoint(%s)) c",
        (session_id, session_id)) + "\n")
    result = verify(csv_path, "--checkpoint", str(described), "--public-key", public_key_file)
    assert result.returncode == 0, result.stderr
    psql_csv = subprocess.run([os.path.join(HERE, "cluster.sh"), "psql", cluster.dir, "-XA", "--csv", "-c",
                               "SELECT * FROM presence.audit_checkpoint('%s')" % session_id],
                              capture_output=True, text=True, check=True)
    (tmp_path / "psql.csv").write_text(psql_csv.stdout)
    result = verify_with(csv_path, str(tmp_path / "psql.csv"), public_key_file, session_id)
    assert result.returncode == 0, result.stdout + result.stderr

    other, _ = save_checkpoint(cluster, other_id, tmp_path, "other.json")
    result = verify_with(csv_path, other, public_key_file, session_id)
    assert result.returncode == 1 and "signature does not verify" in result.stderr
    other_described = tmp_path / "other-described.json"
    other_described.write_text(json.dumps(dict(json.load(open(other)), session_id=other_id)))
    result = verify_with(csv_path, str(other_described), public_key_file, session_id)
    assert result.returncode == 1 and "checkpoint of another session" in result.stderr


def test_bad_signature(cluster, public_key_file, tmp_path):
    session_id, _ = chain_session(cluster, rows=3)
    path, checkpoint = save_checkpoint(cluster, session_id, tmp_path)
    signature = bytearray.fromhex(checkpoint["signature"][2:])
    signature[10] ^= 1
    with open(path, "w") as f:
        json.dump(dict(checkpoint, signature="\\x" + signature.hex()), f)
    result = verify_with(export(cluster, session_id, tmp_path), path, public_key_file, session_id)
    assert result.returncode == 1 and "signature does not verify" in result.stderr
    # a checkpoint signed by another key than the auditor's
    other = tmp_path / "other.pub.pem"
    other.write_bytes(ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    good, _ = save_checkpoint(cluster, session_id, tmp_path, "good.json")
    result = verify_with(export(cluster, session_id, tmp_path), good, str(other), session_id)
    assert result.returncode == 1 and "signature does not verify" in result.stderr


def tamper_edit(cluster, session_id, session_uuid):
    superuser(cluster, "UPDATE presence.activity_log SET details = '{\"step\": 99}'"
                       " WHERE session_id = %s AND chain_seq = 4", (session_uuid,))


def tamper_edit_rehash(cluster, session_id, session_uuid):
    superuser(cluster, "UPDATE presence.activity_log SET details = '{\"step\": 99}'"
                       " WHERE session_id = %s AND chain_seq = 4", (session_uuid,))
    superuser(cluster, "SELECT tamper.rehash(%s, 4, 4)", (session_uuid,))


def tamper_insert(cluster, session_id, session_uuid):
    superuser(cluster, "UPDATE presence.activity_log SET chain_seq = chain_seq + 1000"
                       " WHERE session_id = %s AND chain_seq >= 4", (session_uuid,))
    superuser(cluster, "UPDATE presence.activity_log SET chain_seq = chain_seq - 999"
                       " WHERE session_id = %s AND chain_seq > 1000", (session_uuid,))
    superuser(cluster, "INSERT INTO presence.activity_log (session_id, activity_type, chain_seq, prev_hash, row_hash)"
                       " VALUES (%s, 'forged', 4, '\\x00', '\\x00')", (session_uuid,))
    superuser(cluster, "SELECT tamper.rehash(%s, 4, 4)", (session_uuid,))


def tamper_truncate(cluster, session_id, session_uuid):
    superuser(cluster, "DELETE FROM presence.activity_log WHERE session_id = %s AND chain_seq > 5", (session_uuid,))


def tamper_recompute(cluster, session_id, session_uuid):
    superuser(cluster, "UPDATE presence.activity_log SET details = '{\"step\": 99}'"
                       " WHERE session_id = %s AND chain_seq = 4", (session_uuid,))
    superuser(cluster, "SELECT tamper.rehash(%s, 4, 1000000)", (session_uuid,))


@pytest.mark.parametrize("tamper, offline_says, chain_walk_ok", [
    (tamper_edit, r"chain_seq 4 \(id .*\): row_hash does not match the row", False),
    (tamper_edit_rehash, r"chain_seq 5 \(id .*\): does not link to the row before", False),
    (tamper_insert, r"chain_seq 5 \(id .*\): does not link to the row before", False),
    (tamper_truncate, "the newest rows were cut off", True),
    (tamper_recompute, "the chain was rewritten and recomputed", True),
], ids=["edit", "edit-rehash", "insert", "truncate", "recompute"])
def test_tampering_is_caught_offline(cluster, public_key_file, tmp_path, tamper, offline_says, chain_walk_ok):
    session_id, session_uuid = chain_session(cluster)
    checkpoint, _ = save_checkpoint(cluster, session_id, tmp_path)
    before = export(cluster, session_id, tmp_path, "before.csv")
    assert verify_with(before, checkpoint, public_key_file, session_id).returncode == 0

    tamper(cluster, session_id, session_uuid)
    after = export(cluster, session_id, tmp_path, "after.csv")
    # without the checkpoint, a cut or recomputed chain verifies: that is what checkpoints are for
    assert (verify(after).returncode == 0) == chain_walk_ok
    result = verify_with(after, checkpoint, public_key_file, session_id)
    assert result.returncode == 1, result.stdout
    assert re.search(offline_says, result.stderr), result.stderr
    # and the database's own check sees it too, through the stored checkpoint when the walk cannot
    ok, _, first_bad_id, checkpoints_checked, first_bad_checkpoint = in_database(cluster, session_id)
    assert not ok and checkpoints_checked == 1
    assert (first_bad_id is None) == chain_walk_ok
    if chain_walk_ok:
        assert first_bad_checkpoint == 8


def test_purged_rows_keep_their_checkpoints(cluster, public_key_file, tmp_path):
    """A purge keeps the checkpoints: one at the cut is checked against the
    anchor, one below it by its signature alone."""
    session_id, session_uuid = chain_session(cluster, rows=1)
    superuser(cluster, "UPDATE presence.activity_log SET created_at = now() - interval '10 days'"
                       " WHERE session_id = %s", (session_uuid,))
    superuser(cluster, "SELECT tamper.rehash(%s, 1, 1)", (session_uuid,))
    old = ("SELECT count(*) FROM presence.log_activity_batch(%s, array_fill(NULL::uuid, ARRAY[cardinality(%s::text[])]), %s,"
           " created_ats => %s::timestamptz[])")
    ago = "now() - interval '10 days'"
    cluster.sql(old.replace("%s::timestamptz[]", "ARRAY[%s, %s]" % (ago, ago)),
                ([session_id] * 2, [session_id] * 2, ["old.work"] * 2))
    paths = [save_checkpoint(cluster, session_id, tmp_path, "at-3.json")[0]]
    cluster.sql(old.replace("%s::timestamptz[]", "ARRAY[%s]" % ago), ([session_id], [session_id], ["old.work"]))
    paths.append(save_checkpoint(cluster, session_id, tmp_path, "at-4.json")[0])
    cluster.sql("SELECT presence.log_activity(%s, NULL, 'new.work')", (session_id,))
    cluster.sql("SELECT presence.log_activity(%s, NULL, 'new.work')", (session_id,))
    paths.append(save_checkpoint(cluster, session_id, tmp_path, "at-6.json")[0])
    assert in_database(cluster, session_id) == (True, 6, None, 3, None)

    assert cluster.sql1("SELECT presence.purge_activity('1 day')") >= 4
    assert in_database(cluster, session_id) == (True, 2, None, 3, None)
    args = [a for path in paths for a in ("--checkpoint", path)]
    result = verify(export(cluster, session_id, tmp_path), *args, "--public-key", public_key_file,
                    "--session-id", session_id)
    assert result.returncode == 0, result.stderr
    assert "about rows purged" in result.stdout and result.stdout.count("matches the export") == 2


def test_standby_refuses_to_sign(cluster, tmp_path):
    """A hot standby has the key setting (copied with the data directory) but signs nothing."""
    session_id, _ = chain_session(cluster, rows=2)
    base = tempfile.mkdtemp(prefix="presence-ckpt-standby-")
    pgport, wsport = free_ports(2)
    try:
        shutil.chown(base, "postgres", "postgres")
        subprocess.run(["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--",
                        os.path.join(PGBIN, "pg_basebackup"), "-h", "127.0.0.1", "-p", str(cluster.pgport),
                        "-U", "postgres", "-D", os.path.join(base, "data"), "-R", "-c", "fast", "-X", "stream"],
                       check=True, capture_output=True, cwd="/")
        with open(os.path.join(base, "data", "postgresql.conf"), "a") as f:
            f.write("port = %d\nunix_socket_directories = '%s'\n" % (pgport, base))
        with open(os.path.join(base, "data", "postgresql.auto.conf.presence"), "w") as f:
            f.write("port = %d\n" % pgport)
        subprocess.run([os.path.join(HERE, "cluster.sh"), "start", base, str(pgport), str(wsport),
                        "presence.port=%d" % wsport, "presence.audit_checkpoint_interval=1s"],
                       check=True, capture_output=True)
        with psycopg.connect(host=base, port=pgport, user="postgres", dbname="presence", autocommit=True) as conn:
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
            wait_until(lambda: conn.execute("SELECT count(*) FROM presence.collaboration_sessions"
                                            " WHERE session_id = %s", (session_id,)).fetchone() == (1,),
                       what="the session on the standby")
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction, match="signed on the primary"):
                conn.execute("SELECT * FROM presence.audit_checkpoint(%s)", (session_id,))
            time.sleep(2 * SCALE)
        with open(os.path.join(base, "server.log")) as f:
            log = f.read()
        # the standby's maintenance worker does not try
        assert "sessions to checkpoint" not in log and "signing an audit checkpoint" not in log, log
    finally:
        subprocess.run([os.path.join(HERE, "cluster.sh"), "destroy", base], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def test_no_deadlock_with_a_session_locked_for_update(cluster):
    """end_session locks the session row, then appends: a checkpoint signed
    meanwhile waits for the row before it takes the chain lock, so neither
    deadlocks (a deadlock would fail one of them after deadlock_timeout)."""
    session_id, _ = chain_session(cluster, rows=2)
    results = {}
    with cluster.connect() as holder:
        holder.execute("BEGIN")
        holder.execute("SELECT 1 FROM presence.collaboration_sessions WHERE session_id = %s FOR UPDATE", (session_id,))

        def sign():
            try:
                results["seq"] = cluster.sql1("SELECT chain_seq FROM presence.audit_checkpoint(%s)", (session_id,))
            except Exception as error:  # reported below
                results["error"] = error
        signer = threading.Thread(target=sign)
        signer.start()
        wait_until(lambda: cluster.sql1("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                                        " AND query LIKE '%%audit_checkpoint%%'") == 1, what="the signer waiting")
        holder.execute("SELECT presence.log_activity(%s, NULL, 'while.locked')", (session_id,))
        holder.execute("COMMIT")
        signer.join(30 * SCALE)
    assert "error" not in results, results
    assert results["seq"] == 3


def test_verifier_inputs(cluster, public_key_file, tmp_path):
    """A JSON array of checkpoints verifies; what cannot be used exits 2, not 1."""
    session_id, _ = chain_session(cluster, rows=3)
    array = tmp_path / "array.json"
    save_checkpoint(cluster, session_id, tmp_path)
    cluster.sql("SELECT presence.log_activity(%s, NULL, 'more.work')", (session_id,))
    save_checkpoint(cluster, session_id, tmp_path)
    csv_path = export(cluster, session_id, tmp_path)
    array.write_text(cluster.sql1("SELECT json_agg(json_build_object('chain_seq', c.chain_seq, 'row_hash', c.row_hash,"
                                  " 'signed_at', c.signed_at, 'signature', c.signature))::text"
                                  " FROM presence.audit_checkpoints c JOIN presence.collaboration_sessions s"
                                  " ON s.id = c.session_id WHERE s.session_id = %s", (session_id,)))
    result = verify_with(csv_path, str(array), public_key_file, session_id)
    assert result.returncode == 0, result.stderr
    # rows of the table, as an auditor may save them now and then
    rows = tmp_path / "rows.json"
    rows.write_text("\n".join(r[0] for r in cluster.sql(
        "SELECT row_to_json(c)::text FROM presence.audit_checkpoints c JOIN presence.collaboration_sessions s"
        " ON s.id = c.session_id WHERE s.session_id = %s", (session_id,))) + "\n")
    result = verify_with(csv_path, str(rows), public_key_file, session_id)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("signed and matches the export") == 2
    broken = tmp_path / "broken.json"
    broken.write_text('{"chain_seq": 3}\n')
    for args in (["--checkpoint", str(array)],  # no public key
                 ["--checkpoint", str(broken), "--public-key", public_key_file, "--session-id", session_id],
                 ["--checkpoint", str(array), "--public-key", csv_path, "--session-id", session_id],
                 ["--checkpoint", str(array), "--public-key", public_key_file]):  # no session id
        result = verify(csv_path, *args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)


def forge_duplicate_column(text, forged):
    """A second details column: the first, which a reader sees, says what the forger likes."""
    header, *lines = text.split("\r\n")
    cells = [line.split(",") for line in lines if line]
    where = header.split(",").index("details")
    rows = [",".join(c[:where] + ['"%s"' % forged.replace('"', '""')] + c[where + 1:] + [c[where]]) for c in cells]
    return "\r\n".join([header + ",details"] + rows) + "\r\n"


def forge_extra_column(text, forged):
    header, *lines = text.split("\r\n")
    return "\r\n".join([header + ",note"] + [line + "," + forged for line in lines if line]) + "\r\n"


def forge_rows_after_the_end(text, forged):
    """Rows after a bare LF, where the verifier stopped reading but a spreadsheet goes on."""
    last = text.rstrip("\r\n").split("\r\n")[-1]
    return text + "\n" + last.replace("step.", forged, 1) + "\r\n"


def forge_unterminated_row(text, forged):
    last = text.rstrip("\r\n").split("\r\n")[-1]
    return text + last.replace("step.", forged, 1)


def forge_formula(text, forged):
    """The neutralising ' taken off a formula: a spreadsheet runs it, yet the value is the same."""
    return text.replace("'=HYPERLINK", "=HYPERLINK", 1)


def forge_stray_quote(text, forged):
    """A ' put before a value the export writes as it is: the reader sees 'step..., the hash sees step..."""
    return text.replace(",step.", ",'step.", 1)


def forge_unquoted_newline(text, forged):
    """The quotes taken off a cell with a LF: a spreadsheet shows a row that is none."""
    return text.replace('"ua\nnext"', "ua\nnext", 1)


def forge_other_session(text, forged):
    """A row of another session appended, linked and hashed as the recipe says."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("verifier", VERIFY)
    verifier = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(verifier)
    header, *rows = verifier.parse_csv(text)
    names = [name for name, _ in header]
    row = dict(zip(names, (verifier.value(cell) for cell in rows[-1])))
    row.update(chain_seq=str(int(row["chain_seq"]) + 1), id=str(uuid.uuid4()), session_uuid=str(uuid.uuid4()),
               prev_hash=row["row_hash"], user_agent=forged)
    row["row_hash"] = verifier.hashlib.sha256(
        bytes.fromhex(row["prev_hash"]) + b"".join(verifier.field(row[name]) for name in verifier.HASHED)
        + verifier.field(verifier.microseconds(row["created_at"]))).hexdigest()
    return text + ",".join(row[name] or "" for name in names) + "\r\n"


@pytest.mark.parametrize("forge", [forge_duplicate_column, forge_extra_column, forge_rows_after_the_end,
                                   forge_unterminated_row, forge_formula, forge_stray_quote,
                                   forge_unquoted_newline, forge_other_session],
                         ids=lambda f: f.__name__[len("forge_"):])
def test_forged_export_files_are_refused(cluster, public_key_file, tmp_path, forge):
    """A file the export did not write, with every hashed value intact, does not verify: what a
    reader of the CSV sees must be what the chain and the checkpoint vouch for."""
    session_id, session_uuid = chain_session(cluster, rows=4)
    cluster.sql("INSERT INTO presence.activity_log (session_id, activity_type, user_agent) VALUES (%s, 'note', %s)",
                (session_uuid, '=HYPERLINK("http://evil","x")'))
    cluster.sql("INSERT INTO presence.activity_log (session_id, activity_type, user_agent) VALUES (%s, 'note', %s)",
                (session_uuid, "ua\nnext"))
    checkpoint, _ = save_checkpoint(cluster, session_id, tmp_path)
    genuine = export(cluster, session_id, tmp_path)
    assert verify_with(genuine, checkpoint, public_key_file, session_id).returncode == 0
    with open(genuine, encoding="utf-8", newline="") as f:
        text = f.read()
    forged_text = forge(text, "forged.")
    assert forged_text != text
    forged = tmp_path / "forged.csv"
    forged.write_bytes(forged_text.encode("utf-8"))
    result = verify_with(str(forged), checkpoint, public_key_file, session_id)
    assert result.returncode != 0, (forged_text, result.stdout)


def test_one_checkpoint_per_head_and_key(cluster, signing_key, tmp_path):
    """An auditor calling audit_checkpoint in a loop does not grow the table (nor every later
    verify_audit_chain) without bound: a head already signed by the current key is returned as
    stored, and signed again only when the chain grew, the key changed or the stored one is no
    valid signature."""
    session_id, session_uuid = chain_session(cluster, rows=3)
    cluster.sql("DO $$ BEGIN CREATE ROLE ckpt_auditor LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$")
    cluster.sql("SELECT presence.grant_auditor_role('ckpt_auditor')")
    count = "SELECT count(*) FROM presence.audit_checkpoints WHERE session_id = %s"
    with cluster.connect() as auditor:
        auditor.execute("SET ROLE ckpt_auditor")
        returned = {auditor.execute("SELECT signed_at, signature FROM presence.audit_checkpoint(%s)",
                                    (session_id,)).fetchone() for _ in range(50)}
    assert len(returned) == 1
    assert cluster.sql1(count, (session_uuid,)) == 1
    cluster.sql("SELECT presence.log_activity(%s, NULL, 'more.work')", (session_id,))
    assert cluster.sql1("SELECT chain_seq FROM presence.audit_checkpoint(%s)", (session_id,)) == 4
    assert cluster.sql1(count, (session_uuid,)) == 2
    # a stored row whose signature does not verify is not handed out: a new one is signed
    superuser(cluster, "UPDATE presence.audit_checkpoints SET signature = decode(repeat('00', 64), 'hex')"
                       " WHERE session_id = %s AND chain_seq = 4", (session_uuid,))
    signature = cluster.sql1("SELECT signature FROM presence.audit_checkpoint(%s)", (session_id,))
    assert bytes(signature) != bytes(64)
    assert cluster.sql1(count, (session_uuid,)) == 3
    # another key signs the same head again
    try:
        cluster.reload({"presence.audit_signing_key_file":
                        write_key_file(cluster, "rotated.pem", private_pem(ed25519.Ed25519PrivateKey.generate()))})
        cluster.sql("SELECT * FROM presence.audit_checkpoint(%s)", (session_id,))
        cluster.sql("SELECT * FROM presence.audit_checkpoint(%s)", (session_id,))
        assert cluster.sql1(count, (session_uuid,)) == 4
    finally:
        cluster.reload({"presence.audit_signing_key_file": cluster.key_path})


def test_key_file_that_is_a_fifo(cluster):
    """open() of a FIFO waits for a writer, uninterruptibly for a backend: the check that the key
    is a regular file must come before anything can wait."""
    session_id, _ = chain_session(cluster, rows=2)
    fifo = os.path.join(cluster.dir, "audit-fifo.pem")
    os.mkfifo(fifo, 0o600)
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(fifo, owner.pw_uid, owner.pw_gid)
    results = {}

    def sign():
        try:
            cluster.sql("SELECT * FROM presence.audit_checkpoint(%s)", (session_id,))
        except Exception as error:  # noqa: BLE001 - the error is what is checked
            results["error"] = str(error)

    try:
        cluster.reload({"presence.audit_signing_key_file": fifo})
        signer = threading.Thread(target=sign)
        signer.start()
        signer.join(15 * SCALE)
        stuck = signer.is_alive()
        if stuck:  # release the backend so the cluster can stop
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            signer.join(30 * SCALE)
        assert not stuck, "audit_checkpoint waited on a FIFO"
        assert "is not a regular file" in results.get("error", ""), results
    finally:
        cluster.reload({"presence.audit_signing_key_file": cluster.key_path})


def test_key_file_problems_do_not_show_the_path_to_callers(cluster):
    """presence.audit_signing_key_file is superuser-only (GUC_SUPERUSER_ONLY); the auditor, who may
    call audit_checkpoint, learns what is wrong with the key but not where it is.  The server log
    names the file."""
    session_id, _ = chain_session(cluster, rows=2)
    cluster.sql("DO $$ BEGIN CREATE ROLE ckpt_auditor LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$")
    cluster.sql("SELECT presence.grant_auditor_role('ckpt_auditor')")
    secret = os.path.join(cluster.dir, "secret-place")
    os.makedirs(secret, exist_ok=True)
    cases = [(os.path.join(secret, "missing.pem"), "could not open"),
             (secret, "is not a regular file"),
             (write_key_file(cluster, "secret-place/open.pem",
                             private_pem(ed25519.Ed25519PrivateKey.generate()), 0o644), "has group or world access"),
             (write_key_file(cluster, "secret-place/ec.pem", private_pem(ec.generate_private_key(ec.SECP256R1()))),
              "is not an Ed25519 key")]
    try:
        for path, problem in cases:
            cluster.reload({"presence.audit_signing_key_file": path})
            offset = cluster.log_size()
            with cluster.connect() as auditor:
                auditor.execute("SET ROLE ckpt_auditor")
                with pytest.raises(psycopg.Error) as caught:
                    auditor.execute("SELECT * FROM presence.audit_checkpoint(%s)", (session_id,))
            seen = " ".join(str(part) for part in (caught.value, caught.value.diag.message_detail,
                                                   caught.value.diag.message_hint))
            assert problem in seen and "secret-place" not in seen, seen
            wait_until(lambda: path in cluster.log_since(offset), what="the path in the server log")
    finally:
        cluster.reload({"presence.audit_signing_key_file": cluster.key_path})


def test_more_key_files(cluster, signing_key):
    """Keys an operator may get wrong are refused with what is wrong; a symlink to the key, and a
    key with text after it (a comment), work as they do for ssl_key_file."""
    from cryptography.hazmat.primitives.asymmetric import ed448
    session_id, _ = chain_session(cluster, rows=2)
    refused = [
        (write_key_file(cluster, "encrypted.pem", signing_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"))), "holds no usable private key"),
        (write_key_file(cluster, "ed448.pem", private_pem(ed448.Ed448PrivateKey.generate())), "is not an Ed25519 key"),
        (write_key_file(cluster, "public.pem", signing_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)),
         "holds no usable private key"),
        (write_key_file(cluster, "huge.pem", private_pem(signing_key) + b"#" * 100000), "is too large for a key"),
        (write_key_file(cluster, "empty.pem", b""), "holds no usable private key"),
    ]
    link = os.path.join(cluster.dir, "link.pem")
    os.symlink(cluster.key_path, link)
    accepted = [link, write_key_file(cluster, "trailing.pem", private_pem(signing_key) + b"comment\n")]
    try:
        for path, problem in refused:
            cluster.reload({"presence.audit_signing_key_file": path})
            with pytest.raises(psycopg.Error, match=problem):
                cluster.sql("SELECT * FROM presence.audit_checkpoint(%s)", (session_id,))
        for path in accepted:
            cluster.reload({"presence.audit_signing_key_file": path})
            assert cluster.sql1("SELECT chain_seq FROM presence.audit_checkpoint(%s)", (session_id,)) == 2
    finally:
        cluster.reload({"presence.audit_signing_key_file": cluster.key_path})


def test_maintenance_worker_under_locks_and_cancels(cluster):
    """Many sessions, one of them locked FOR UPDATE by an application for long, and the worker
    cancelled again and again while it signs: the others are signed meanwhile, the locked one once
    it is free, and the worker is never restarted."""
    sessions = [chain_session(cluster, rows=2) for _ in range(40)]
    locked_id, locked_uuid = sessions[0]
    signed = ("SELECT count(*) FROM presence.audit_checkpoints c WHERE c.session_id = ANY(%s::uuid[])"
              " AND c.chain_seq = 2")
    maintenance = "SELECT pid FROM pg_stat_activity WHERE backend_type = 'presence maintenance'"
    pid = wait_until(lambda: cluster.sql1(maintenance), timeout=30 * SCALE, what="the maintenance worker")
    offset = cluster.log_size()
    with cluster.connect() as holder:
        holder.execute("BEGIN")
        holder.execute("SELECT 1 FROM presence.collaboration_sessions WHERE session_id = %s FOR UPDATE", (locked_id,))
        try:
            cluster.reload({"presence.audit_checkpoint_interval": "1s"})
            deadline = time.monotonic() + 5 * SCALE
            while time.monotonic() < deadline:
                cluster.sql("SELECT pg_cancel_backend(%s)", (pid,))
                time.sleep(0.2)
            others = [str(u) for _, u in sessions[1:]]
            wait_until(lambda: cluster.sql1(signed, (others,)) == len(others), timeout=60 * SCALE,
                       what="the unlocked sessions signed")
            assert cluster.sql1(signed, ([str(locked_uuid)],)) == 0
            holder.execute("COMMIT")
            wait_until(lambda: cluster.sql1(signed, ([str(locked_uuid)],)) == 1, timeout=30 * SCALE,
                       what="the locked session signed once free")
        finally:
            cluster.reload({"presence.audit_checkpoint_interval": "0"})
    assert cluster.sql1(maintenance) == pid
    log = cluster.log_since(offset)
    assert "deadlock" not in log and "terminated by signal" not in log
    for session_id, _ in sessions:
        assert in_database(cluster, session_id)[0] is True


def test_checkpointed_row_dropped_and_chain_relinked(cluster, public_key_file, tmp_path):
    """The signed row deleted, the later rows renumbered down and relinked: every row links and
    hashes, but the row now at the signed chain_seq is another; and the verifier says which rows
    no checkpoint covers."""
    session_id, session_uuid = chain_session(cluster)
    checkpoint, _ = save_checkpoint(cluster, session_id, tmp_path)
    for _ in range(3):
        cluster.sql("SELECT presence.log_activity(%s, NULL, 'later.work')", (session_id,))
    result = verify_with(export(cluster, session_id, tmp_path, "before.csv"), checkpoint, public_key_file, session_id)
    assert result.returncode == 0, result.stderr
    assert "rows 9 to 11 are covered by no checkpoint" in result.stdout
    superuser(cluster, "DELETE FROM presence.activity_log WHERE session_id = %s AND chain_seq = 8", (session_uuid,))
    superuser(cluster, "UPDATE presence.activity_log SET chain_seq = chain_seq + 1000"
                       " WHERE session_id = %s AND chain_seq > 8", (session_uuid,))
    superuser(cluster, "UPDATE presence.activity_log SET chain_seq = chain_seq - 1001"
                       " WHERE session_id = %s AND chain_seq > 1000", (session_uuid,))
    superuser(cluster, "SELECT tamper.rehash(%s, 8, 1000000)", (session_uuid,))
    after = export(cluster, session_id, tmp_path, "after.csv")
    assert verify(after).returncode == 0
    result = verify_with(after, checkpoint, public_key_file, session_id)
    assert result.returncode == 1 and "the chain was rewritten and recomputed" in result.stderr
    assert in_database(cluster, session_id)[0] is False


def test_sessions_ended_while_signing_failed_are_signed_later(cluster):
    """A session that ended, its last rows written, while the worker could not sign (a bad key
    here) is signed once it can, however long that took: the worker looks back to the last pass
    that signed everything due, not just two intervals."""
    session_id, session_uuid = chain_session(cluster, rows=3)
    cluster.sql("UPDATE presence.collaboration_sessions SET status = 'completed' WHERE id = %s", (session_uuid,))
    count = "SELECT count(*) FROM presence.audit_checkpoints WHERE session_id = %s AND chain_seq = 3"
    offset = cluster.log_size()
    try:
        cluster.reload({"presence.audit_signing_key_file": os.path.join(cluster.dir, "missing.pem"),
                        "presence.audit_checkpoint_interval": "1s"})
        wait_until(lambda: cluster.log_since(offset).count("could not open presence.audit_signing_key_file") >= 3,
                   timeout=30 * SCALE, what="passes failing on the key")
        time.sleep(2)  # the rows are older than two intervals now
        cluster.reload({"presence.audit_signing_key_file": cluster.key_path})
        wait_until(lambda: cluster.sql1(count, (session_uuid,)) == 1, timeout=30 * SCALE,
                   what="the ended session signed")
    finally:
        cluster.reload({"presence.audit_signing_key_file": cluster.key_path,
                        "presence.audit_checkpoint_interval": "0"})


def test_checkpoint_in_an_open_transaction_does_not_stop_appends(cluster):
    """The auditor role may call audit_checkpoint and then keep its transaction open (or run a
    long statement): the session's chain must not stay locked meanwhile, or every append to it,
    the workers' included, waits or is put off until the auditor lets go."""
    session_id, _ = chain_session(cluster, rows=2)
    cluster.sql("DO $$ BEGIN CREATE ROLE ckpt_auditor LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$")
    cluster.sql("SELECT presence.grant_auditor_role('ckpt_auditor')")
    with cluster.connect() as auditor, cluster.connect() as app:
        auditor.execute("SET ROLE ckpt_auditor")
        auditor.execute("BEGIN")
        assert auditor.execute("SELECT chain_seq FROM presence.audit_checkpoint(%s)", (session_id,)).fetchone()[0] == 2
        app.execute("SELECT set_config('statement_timeout', %s, false)", ("%ds" % int(10 * SCALE),))
        app.execute("SELECT presence.log_activity(%s, NULL, 'while.auditing')", (session_id,))
        auditor.execute("COMMIT")
    assert cluster.sql1("SELECT chain_seq FROM presence.audit_chain_head(%s)", (session_id,)) == 3
    assert in_database(cluster, session_id)[0] is True


def test_checkpoints_race_the_chain_writers(cluster):
    """audit_checkpoint in two loops against each writer of the chain in turn (log_activity, add
    and remove_participant; purge_activity throughout; end_session at the end): no deadlock, no
    error, and the chain with all its checkpoints verifies afterwards.  log_activity runs against
    add_participant and remove_participant too: until 1.4 those locked the session row FOR UPDATE
    before the chain lock, which a log_activity holding the chain lock and waiting for its
    foreign-key row lock deadlocked with."""
    session_id, _ = chain_session(cluster, rows=2)
    member = str(uuid.uuid4())
    cluster.sql("INSERT INTO presence.users (id, username) VALUES (%s, %s)", (member, "member " + session_id))
    errors = []

    def loop(stop, statements):
        try:
            with cluster.connect() as conn:
                while not stop.is_set():
                    for sql in statements:
                        conn.execute(sql, (session_id,) + ((member,) if "%s, %s" in sql else ()))
        except psycopg.errors.ObjectNotInPrerequisiteState as error:
            if "has ended" not in str(error):  # add_participant once end_session won: expected
                errors.append(repr(error))
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(repr(error))

    def race(writers, then=None):
        stop = threading.Event()
        threads = [threading.Thread(target=loop, args=(stop, statements))
                   for statements in [["SELECT * FROM presence.audit_checkpoint(%s)"]] * 2 + writers
                   + [["SELECT presence.purge_activity('0 seconds') WHERE %s::text IS NOT NULL"]]]
        for thread in threads:
            thread.start()
        time.sleep(4 * SCALE)
        if then:
            cluster.sql(then, (session_id,))
        stop.set()
        for thread in threads:
            thread.join(30 * SCALE)

    race([["SELECT presence.log_activity(%s, NULL, 'race.work')"]])
    race([["SELECT presence.log_activity(%s, NULL, 'race.work')"],
          ["SELECT presence.add_participant(%s, %s)", "SELECT presence.remove_participant(%s, %s)"]],
         then="SELECT presence.end_session(%s)")
    assert errors == [], "\n".join(errors)
    cluster.sql("SELECT * FROM presence.audit_checkpoint(%s)", (session_id,))
    ok, _, _, checkpoints_checked, first_bad = in_database(cluster, session_id)
    assert ok and first_bad is None and checkpoints_checked > 1, (checkpoints_checked, first_bad)
