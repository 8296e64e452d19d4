#!/usr/bin/env bash
# bench/timeline-bench.sh: how fast present_at, presence_timeline and
# presence_intervals answer on a log of a million rows.
#
# Starts a throwaway cluster (test/cluster.sh, no WebSocket worker) and
# fills the activity log through presence.log_activity_batch() with
# created_ats, BATCH rows a call:
#
#   big     one session of BIG_ROWS rows (default 500,000) over 30 days,
#           USERS users (default 200) each cycling through join, away,
#           online, leave or timeout, with a non-presence row
#           (document.edited) between each two: 5 rows in 8 are presence
#           rows, the rest the partial index leaves out;
#   small   SESSIONS sessions (default 500) of SESSION_ROWS rows (default
#           1,000) each, the same mix, so the big session shares the
#           table with many others;
#   long    one user present all along, through LONG_ROWS (default
#           100,000) status changes, away and online in turn, over 30
#           days: what a replay costs after a long presence.
#
# Then each query runs REPEAT times (default 5) in the server, timed with
# clock_timestamp() around each call, and so does the replay of every
# session a ws worker starting without Redis runs
# (presence._close_presences_of_worker); the script prints the fastest and
# the median in milliseconds.  The
# cluster is destroyed at the end (KEEP_CLUSTER=1 keeps it).
#
#   bench/timeline-bench.sh
#   BIG_ROWS=100000 SESSIONS=100 bench/timeline-bench.sh
#
# Environment: BIG_ROWS, USERS, SESSIONS, SESSION_ROWS, LONG_ROWS, BATCH, REPEAT,
# PGPORT (default 26547), CLUSTER_DIR, KEEP_CLUSTER, PGBIN (as for
# test/cluster.sh).  Needs the extension installed (make && make install).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
big_rows=${BIG_ROWS:-500000}
users=${USERS:-200}
sessions=${SESSIONS:-500}
session_rows=${SESSION_ROWS:-1000}
long_rows=${LONG_ROWS:-100000}
batch=${BATCH:-10000}
repeat=${REPEAT:-5}
pgport=${PGPORT:-26547}
dir=${CLUSTER_DIR:-$(mktemp -d /tmp/presence-bench-timeline.XXXXXX)}

cleanup() {
	if [ "${KEEP_CLUSTER:-0}" = 1 ]; then
		echo "cluster kept in $dir (port $pgport)"
	else
		"$here/test/cluster.sh" destroy "$dir"
	fi
}
trap cleanup EXIT

"$here/test/cluster.sh" start "$dir" "$pgport" 0 >/dev/null

psql_bench() {
	"$here/test/cluster.sh" psql "$dir" -qtAX -v ON_ERROR_STOP=1 \
		-v big_rows="$big_rows" -v users="$users" -v sessions="$sessions" \
		-v session_rows="$session_rows" -v long_rows="$long_rows" -v batch="$batch" -v repeat="$repeat" "$@"
}

# bench.fill(session, rows, users, start, step): rows rows in batches, row
# i by user i % users at start + i * step; each user's k-th row is step
# k % 8 of its cycle.
psql_bench <<'SQL'
CREATE SCHEMA bench;
INSERT INTO presence.users (id, username)
SELECT ('00000000-0000-4000-8000-' || lpad(i::text, 12, '0'))::uuid, 'u' || i
  FROM generate_series(0, :users - 1) i;
SELECT count(presence.create_session('00000000-0000-4000-8000-000000000000', session_id => s))
  FROM (SELECT 'big' AS s UNION ALL SELECT 'long' UNION ALL SELECT 'small-' || i FROM generate_series(1, :sessions) i) t \g /dev/null

CREATE FUNCTION bench.fill(session text, total int, nusers int, batch int, start timestamptz, step interval)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
	written bigint := 0;
BEGIN
	FOR lo IN 0 .. total - 1 BY batch LOOP
		SELECT written + count(*) INTO written
		  FROM presence.log_activity_batch(
				 array_fill(session, ARRAY[least(batch, total - lo)]),
				 (SELECT array_agg(('00000000-0000-4000-8000-' || lpad((i % nusers)::text, 12, '0'))::uuid ORDER BY i)
					FROM generate_series(lo, least(lo + batch, total) - 1) i),
				 (SELECT array_agg(CASE (i / nusers) % 8
									   WHEN 0 THEN 'user_joined' WHEN 2 THEN 'status_changed'
									   WHEN 4 THEN 'status_changed'
									   WHEN 6 THEN CASE WHEN (i / nusers) % 16 = 6 THEN 'user_left' ELSE 'user_timeout' END
									   WHEN 7 THEN 'user_left'
									   ELSE 'document.edited' END ORDER BY i)
					FROM generate_series(lo, least(lo + batch, total) - 1) i),
				 (SELECT array_agg(CASE (i / nusers) % 8
									   WHEN 2 THEN '{"status": "away", "automatic": true}'
									   WHEN 4 THEN '{"status": "online", "automatic": true}'
									   ELSE '{}' END::jsonb ORDER BY i)
					FROM generate_series(lo, least(lo + batch, total) - 1) i),
				 created_ats => (SELECT array_agg(start + i * step ORDER BY i)
								   FROM generate_series(lo, least(lo + batch, total) - 1) i));
	END LOOP;
	RETURN written;
END $$;

