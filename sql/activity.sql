--
-- activity: log_activity, log_activity_batch (the multi-row path),
-- session_activity, audit_trail, activity_statistics, and the live
-- functions as far as they work without a WebSocket worker.
--
INSERT INTO presence.users (id, username) VALUES
	('00000000-0000-4000-8000-000000000301', 'act-owner'),
	('00000000-0000-4000-8000-000000000302', 'act-ann'),
	('00000000-0000-4000-8000-000000000303', 'act-ben'),
	('00000000-0000-4000-8000-000000000304', 'act-cat'),
	('00000000-0000-4000-8000-000000000305', 'act-dan');
SELECT presence.create_session('00000000-0000-4000-8000-000000000301', session_id => 'act-s');
SELECT presence.create_session('00000000-0000-4000-8000-000000000301', session_id => 'act-t');

--
-- log_activity
--
SELECT presence.log_activity('act-s', '00000000-0000-4000-8000-000000000302', 'cursor.moved',
							 '{"position": 3}') IS NOT NULL AS logged;
-- details default to {}; a NULL user is a system event.
SELECT presence.log_activity('act-s', '00000000-0000-4000-8000-000000000303', 'comment_added') IS NOT NULL AS logged;
SELECT presence.log_activity('act-s', NULL, 'system.note', '{"text": "maintenance"}') IS NOT NULL AS logged;
-- The id returned is the row's.
SELECT presence.log_activity('act-s', NULL, 'system.check') AS logged_id \gset
SELECT activity_type, chain_seq FROM presence.activity_log WHERE id = :'logged_id';
-- The longest activity type is 64 characters.
SELECT presence.log_activity('act-s', NULL, 'a' || repeat('0', 63)) IS NOT NULL AS logged;

-- Errors, in the order they are checked.
SELECT regress.try($$SELECT presence.log_activity(NULL, NULL, 'x')$$);
SELECT regress.try($$SELECT presence.log_activity('act-s', NULL, NULL)$$);
SELECT regress.try($$SELECT presence.log_activity('act-s', NULL, 'Bad')$$);
SELECT regress.try($$SELECT presence.log_activity('act-s', NULL, '1abc')$$);
SELECT regress.try($$SELECT presence.log_activity('act-s', NULL, 'a-b')$$);
SELECT regress.try($$SELECT presence.log_activity('act-s', NULL, 'a' || repeat('0', 64))$$);
SELECT regress.try($$SELECT presence.log_activity('act-s', NULL, '')$$);
SELECT regress.try($$SELECT presence.log_activity('act-s', NULL, 'x', NULL)$$);
SELECT regress.try($$SELECT presence.log_activity('act-s', NULL, 'x', '"text"')$$);
SELECT regress.try($$SELECT presence.log_activity('act-s', NULL, 'x', '[1, 2]')$$);
SELECT regress.try($$SELECT presence.log_activity('act-s', NULL, 'x', jsonb_build_object('t', repeat('x', 65527)))$$);
SELECT regress.try($$SELECT presence.log_activity('act-s', NULL, 'x', jsonb_build_object('t', repeat('x', 65528)))$$);
SELECT regress.try($$SELECT presence.log_activity('act-none', NULL, 'x')$$);
SELECT regress.try($$SELECT presence.log_activity('act-s', '00000000-0000-4000-8000-0000000003ff', 'x')$$);
-- A bad type is reported before an unknown session.
SELECT regress.try($$SELECT presence.log_activity('act-none', NULL, 'Bad')$$);

--
-- log_activity_batch: parallel arrays, one INSERT; row i is link i.
--
SELECT count(*) AS inserted FROM presence.log_activity_batch(
	ARRAY['act-t', 'act-t', 'act-s', 'act-t'],
	ARRAY['00000000-0000-4000-8000-000000000302', NULL, '00000000-0000-4000-8000-000000000303',
		  '00000000-0000-4000-8000-000000000304']::uuid[],
	ARRAY['b.one', 'b.two', 'b.three', 'b.four'],
	ARRAY['{"n": 1}', NULL, '{"n": 3}', '{"n": 4}']::jsonb[],
	ARRAY['10.0.0.1', NULL, '2001:db8::1', '192.168.0.0/24']::inet[],
	ARRAY['agent/1', NULL, NULL, 'agent/4'],
	ARRAY['2024-03-01 10:00:00+00', NULL, '2024-03-01 10:00:02+00', '2024-03-01 10:00:03+00']::timestamptz[]);
SELECT s.session_id, a.chain_seq, u.username, a.activity_type, a.details, a.ip_address, a.user_agent,
	   CASE WHEN a.created_at > '2025-01-01' THEN 'now' ELSE to_char(a.created_at AT TIME ZONE 'UTC', 'HH24:MI:SS') END AS created
  FROM presence.activity_log a JOIN presence.collaboration_sessions s ON s.id = a.session_id
  LEFT JOIN presence.users u ON u.id = a.user_id
 WHERE a.activity_type LIKE 'b.%' ORDER BY s.session_id, a.chain_seq;
