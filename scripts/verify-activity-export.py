#!/usr/bin/env python3
"""Verifies a presence.export_activity_csv() export without the database.

    psql -XAtc "SELECT presence.export_activity_csv('my-session')" > export.csv
    scripts/verify-activity-export.py export.csv [expected-head-row-hash]
    scripts/verify-activity-export.py export.csv --session-id my-session \
        --checkpoint checkpoint.json [--checkpoint older.json ...] --public-key audit.pub.pem

Recomputes every row's hash with the recipe of docs/sql-reference.md ("The
audit chain") and checks that each row links to the one before.  Prints the
chain head (chain_seq, row_hash): compare it with a head recorded earlier
(presence.audit_chain_head), or pass that hash as the second argument,
since cutting off the newest rows leaves a chain that verifies.

With --checkpoint, each signed checkpoint saved earlier (presence.
audit_checkpoint(), docs/sql-reference.md "Signed checkpoints") must carry
a valid Ed25519 signature of the --public-key (a PEM public key) and match
the export: the export must reach its chain_seq (else it was cut), and the
row there must hash to the signed row_hash (else the chain was recomputed).
A checkpoint file holds one JSON object a line (row_to_json's output), a
JSON array of them, or CSV with a header (psql --csv); its fields are
chain_seq, row_hash, signed_at and signature, and optionally session_id
(the session's text id; else --session-id gives it) and session_uuid.  A
row of the table presence.audit_checkpoints (it has public_key) works as
well: its session_id is the session's uuid.
The signature check needs python3-cryptography; the rest needs only the
Python standard library.

Exit status: 0 when everything verifies, 1 when something does not (the
first problem is printed), 2 when the arguments or an input file cannot
be used.
"""

import argparse
import csv
import datetime
import hashlib
import io
import json
import re
import struct
import sys

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
HASHED = ("chain_seq", "id", "session_uuid", "user_id", "activity_type", "details",
          "ip_address", "user_agent")
# The export's header, exactly: a column more, a column twice or one
# missing would let a reader see cells the hashes do not vouch for.
COLUMNS = ["id", "created_at", "user_id", "username", "activity_type", "details", "ip_address",
           "user_agent", "chain_seq", "row_hash", "session_uuid", "prev_hash"]
# What the export's formula neutralisation puts a ' in front of.
NEUTRALISED = ("=", "+", "-", "@", "\t", "\r", "'")


class NotAsExported(ValueError):
    """A cell the export cannot have written, though its value may hash right."""


def parse_csv(text):
    """RFC 4180 records as lists of (text, was_quoted) cells: the csv module
    cannot tell an empty cell (NULL) from "" (the empty string).  Every
    record ends in CR LF; after the last only psql's LF may follow, since
    whatever else did would be read by a spreadsheet and never checked."""
    records, record, i = [], [], 0
    while text[i:] not in ("", "\n"):
        if text[i] == '"':
            j, pieces = i + 1, []
            while True:
                k = text.index('"', j)
                pieces.append(text[j:k])
                if text[k + 1:k + 2] != '"':
                    break
                pieces.append('"')
                j = k + 2
            record.append(("".join(pieces), True))
            i = k + 1
        else:
            k = i
            while k < len(text) and text[k] not in ",\r":
                k += 1
            record.append((text[i:k], False))
            i = k
        if text.startswith(",", i):
            i += 1
        elif text.startswith("\r\n", i):
            records.append(record)
            record, i = [], i + 2
        else:
            raise ValueError("malformed CSV at character %d" % i)
    return records


def value(cell):
    """A cell's value: an unquoted empty cell is NULL, and one leading ' (the
    export's formula neutralisation) is dropped.  The ' must be where the
    export puts it and nowhere else: a formula without it would run in the
    auditor's spreadsheet, and one before anything else would show a value
    the hash does not cover.  Quotes too: an unquoted LF shows a spreadsheet
    a row that is not one."""
    text, quoted = cell
    if text == "" and not quoted:
        return None
    if quoted != (text == "" or any(c in text for c in ',"\r\n')):
        raise NotAsExported("a cell is %s where the export does not do so" % ("quoted" if quoted else "not quoted"))
    if text.startswith("'"):
        text = text[1:]
    elif text.startswith(NEUTRALISED):
        raise NotAsExported("a cell starts with %r without the export's ' in front" % text[:1])
    if cell[0].startswith("'") and not text.startswith(NEUTRALISED):
        raise NotAsExported("a cell has a ' in front that the export does not put there")
    return text


def field(v):
    """F(x): the 4-byte big-endian length and the UTF-8 bytes, ffffffff for NULL."""
    if v is None:
        return b"\xff\xff\xff\xff"
    data = v.encode("utf-8")
    return struct.pack(">I", len(data)) + data