CREATE PROCEDURE bench.fill_all(big_rows int, nusers int, nsessions int, session_rows int, batch int)
LANGUAGE plpgsql AS $$
BEGIN
	PERFORM bench.fill('big', big_rows, nusers, batch, '2026-01-01 00:00+00', interval '30 days' / big_rows);
	COMMIT;
	FOR s IN 1 .. nsessions LOOP
		PERFORM bench.fill('small-' || s, session_rows, 20, batch, '2026-01-01 00:00+00',
						   interval '30 days' / session_rows);
		COMMIT;
	END LOOP;
END $$;

CREATE PROCEDURE bench.fill_long(total int)
LANGUAGE plpgsql AS $$
BEGIN
	PERFORM presence.log_activity_batch('{long}', '{00000000-0000-4000-8000-000000000001}', '{user_joined}', NULL,
										created_ats => '{2026-01-01 00:00+00}');
	PERFORM presence.log_activity_batch(
		array_fill('long'::text, ARRAY[total]),
		array_fill('00000000-0000-4000-8000-000000000001'::uuid, ARRAY[total]),
		array_fill('status_changed'::text, ARRAY[total]),
		(SELECT array_agg(jsonb_build_object('status', CASE i % 2 WHEN 1 THEN 'away' ELSE 'online' END,
											 'automatic', true) ORDER BY i)
		   FROM generate_series(1, total) i),
		created_ats => (SELECT array_agg('2026-01-01 00:00+00'::timestamptz + i * (interval '30 days' / total) ORDER BY i)
						  FROM generate_series(1, total) i));
END $$;

-- ms of each of n runs of query, fastest and median
CREATE FUNCTION bench.time(query text, n int, OUT fastest numeric, OUT median numeric, OUT result_rows bigint)
LANGUAGE plpgsql AS $$
DECLARE
	t0 timestamptz;
	runs numeric[] := '{}';
BEGIN
	FOR k IN 1 .. n LOOP
		t0 := clock_timestamp();
		EXECUTE 'SELECT count(*) FROM (' || query || ') q' INTO result_rows;
		runs := runs || (extract(epoch FROM clock_timestamp() - t0) * 1000)::numeric;
	END LOOP;
	SELECT round(min(r), 1), round(percentile_disc(0.5) WITHIN GROUP (ORDER BY r), 1)
	  INTO fastest, median FROM unnest(runs) r;
END $$;
SQL

echo "filling: big session $big_rows rows ($users users), $sessions sessions x $session_rows rows," \
	"long session $long_rows status changes"
start=$(date +%s)
echo "CALL bench.fill_all(:big_rows, :users, :sessions, :session_rows, :batch)" | psql_bench
echo "CALL bench.fill_long(:long_rows)" | psql_bench
psql_bench -c "VACUUM ANALYZE presence.activity_log"
echo "filled in $(($(date +%s) - start)) s: $(psql_bench -c "SELECT count(*) FROM presence.activity_log") rows," \
	"$(psql_bench -c "SELECT count(*) FROM presence.activity_log a JOIN presence.collaboration_sessions s ON s.id = a.session_id
	 WHERE s.session_id = 'big' AND a.activity_type IN ('user_joined', 'user_left', 'user_timeout', 'status_changed')") presence rows in big"

echo
echo "query | fastest ms | median ms | rows"
psql_bench -F ' | ' <<'SQL'
SELECT label, t.fastest, t.median, t.result_rows
  FROM (VALUES
	(1, 'big: present_at, day 1', $$SELECT * FROM presence.present_at('big', '2026-01-02 00:00+00')$$),
	(2, 'big: present_at, day 15', $$SELECT * FROM presence.present_at('big', '2026-01-15 12:00+00')$$),
	(3, 'big: present_at, the end', $$SELECT * FROM presence.present_at('big', '2026-02-01 00:00+00')$$),
	(4, 'big: presence_timeline, 1 hour on day 15',
	 $$SELECT * FROM presence.presence_timeline('big', '2026-01-15 12:00+00', '2026-01-15 13:00+00')$$),
	(5, 'big: presence_timeline, all 30 days',
	 $$SELECT * FROM presence.presence_timeline('big', '-infinity', 'infinity')$$),
	(6, 'big: presence_intervals, day 15',
	 $$SELECT * FROM presence.presence_intervals('big', '2026-01-15 00:00+00', '2026-01-16 00:00+00')$$),
	(7, 'small: present_at, day 15', $$SELECT * FROM presence.present_at('small-7', '2026-01-15 12:00+00')$$),
	(8, 'small: presence_timeline, all',
	 $$SELECT * FROM presence.presence_timeline('small-7', '-infinity', 'infinity')$$),
	(9, 'small: presence_intervals, all',
	 $$SELECT * FROM presence.presence_intervals('small-7', '-infinity', 'infinity')$$),
	(10, 'long: present_at, the end', $$SELECT * FROM presence.present_at('long', '2026-01-31 00:00+00')$$),
	(11, 'long: presence_timeline, 1 hour on day 30',
	 $$SELECT * FROM presence.presence_timeline('long', '2026-01-30 12:00+00', '2026-01-30 13:00+00')$$),
	(12, 'all 502 sessions: a ws worker''s start without Redis (1 presence open, not its own)',
	 $$SELECT presence._close_presences_of_worker('bench/0')$$)
	) AS q(n, label, query),
	LATERAL bench.time(q.query, :repeat) t
 ORDER BY q.n;
SQL

