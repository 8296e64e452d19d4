"""log_activity_batch (src/activity_batch.c) against other transactions.

The batch takes the locks a trigger-driven INSERT takes, in the same
order: each session's chain lock, then the session's row FOR KEY SHARE.
In the other order it deadlocked with a transaction that logged activity
in a session and then ended it (end_session locks the row FOR UPDATE):
that transaction held the chain lock and waited for the batch's row
lock, the batch held the row lock and waited for the chain lock.
"""

import threading

import psycopg


def wait_for_lock_wait(cluster, pid):
    """Until backend pid waits for a heavyweight lock."""
    from conftest import wait_until
    wait_until(lambda: cluster.sql1("SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s",
                                    (pid,)), what="backend %d waiting for a lock" % pid)


def test_batch_and_log_then_end_session_do_not_deadlock(cluster, user):
    sid = cluster.create_session(user())
    writer = cluster.connect()
    batcher = cluster.connect()
    try:
        writer.execute("BEGIN")
        writer.execute("SELECT presence.log_activity(%s, NULL, 'rv.first')", (sid,))
        outcome = {}

        def batch():
            try:
                rows = batcher.execute("SELECT count(*) FROM presence.log_activity_batch(ARRAY[%s], ARRAY[NULL]::uuid[],"
                                       " ARRAY['rv.batch'])", (sid,)).fetchone()
                outcome["rows"] = rows[0]
            except psycopg.Error as e:
                outcome["error"] = str(e)

        thread = threading.Thread(target=batch)
        thread.start()
        wait_for_lock_wait(cluster, batcher.info.backend_pid)
        # deadlock_timeout is 1s: a deadlock would fail one of the two
        writer.execute("SELECT presence.end_session(%s)", (sid,))
        writer.execute("COMMIT")
        thread.join(30)
        assert outcome == {"rows": 1}
    finally:
        writer.close()
        batcher.close()
    assert [r[0] for r in cluster.activity_rows(sid)][-3:] == ["rv.first", "session_ended", "rv.batch"]
    assert cluster.sql("SELECT ok FROM presence.verify_audit_chain(%s)", (sid,)) == [(True,)]


def test_batch_waits_for_a_user_being_deleted(cluster, user):
    """A user deleted while the batch waits for its row: refused as a foreign-key check would."""
    sid = cluster.create_session(user())
    doomed = cluster.create_user()
    deleter = cluster.connect()
    batcher = cluster.connect()
    try:
        deleter.execute("BEGIN")
        deleter.execute("DELETE FROM presence.users WHERE id = %s", (doomed.id,))
        outcome = {}

        def batch():
            try:
                batcher.execute("SELECT count(*) FROM presence.log_activity_batch(ARRAY[%s, %s],"
                                " ARRAY[NULL, %s]::uuid[], ARRAY['rv.a', 'rv.b'])", (sid, sid, doomed.id)).fetchone()
                outcome["rows"] = True
            except psycopg.Error as e:
                outcome["error"] = (e.sqlstate, str(e))

        thread = threading.Thread(target=batch)
        thread.start()
        wait_for_lock_wait(cluster, batcher.info.backend_pid)
        deleter.execute("COMMIT")
        thread.join(30)
        assert outcome.get("error", (None,))[0] == "P0002", outcome
        assert "does not exist" in outcome["error"][1]
    finally:
        deleter.close()
        batcher.close()
    assert [r[0] for r in cluster.activity_rows(sid) if r[0].startswith("rv.")] == []
