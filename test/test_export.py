"""scripts/verify-activity-export.py against real exports.

(Usernames are exported for reading but not hashed: the chain covers the
user_id.  So an edited username is not an edit this can catch.)

A throwaway cluster without a WebSocket worker logs activity with every
awkward value the CSV has to carry (quotes, commas, CR/LF, formula
characters, NULL beside empty strings, networks, non-ASCII); the export
must verify without the database, and any edit to it must not.

    /usr/bin/python3 -m pytest test/test_export.py
"""

import os
import subprocess
import sys
import uuid

import pytest

from test_tokens import TokenCluster

HERE = os.path.dirname(os.path.abspath(__file__))
VERIFY = os.path.join(os.path.dirname(HERE), "scripts", "verify-activity-export.py")

AWKWARD = [
    ("=cmd|' /C calc'!A0", '{"text": "a, \\"quoted\\"\\r\\nline"}', "192.0.2.7", "+agent, \"x\"\r\nnext"),
    ("'apostrophe", '{"n": [1, 2.50, -3e5], "unicode": "café ✓ 😀"}', "10.0.0.0/8", ""),
    ("@user", "{}", "2001:db8::/32", None),
    ("-minus", '{"": null, "tab": "\\t"}', None, "\tindented"),
    ("plain", '{"nested": {"deep": [true, false, null]}}', "2001:db8::1", "'quoted agent\rreturn"),
]


@pytest.fixture(scope="module")
def export_cluster(request):
    cluster = TokenCluster()
    request.addfinalizer(cluster.destroy)
    return cluster


@pytest.fixture(scope="module")
def exported(export_cluster, tmp_path_factory):
    """The CSV export of a session with awkward rows, and its head."""
    session_id = "export-" + uuid.uuid4().hex[:8]
    owner = str(uuid.uuid4())
    with export_cluster.connect() as conn:
        conn.execute("INSERT INTO presence.users (id, username) VALUES (%s, %s)", (owner, "owner " + session_id))
        conn.execute("SELECT presence.create_session(%s, session_id => %s)", (owner, session_id))
        users = []
        for name, *_ in AWKWARD:
            users.append(str(uuid.uuid4()))
            conn.execute("INSERT INTO presence.users (id, username) VALUES (%s, %s)", (users[-1], name))
        conn.execute("""SELECT count(*) FROM presence.log_activity_batch(%s, %s, %s, %s::jsonb[], %s::inet[], %s,
                                                                     ARRAY[NULL, '1969-07-20 20:17:40.5+00']::timestamptz[]
                                                                     || array_fill(NULL::timestamptz, ARRAY[%s]))""",
                     ([session_id] * len(AWKWARD), users, ["note.added"] * len(AWKWARD),
                      [row[1] for row in AWKWARD], [row[2] for row in AWKWARD], [row[3] for row in AWKWARD],
                      len(AWKWARD) - 2))
        conn.execute("SELECT presence.log_activity(%s, NULL, 'system.note')", (session_id,))
        csv_text = conn.execute("SELECT presence.export_activity_csv(%s)", (session_id,)).fetchone()[0]
        head = conn.execute("SELECT row_hash FROM presence.audit_chain_head(%s)", (session_id,)).fetchone()[0]
        assert conn.execute("SELECT ok FROM presence.verify_audit_chain(%s)", (session_id,)).fetchone()[0]
    path = tmp_path_factory.mktemp("export") / "export.csv"
    path.write_bytes(csv_text.encode("utf-8"))
    return path, csv_text, head


def verify(path, *args):
    return subprocess.run([sys.executable, VERIFY, str(path), *args], capture_output=True, text=True)


def test_export_verifies(exported):
    path, _, head = exported
    result = verify(path, head)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("%d rows verify" % (len(AWKWARD) + 2))
    assert head in result.stdout


def test_export_has_the_awkward_values(exported):
    _, csv_text, _ = exported
    assert "'=cmd|' /C calc'!A0" in csv_text
    assert "''apostrophe" in csv_text
    assert "\"''quoted agent\r" in csv_text
    assert '"\'+agent, ""x""\r\nnext"' in csv_text
    assert "10.0.0.0/8" in csv_text and "2001:db8::/32" in csv_text
    assert ',"",' in csv_text          # the empty user agent, not NULL


@pytest.mark.parametrize("edit", [
    ("note.added", "note.addeD", 1),       # a value
    ("10.0.0.0/8", "10.0.0.0/9", 1),       # an address
    ("''quoted agent", "'quoted agent", 1),  # the escaping of a leading '
    (',"",', ",,", 1),                     # the empty string made NULL
    ("café", "cafe", 1),                   # non-ASCII details
])
def test_edited_export_fails(exported, tmp_path, edit):
    path, csv_text, _ = exported
    old, new, count = edit
    edited = tmp_path / "edited.csv"
    edited.write_bytes(csv_text.replace(old, new, count).encode("utf-8"))
    result = verify(edited)
    assert result.returncode == 1
    assert any(why in result.stderr for why in ("does not match", "does not link", "not as the export writes it"))


def test_dropped_row_fails(exported, tmp_path):
    path, csv_text, _ = exported
    lines = csv_text.split("\r\n")
    edited = tmp_path / "dropped.csv"
    edited.write_bytes("\r\n".join(line for line in lines if "'@user," not in line).encode("utf-8"))
    result = verify(edited)
    assert result.returncode == 1
    assert "does not link" in result.stderr


def test_cut_off_tail_shows_only_against_the_head(exported, tmp_path):
    path, csv_text, head = exported
    records = csv_text.split("\r\n")
    edited = tmp_path / "cut.csv"
    edited.write_bytes("\r\n".join(records[:-2] + [""]).encode("utf-8"))
    assert verify(edited).returncode == 0
    result = verify(edited, head)
    assert result.returncode == 1
    assert "is not the expected" in result.stderr