-- The ids come back in array order, which is chain order.
CREATE TEMP TABLE returned AS
SELECT * FROM presence.log_activity_batch(ARRAY['act-t', 'act-t', 'act-t'], ARRAY[NULL, NULL, NULL]::uuid[],
										  ARRAY['o.first', 'o.second', 'o.third']) WITH ORDINALITY AS r(id, n);
SELECT r.n, a.activity_type, a.chain_seq FROM returned r JOIN presence.activity_log a USING (id) ORDER BY r.n;
-- Only the three required arrays; empty arrays insert nothing.
SELECT count(*) FROM presence.log_activity_batch(ARRAY['act-t'], ARRAY[NULL]::uuid[], ARRAY['b.minimal']);
SELECT details, ip_address, user_agent FROM presence.activity_log WHERE activity_type = 'b.minimal';
SELECT count(*) FROM presence.log_activity_batch('{}', '{}', '{}');

-- Errors: the first bad row raises and nothing is written.
SELECT count(*) AS rows_before FROM presence.session_activity('act-t', 1000) \gset
SELECT regress.try($$SELECT presence.log_activity_batch(NULL, '{}', '{}')$$);
SELECT regress.try($$SELECT presence.log_activity_batch('{}', NULL, '{}')$$);
SELECT regress.try($$SELECT presence.log_activity_batch('{}', '{}', NULL)$$);
SELECT regress.try($$SELECT presence.log_activity_batch('{act-t,act-t}', '{NULL,NULL}', '{x}')$$);
SELECT regress.try($$SELECT presence.log_activity_batch('{act-t}', '{NULL,NULL}', '{x}')$$);
SELECT regress.try($$SELECT presence.log_activity_batch('{act-t}', '{NULL}', '{x}', details => '{}')$$);
SELECT regress.try($$SELECT presence.log_activity_batch('{act-t}', '{NULL}', '{x}', ip_addresses => '{1.2.3.4,1.2.3.5}')$$);
SELECT regress.try($$SELECT presence.log_activity_batch('{act-t}', '{NULL}', '{x}', user_agents => '{a,b}')$$);
SELECT regress.try($$SELECT presence.log_activity_batch('{act-t}', '{NULL}', '{x}', created_ats => '{}')$$);
SELECT regress.try($$SELECT presence.log_activity_batch('{act-t,NULL}', '{NULL,NULL}', '{x,x}')$$);
SELECT regress.try($$SELECT presence.log_activity_batch('{act-t,act-t}', '{NULL,NULL}', '{x,NULL}')$$);
SELECT regress.try($$SELECT presence.log_activity_batch('{act-t,act-t}', '{NULL,NULL}', '{x,X}')$$);
SELECT regress.try($$SELECT presence.log_activity_batch('{act-t,act-t,act-t}', '{NULL,NULL,NULL}', '{x,y,z}',
					 details => ARRAY['{}', '{}', '[]']::jsonb[])$$);
SELECT regress.try($$SELECT presence.log_activity_batch('{act-t,act-t}', '{NULL,NULL}', '{x,y}',
					 details => ARRAY[NULL, jsonb_build_object('t', repeat('x', 65528))])$$);
SELECT regress.try($$SELECT presence.log_activity_batch('{act-t,act-t}', '{NULL,NULL}', '{x,y}',
					 user_agents => ARRAY[NULL, repeat('u', 513)])$$);
SELECT regress.try($$SELECT presence.log_activity_batch('{act-t,act-none}', '{NULL,NULL}', '{x,y}')$$);
SELECT regress.try($$SELECT presence.log_activity_batch(ARRAY['act-t', repeat('s', 200)], '{NULL,NULL}', '{x,y}')$$);
SELECT regress.try($$SELECT presence.log_activity_batch('{act-t,act-t}',
					 '{NULL,00000000-0000-4000-8000-0000000003ff}', '{x,y}')$$);
-- Rows are checked in order: row 1's unknown session comes before row 2's bad type.
SELECT regress.try($$SELECT presence.log_activity_batch('{act-none,act-t}', '{NULL,NULL}', '{x,Y}')$$);
SELECT count(*) - :rows_before AS written_by_failed_calls FROM presence.session_activity('act-t', 1000);

--
-- session_activity (newest first) and audit_trail (oldest first)
--
SELECT chain_seq, activity_type FROM presence.session_activity('act-t', 3);
SELECT count(*) FROM presence.session_activity('act-t');
SELECT at IS NOT NULL AS has_time, username, activity_type, details, ip_address, user_agent
  FROM presence.audit_trail('act-t');
