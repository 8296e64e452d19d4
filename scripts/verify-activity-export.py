#!/usr/bin/env python3
"""Verifies a presence.export_activity_csv() export without the database.

    psql -XAtc "SELECT presence.export_activity_csv('my-session')" > export.csv
    scripts/verify-activity-export.py export.csv [expected-head-row-hash]

Recomputes every row's hash with the recipe of docs/sql-reference.md ("The
audit chain") and checks that each row links to the one before.  Prints the
chain head (chain_seq, row_hash): compare it with a head recorded earlier
(presence.audit_chain_head), or pass that hash as the second argument,
since cutting off the newest rows leaves a chain that verifies.  Exits 1 at
the first row that does not verify.  Needs only the Python standard library.
"""

import datetime
import hashlib
import struct
import sys

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
HASHED = ("chain_seq", "id", "session_uuid", "user_id", "activity_type", "details",
          "ip_address", "user_agent")


def parse_csv(text):
    """RFC 4180 records as lists of (text, was_quoted) cells: the csv module
    cannot tell an empty cell (NULL) from "" (the empty string)."""
    records, record, i = [], [], 0
    while i < len(text) and text[i] != "\n":
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
    export's formula neutralisation) is dropped."""
    text, quoted = cell
    if text == "" and not quoted:
        return None
    return text[1:] if text.startswith("'") else text


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


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    with open(sys.argv[1], encoding="utf-8", newline="") as f:
        try:
            header, *rows = parse_csv(f.read())
        except ValueError as error:
            sys.exit("not an export: %s" % error)
    names = [value(cell) for cell in header]
    if not set(HASHED + ("prev_hash", "row_hash", "created_at")) <= set(names) or \
            any(len(cells) != len(names) for cells in rows):
        sys.exit("not an export: the header or a row's cell count is wrong")
    previous = None
    for cells in rows:
        row = dict(zip(names, (value(cell) for cell in cells)))
        prev_hash = bytes.fromhex(row["prev_hash"])
        if previous is not None and prev_hash != previous:
            sys.exit("chain_seq %s (id %s): does not link to the row before" % (row["chain_seq"], row["id"]))
        digest = hashlib.sha256(prev_hash + b"".join(field(row[name]) for name in HASHED)
                                + field(microseconds(row["created_at"]))).digest()
        if digest.hex() != row["row_hash"]:
            sys.exit("chain_seq %s (id %s): row_hash does not match the row" % (row["chain_seq"], row["id"]))
        previous = digest
    head = (rows and (row["chain_seq"], row["row_hash"])) or ("0", "none")
    if len(sys.argv) == 3 and head[1] != sys.argv[2]:
        sys.exit("%d rows verify, but the head %s is not the expected %s" % (len(rows), head[1], sys.argv[2]))
    print("%d rows verify; head: chain_seq %s, row_hash %s" % (len(rows), head[0], head[1]))


if __name__ == "__main__":
    main()