def microseconds(iso):
    """created_at as exported (UTC, microseconds) to microseconds since 1970."""
    t = datetime.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)
    return str((t - EPOCH) // datetime.timedelta(microseconds=1))


CHECKPOINT_DOMAIN = b"presence-audit-checkpoint-v1\x00"
TIMESTAMP = re.compile(r"(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?"
                       r"(?:(Z)|([+-])(\d\d)(?::?(\d\d))?(?::?(\d\d))?)$")


def fail(message):
    print(message, file=sys.stderr)
    sys.exit(1)


def unusable(message):
    print(message, file=sys.stderr)
    sys.exit(2)


def timestamp_microseconds(text):
    """A timestamptz as PostgreSQL writes it (JSON or text output, any zone) to
    microseconds since 1970, exactly."""
    m = TIMESTAMP.match(text.strip())
    if not m:
        raise ValueError("not a timestamp: %r" % text)
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    fraction = int((m.group(7) or "").ljust(6, "0"))
    days = (datetime.date(year, month, day) - EPOCH.date()).days
    local = ((days * 24 + hour) * 60 + minute) * 60 + second
    offset = 0
    if m.group(9):
        offset = int(m.group(10)) * 3600 + int(m.group(11) or 0) * 60 + int(m.group(12) or 0)
        offset = -offset if m.group(9) == "-" else offset
    return (local - offset) * 1000000 + fraction


def hex_bytes(text):
    """bytea as PostgreSQL writes it (\\x...), or plain hex."""
    text = text.strip()
    return bytes.fromhex(text[2:] if text.startswith("\\x") else text)


def read_checkpoints(path):
    """The checkpoints of a file: JSON objects a line, a JSON array, or CSV."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            text = f.read()
        if text.lstrip().startswith("["):
            items = json.loads(text)
        elif text.lstrip().startswith("{"):
            items = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            items = list(csv.DictReader(io.StringIO(text)))
        checkpoints = []
        for item in items:
            if "public_key" in item:
                # a row of presence.audit_checkpoints, whose session_id is the session's uuid
                item = dict(item, session_uuid=item.get("session_id"), session_id=None)
            checkpoints.append({
                "file": path,
                "chain_seq": int(item["chain_seq"]),
                "row_hash": hex_bytes(item["row_hash"]),
                "signed_at": timestamp_microseconds(item["signed_at"]),
                "signature": hex_bytes(item["signature"]),
                "session_id": item.get("session_id") or None,
                "session_uuid": item.get("session_uuid") or None,
            })
        if not checkpoints:
            raise ValueError("no checkpoint in it")
        return checkpoints
    except (OSError, ValueError, KeyError, TypeError) as error:
        unusable("%s: not a checkpoint file: %s" % (path, error))


def checkpoint_message(session_uuid, session_id, checkpoint):
    """The signed message, version 1 (docs/sql-reference.md, "Signed checkpoints")."""
    name = session_id.encode("utf-8")
    return (CHECKPOINT_DOMAIN + session_uuid.bytes + struct.pack(">I", len(name)) + name
            + struct.pack(">q", checkpoint["chain_seq"]) + checkpoint["row_hash"]
            + struct.pack(">q", checkpoint["signed_at"]))


def load_public_key(path):
    try:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
        from cryptography.hazmat.primitives.serialization import load_pem_public_key
    except ImportError:
        unusable("checking signatures needs python3-cryptography")
    try:
        with open(path, "rb") as f:
            key = load_pem_public_key(f.read())
    except (OSError, ValueError) as error:
        unusable("%s: not a PEM public key: %s" % (path, error))
    if not isinstance(key, Ed25519PublicKey):
        unusable("%s: not an Ed25519 public key" % path)
    return key


def verify_checkpoints(args, chain):
    """Each checkpoint against its signature and the export's chain.  chain
    maps chain_seq to the recomputed row hash; it also holds the link
    before the first row (its prev_hash: the anchor of a purge)."""
    from cryptography.exceptions import InvalidSignature
    import uuid

    key = load_public_key(args.public_key)
    if not chain["rows"]:
        fail("the export has no rows, but a checkpoint was signed: the chain was cut")
    session_uuid = uuid.UUID(chain["session_uuid"])
    first, last = chain["first_seq"], chain["last_seq"]
    covered = 0
    for checkpoint in sorted((c for path in args.checkpoint for c in read_checkpoints(path)),
                             key=lambda c: c["chain_seq"]):
        where = "checkpoint at chain_seq %d (%s)" % (checkpoint["chain_seq"], checkpoint["file"])
        if checkpoint["session_uuid"] and uuid.UUID(checkpoint["session_uuid"]) != session_uuid:
            fail("%s is a checkpoint of another session (%s, not %s)"
                 % (where, checkpoint["session_uuid"], session_uuid))
        if checkpoint["session_id"] and args.session_id and checkpoint["session_id"] != args.session_id:
            fail("%s is a checkpoint of another session (%s, not %s)"
                 % (where, checkpoint["session_id"], args.session_id))
        session_id = checkpoint["session_id"] or args.session_id
        if not session_id:
            unusable("%s: give the session's id with --session-id" % where)
        try:
            key.verify(checkpoint["signature"], checkpoint_message(session_uuid, session_id, checkpoint))
        except InvalidSignature:
            fail("%s: the signature does not verify with %s (forged, signed by another key, "
                 "or a checkpoint of another session)" % (where, args.public_key))
        seq = checkpoint["chain_seq"]
        if seq > last:
            fail("%s: the export ends at chain_seq %d, before the signed chain_seq: "
                 "the newest rows were cut off" % (where, last))
        if seq < first - 1:
            print("%s: signed, about rows purged before the export's first row" % where)
            continue
        if chain["rows"][seq] != checkpoint["row_hash"]:
            fail("%s: the export's row there hashes to %s, the signed head is %s: "
                 "the chain was rewritten and recomputed" % (where, chain["rows"][seq].hex(),
                                                            checkpoint["row_hash"].hex()))
        print("%s: signed and matches the export" % where)
        covered = max(covered, seq)
    # what a superuser may still have rewritten, undetectably: the rows no checkpoint pins
    if covered < last:
        print("rows %d to %d are covered by no checkpoint, only by the chain" % (max(covered + 1, first), last))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("export")
    parser.add_argument("expected_head", nargs="?", help="the row_hash the head must have")
    parser.add_argument("--checkpoint", action="append", default=[], metavar="FILE",
                        help="a signed checkpoint file (repeatable)")
    parser.add_argument("--public-key", metavar="PEM", help="the Ed25519 public key of the checkpoints")
    parser.add_argument("--session-id", help="the session's text id, when the checkpoints do not carry it")
    args = parser.parse_args()
    if bool(args.checkpoint) != bool(args.public_key):
        parser.error("--checkpoint and --public-key go together")
    try:
        with open(args.export, encoding="utf-8", newline="") as f:
            header, *rows = parse_csv(f.read())
    except (OSError, ValueError) as error:
        unusable("not an export: %s" % error)
    if header != [(name, False) for name in COLUMNS]:
        unusable("not an export: the header is not %s" % ",".join(COLUMNS))
    if any(len(cells) != len(COLUMNS) for cells in rows):
        unusable("not an export: a row does not have %d cells" % len(COLUMNS))
    previous = None
    chain = {"rows": {}, "session_uuid": None, "first_seq": None, "last_seq": 0}
    for number, cells in enumerate(rows, 1):
        try:
            row = dict(zip(COLUMNS, (value(cell) for cell in cells)))
        except NotAsExported as error:
            fail("row %d: not as the export writes it: %s" % (number, error))
        if chain["session_uuid"] is not None and row["session_uuid"] != chain["session_uuid"]:
            fail("chain_seq %s (id %s): a row of session %s in the chain of %s"
                 % (row["chain_seq"], row["id"], row["session_uuid"], chain["session_uuid"]))
        prev_hash = bytes.fromhex(row["prev_hash"])
        if previous is not None and prev_hash != previous:
            fail("chain_seq %s (id %s): does not link to the row before" % (row["chain_seq"], row["id"]))
        digest = hashlib.sha256(prev_hash + b"".join(field(row[name]) for name in HASHED)
                                + field(microseconds(row["created_at"]))).digest()
        if digest.hex() != row["row_hash"]:
            fail("chain_seq %s (id %s): row_hash does not match the row" % (row["chain_seq"], row["id"]))
        seq = int(row["chain_seq"])
        if chain["first_seq"] is None:
            chain.update(first_seq=seq, session_uuid=row["session_uuid"])
            chain["rows"][seq - 1] = prev_hash
        elif seq != chain["last_seq"] + 1:
            fail("chain_seq %s (id %s): does not follow chain_seq %d" % (row["chain_seq"], row["id"], chain["last_seq"]))
        chain["rows"][seq] = digest
        chain["last_seq"] = seq
        previous = digest
    head = (rows and (row["chain_seq"], row["row_hash"])) or ("0", "none")
    if args.expected_head and head[1] != args.expected_head:
        fail("%d rows verify, but the head %s is not the expected %s" % (len(rows), head[1], args.expected_head))
    if args.checkpoint:
        verify_checkpoints(args, chain)
    print("%d rows verify; head: chain_seq %s, row_hash %s" % (len(rows), head[0], head[1]))


if __name__ == "__main__":
    main()