SELECT regress.try($$SELECT presence.session_activity('act-t', 0)$$);
SELECT regress.try($$SELECT presence.session_activity('act-t', 100001)$$);
SELECT regress.try($$SELECT presence.session_activity('act-t', NULL)$$);
SELECT regress.try($$SELECT presence.session_activity('act-none')$$);
SELECT regress.try($$SELECT presence.session_activity(NULL)$$);
SELECT regress.try($$SELECT presence.audit_trail('act-none')$$);
SELECT regress.try($$SELECT presence.audit_trail(NULL)$$);

--
-- activity_statistics
--
-- Presence history of act-p, in chain order:
--   ann joins, ben joins, ann joins again (still one), cat joins   -> 3
--   ben leaves, ann times out, dan leaves without having joined    -> 1
--   ann joins, ben joins                                           -> 3
--   everyone leaves                                                -> 0
SELECT presence.create_session('00000000-0000-4000-8000-000000000301', session_id => 'act-p');
SELECT count(*) FROM presence.log_activity_batch(
	array_fill('act-p'::text, ARRAY[13]),
	ARRAY['00000000-0000-4000-8000-000000000302', '00000000-0000-4000-8000-000000000303',
		  '00000000-0000-4000-8000-000000000302', '00000000-0000-4000-8000-000000000304',
		  '00000000-0000-4000-8000-000000000303', '00000000-0000-4000-8000-000000000302',
		  '00000000-0000-4000-8000-000000000305', '00000000-0000-4000-8000-000000000302',
		  '00000000-0000-4000-8000-000000000303', '00000000-0000-4000-8000-000000000302',
		  '00000000-0000-4000-8000-000000000303', '00000000-0000-4000-8000-000000000304',
		  '00000000-0000-4000-8000-000000000302']::uuid[],
	ARRAY['user_joined', 'user_joined', 'user_joined', 'user_joined',
		  'user_left', 'user_timeout', 'user_left',
		  'user_joined', 'user_joined',
		  'user_left', 'user_left', 'user_left', 'cursor_moved'],
	created_ats => ARRAY(SELECT timestamptz '2024-03-01 12:00:00+00' + i * interval '10 s'
						   FROM generate_series(1, 13) i));
SELECT key, jsonb_typeof(value) AS type FROM jsonb_each(presence.activity_statistics('act-p')) ORDER BY key;
SELECT s->'total' AS total, s->'by_type' AS by_type, s->'unique_users' AS unique_users,
	   s->'peak_concurrent_users' AS peak_concurrent_users
  FROM presence.activity_statistics('act-p') s;
-- by_user counts rows per user id (the system events have none).
SELECT u.username, (presence.activity_statistics('act-p')->'by_user'->>u.id::text)::int AS rows
  FROM presence.users u WHERE u.username LIKE 'act-%' ORDER BY u.username;
-- first_at and last_at are the oldest and newest rows (session_created is
-- now, the history 2024), duration_seconds the time between them.
SELECT (s->>'first_at')::timestamptz = '2024-03-01 12:00:10+00' AS first_at,
	   (s->>'last_at')::timestamptz = (SELECT max(created_at) FROM presence.activity_log a
										 JOIN presence.collaboration_sessions cs ON cs.id = a.session_id
										WHERE cs.session_id = 'act-p') AS last_at,
	   (s->>'duration_seconds')::numeric = extract(epoch FROM (s->>'last_at')::timestamptz
														   - (s->>'first_at')::timestamptz) AS duration
  FROM presence.activity_statistics('act-p') s;
-- A session with only its session_created row.
SELECT presence.create_session('00000000-0000-4000-8000-000000000301', session_id => 'act-quiet');
SELECT s->'total' AS total, s->'by_type' AS by_type, s->'unique_users' AS unique_users,
	   s->'duration_seconds' AS duration_seconds, s->'peak_concurrent_users' AS peak
  FROM presence.activity_statistics('act-quiet') s;
SELECT regress.try($$SELECT presence.activity_statistics('act-none')$$);
SELECT regress.try($$SELECT presence.activity_statistics(NULL)$$);

--
-- Live presence without a WebSocket worker (presence.port = 0).
--
SELECT active_connections, active_sessions, active_users, workers_running FROM presence.stats();
SELECT count(*) FROM presence.online_users('act-s');
SELECT presence.broadcast('act-s', '{"type": "notice"}') AS reached;
SELECT regress.try($$SELECT presence.online_users('act-none')$$);
SELECT regress.try($$SELECT presence.online_users(NULL)$$);
SELECT regress.try($$SELECT presence.broadcast('act-none', '{}')$$);
SELECT regress.try($$SELECT presence.broadcast(NULL, '{}')$$);
SELECT regress.try($$SELECT presence.broadcast('act-s', NULL)$$);
SELECT regress.try($$SELECT presence.broadcast('act-s', '[]')$$);
SELECT regress.try($$SELECT presence.broadcast('act-s', jsonb_build_object('t', repeat('x', 1048576)))$$);
