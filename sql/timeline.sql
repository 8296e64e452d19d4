--
-- timeline: presence at a past moment (present_at, presence_timeline,
-- presence_intervals) replayed from a hand-built activity log.
--
SET timezone = 'UTC';
INSERT INTO presence.users (id, username) VALUES
	('00000000-0000-4000-8000-000000000d00', 'tl-owner'),
	('00000000-0000-4000-8000-000000000d01', 'tl-ann'),
	('00000000-0000-4000-8000-000000000d02', 'tl-bob'),
	('00000000-0000-4000-8000-000000000d03', 'tl-cat'),
	('00000000-0000-4000-8000-000000000d04', 'tl-dan');
SELECT presence.create_session('00000000-0000-4000-8000-000000000d00', session_id => 'tl');
SELECT presence.create_session('00000000-0000-4000-8000-000000000d00', session_id => 'tl-empty');
SELECT presence.add_participant('tl', '00000000-0000-4000-8000-000000000d01', 'commenter');
SELECT presence.add_participant('tl', '00000000-0000-4000-8000-000000000d02');
SELECT presence.add_participant('tl', '00000000-0000-4000-8000-000000000d03', 'operator');
-- dan is no participant (regress.conf allows four): his role reads NULL.

-- The log as the workers and the SQL API write it, one row a minute from
-- 10:00 (ann = d01, bob = d02, cat = d03, dan = d04).
CREATE TEMP TABLE tl_log (n int, minute numeric, who text, kind text, details jsonb);
INSERT INTO tl_log VALUES
	(1, 0, 'd01', 'user_joined', '{}'),							-- ann joins
	(2, 1, 'd01', 'user_joined', '{}'),							-- a racing second join: no change
	(3, 2, 'd02', 'user_joined', '{"status": "away"}'),			-- bob joins away
	(4, 3, 'd01', 'status_changed', '{"status": "away", "automatic": false}'),
	(5, 4, 'd01', 'status_changed', '{"status": "online", "automatic": false}'),
	(6, 5, 'd01', 'status_changed', '{"status": "away", "automatic": true}'),
	(7, 5.5, 'd01', 'document.edited', '{}'),						-- not presence
	(8, 6, 'd01', 'status_changed', '{"status": "online", "automatic": true}'),
	(9, 7, 'd02', 'status_changed', '{"status": "away", "automatic": false}'),	-- already away
	(10, 8, 'd03', 'user_joined', '{}'),
	(11, 9, 'd03', 'user_timeout', '{"silent_ms": 9000}'),
	(12, 10, 'd03', 'status_changed', '{"status": "away", "automatic": true}'),	-- while absent: ignored
	(13, 11, 'd03', 'user_joined', '{"resumed": true}'),
	(14, 12, 'd02', 'user_left', '{}'),
	(15, 13, 'd02', 'user_left', '{}'),							-- again: no change
	(16, 14, 'd04', 'user_joined', '{}'),
	(17, 15, 'd04', 'participant_removed', '{}'),
	(18, 15, 'd04', 'user_left', '{}'),							-- the worker's leave after the removal
	(19, 16, 'd01', 'user_left', '{"cause": "server_restart"}'),
	(20, 17, 'd01', 'user_joined', '{}'),
	(21, 20, NULL, 'session_ended', '{"status": "completed"}');
SELECT count(*) AS logged FROM presence.log_activity_batch(
	(SELECT array_agg('tl'::text ORDER BY n) FROM tl_log),
	(SELECT array_agg(('00000000-0000-4000-8000-000000000' || who)::uuid ORDER BY n) FROM tl_log),
	(SELECT array_agg(kind ORDER BY n) FROM tl_log),
	(SELECT array_agg(details ORDER BY n) FROM tl_log),
	created_ats => (SELECT array_agg('2026-01-01 10:00+00'::timestamptz + minute * interval '1 minute' ORDER BY n)
					  FROM tl_log));

-- Who was there: before the first row, exactly at changes, between them.
SELECT t.at::time AS at, p.username, p.role, p.status, p.since::time AS since
  FROM unnest(ARRAY['09:59', '10:00', '10:02:30', '10:03', '10:05:30', '10:07:30', '10:08', '10:09',
					'10:10:30', '10:11', '10:14:30', '10:15', '10:16:30', '10:17', '10:19:59', '10:20',
					'11:00']::time[]) AS t(at)
  LEFT JOIN LATERAL presence.present_at('tl', '2026-01-01'::date + t.at) p ON true
 ORDER BY t.at, p.username;

-- Every change, in chain order; and a window of it: after "from", up to and at "to".
SELECT at::time, u.username, status_before, status_after, cause
  FROM presence.presence_timeline('tl', '2026-01-01 09:00+00', '2026-01-01 11:00+00') t
  JOIN presence.users u ON u.id = t.user_id;
SELECT at::time, u.username, status_before, status_after, cause
  FROM presence.presence_timeline('tl', '2026-01-01 10:03+00', '2026-01-01 10:12+00') t
  JOIN presence.users u ON u.id = t.user_id;
SELECT count(*) AS empty_window FROM presence.presence_timeline('tl', '2026-01-01 10:09+00', '2026-01-01 10:09+00');

-- The intervals each user was present, whole and clipped to a window.
SELECT u.username, present_from::time, present_to::time
  FROM presence.presence_intervals('tl', '2026-01-01 09:00+00', '2026-01-01 11:00+00') i
  JOIN presence.users u ON u.id = i.user_id;
SELECT u.username, present_from::time, present_to::time
  FROM presence.presence_intervals('tl', '2026-01-01 10:05+00', '2026-01-01 10:10+00') i
  JOIN presence.users u ON u.id = i.user_id;

-- The three agree: every 15 s from 09:59 to 10:21, present_at is the set
-- of users whose interval holds the moment, and present_at(from) with the
-- timeline applied is present_at(to).
WITH moments AS (
	SELECT m FROM generate_series('2026-01-01 09:59+00'::timestamptz, '2026-01-01 10:21+00', '15 seconds') m
), by_present_at AS (
	SELECT m, p.user_id FROM moments, presence.present_at('tl', m) p
), by_intervals AS (
	SELECT m, i.user_id FROM moments,
		   presence.presence_intervals('tl', '2026-01-01 09:00+00', '2026-01-01 11:00+00') i
	 WHERE i.present_from <= m AND m < i.present_to
), by_timeline AS (
	SELECT m, t.user_id
	  FROM moments,
		   LATERAL (SELECT DISTINCT ON (x.user_id) x.user_id, x.status_after
					  FROM presence.presence_timeline('tl', '2026-01-01 09:00+00', m) x
					 ORDER BY x.user_id, x.at DESC) t
	 WHERE t.status_after <> 'offline'
)
SELECT (SELECT count(*) FROM ((TABLE by_present_at EXCEPT TABLE by_intervals)
							  UNION ALL (TABLE by_intervals EXCEPT TABLE by_present_at)) d) AS intervals_disagree,
	   (SELECT count(*) FROM ((TABLE by_present_at EXCEPT TABLE by_timeline)
							  UNION ALL (TABLE by_timeline EXCEPT TABLE by_present_at)) d) AS timeline_disagrees;

-- The replay of a window starts from the state its index probes find
-- before it; it must agree with a replay of the whole log, on a random
-- log with every kind of row: ties in time, chain order unlike time
-- order, joins while present, status changes while absent, repeated and
-- unknown statuses, ends of the session (naming a user or none).
SELECT presence.create_session('00000000-0000-4000-8000-000000000d00', session_id => 'tl-random');
SELECT setseed(0.13);
CREATE TEMP TABLE tl_random AS
SELECT i, CASE WHEN r < 0.3 THEN 'user_joined' WHEN r < 0.7 THEN 'status_changed' WHEN r < 0.8 THEN 'user_left'
			   WHEN r < 0.9 THEN 'user_timeout' WHEN r < 0.95 THEN 'participant_removed'
			   ELSE 'session_ended' END AS kind,
	   ('00000000-0000-4000-8000-000000000d0' || (1 + floor(random() * 4))::int)::uuid AS user_id,
	   jsonb_build_object('status', (ARRAY['online', 'away', 'away', 'busy'])[1 + floor(random() * 4)::int]) AS details,
	   '2026-01-02 10:00+00'::timestamptz + floor(random() * 120) * interval '1 minute' AS created_at
  FROM (SELECT i, random() AS r FROM generate_series(1, 600) i) g;
SELECT count(*) AS logged FROM presence.log_activity_batch(
	(SELECT array_agg('tl-random'::text ORDER BY i) FROM tl_random),
	(SELECT array_agg(CASE WHEN kind = 'session_ended' AND i % 2 = 0 THEN NULL ELSE user_id END ORDER BY i)
	   FROM tl_random),
	(SELECT array_agg(kind ORDER BY i) FROM tl_random),
	(SELECT array_agg(details ORDER BY i) FROM tl_random), NULL, NULL,
	(SELECT array_agg(created_at ORDER BY i) FROM tl_random));
WITH moments AS (
	SELECT m FROM generate_series('2026-01-02 09:59+00'::timestamptz, '2026-01-02 12:01+00', '90 seconds') m
), whole AS (
	SELECT c.* FROM presence.collaboration_sessions s, presence._presence_changes(s.id, '-infinity', 'infinity') c
	 WHERE s.session_id = 'tl-random'
), at_moment AS (
	SELECT m, p.user_id, p.status, p.since FROM moments, presence.present_at('tl-random', m) p
), from_whole AS (
	SELECT m, l.user_id, l.status_after, l.at
	  FROM moments,
		   LATERAL (SELECT DISTINCT ON (w.user_id) w.user_id, w.status_after, w.at
					  FROM whole w WHERE w.at <= m ORDER BY w.user_id, w.at DESC, w.chain_seq DESC) l
	 WHERE l.status_after <> 'offline'
), window_timeline AS (
	SELECT m, t.* FROM moments, presence.presence_timeline('tl-random', m, m + interval '10 minutes') t
), window_from_whole AS (
	SELECT m, w.at, w.user_id, w.status_before, w.status_after, w.cause
	  FROM moments, whole w WHERE w.at > m AND w.at <= m + interval '10 minutes'
), window_intervals AS (
	SELECT m, i.* FROM moments, presence.presence_intervals('tl-random', m, m + interval '10 minutes') i
), intervals_from_whole AS (
	SELECT m, i.user_id, greatest(i.present_from, m), least(i.present_to, m + interval '10 minutes')
	  FROM moments, presence.presence_intervals('tl-random', '-infinity', 'infinity') i
	 WHERE i.present_from <= m + interval '10 minutes' AND i.present_to > m
)
SELECT (SELECT count(*) FROM whole) > 100 AS many_changes,
	   (SELECT count(*) FROM at_moment) > 50 AS many_present,
	   (SELECT count(*) FROM ((TABLE at_moment EXCEPT TABLE from_whole)
							  UNION ALL (TABLE from_whole EXCEPT TABLE at_moment)) d) AS present_at_disagrees,
	   (SELECT count(*) FROM ((TABLE window_timeline EXCEPT TABLE window_from_whole)
							  UNION ALL (TABLE window_from_whole EXCEPT TABLE window_timeline)) d) AS timeline_disagrees,
	   (SELECT count(*) FROM ((TABLE window_intervals EXCEPT TABLE intervals_from_whole)
							  UNION ALL (TABLE intervals_from_whole EXCEPT TABLE window_intervals)) d) AS intervals_disagree;

-- A worker's queued row can come later in the chain than a row logged
-- after it: the replay goes by time, so the moments still agree.
SELECT presence.create_session('00000000-0000-4000-8000-000000000d00', session_id => 'tl-late');
SELECT count(*) AS logged FROM presence.log_activity_batch(
	'{tl-late,tl-late,tl-late,tl-late}',
	'{00000000-0000-4000-8000-000000000d01,00000000-0000-4000-8000-000000000d02,00000000-0000-4000-8000-000000000d01,NULL}',
	'{user_joined,user_joined,user_left,session_ended}', NULL, NULL, NULL,
	'{2026-01-01 10:00+00,2026-01-01 10:02+00,2026-01-01 10:01+00,2026-01-01 10:03+00}');
SELECT at::time, u.username, status_before, status_after, cause
  FROM presence.presence_timeline('tl-late', '-infinity', 'infinity') t
  JOIN presence.users u ON u.id = t.user_id;
SELECT t.at::time AS at, p.username
  FROM unnest(ARRAY['10:00:30', '10:01:30', '10:02:30']::time[]) AS t(at)
  LEFT JOIN LATERAL presence.present_at('tl-late', '2026-01-01'::date + t.at) p ON true
 ORDER BY t.at;
SELECT at::time, u.username, cause
  FROM presence.presence_timeline('tl-late', '2026-01-01 10:00:30+00', '2026-01-01 10:02:30+00') t
  JOIN presence.users u ON u.id = t.user_id;

-- A ws worker starting without Redis ends the presences it held before:
-- those its joins opened in sessions that have not ended, no others.
SELECT presence.create_session('00000000-0000-4000-8000-000000000d00', session_id => 'tl-open');
SELECT count(*) AS logged FROM presence.log_activity_batch(
	'{tl-open,tl-open,tl-open,tl-open,tl-open}',
	'{00000000-0000-4000-8000-000000000d01,00000000-0000-4000-8000-000000000d02,00000000-0000-4000-8000-000000000d03,00000000-0000-4000-8000-000000000d03,00000000-0000-4000-8000-000000000d01}',
	'{user_joined,user_joined,user_joined,user_left,status_changed}',
	'{"{\"worker\": \"n1/0\"}","{\"worker\": \"n1/1\"}","{\"worker\": \"n1/0\"}","{}","{\"status\": \"away\"}"}');
SELECT presence._close_presences_of_worker('n1/0') AS closed;
SELECT presence._close_presences_of_worker('n1/0') AS closed_again;
SELECT u.username, t.status_before, t.status_after, t.cause
  FROM presence.presence_timeline('tl-open', '-infinity', 'infinity') t
  JOIN presence.users u ON u.id = t.user_id;
SELECT u.username FROM presence.present_at('tl-open', 'infinity') p JOIN presence.users u ON u.id = p.user_id;
SELECT presence.end_session('tl-open');
SELECT presence._close_presences_of_worker('n1/1') AS closed_in_ended_session;

-- Nodes without Redis do not see each other's users: a presence that
-- another node's worker also joined is not ended by the restart of the
-- worker that opened it (that node may hold the user still), but by the
-- other node's leave.
SELECT presence.create_session('00000000-0000-4000-8000-000000000d00', session_id => 'tl-shared');
SELECT count(*) AS logged FROM presence.log_activity_batch(
	'{tl-shared,tl-shared,tl-shared}',
	'{00000000-0000-4000-8000-000000000d01,00000000-0000-4000-8000-000000000d01,00000000-0000-4000-8000-000000000d02}',
	'{user_joined,user_joined,user_joined}',
	'{"{\"worker\": \"n1/0\"}","{\"worker\": \"n2/0\"}","{\"worker\": \"n1/0\"}"}');
SELECT presence._close_presences_of_worker('n1/0') AS closed_only_d02;
SELECT u.username FROM presence.present_at('tl-shared', 'infinity') p JOIN presence.users u ON u.id = p.user_id;
SELECT count(*) AS logged FROM presence.log_activity_batch('{tl-shared}', '{00000000-0000-4000-8000-000000000d01}',
														   '{user_left}', NULL);
SELECT count(*) AS present FROM presence.present_at('tl-shared', 'infinity');
SELECT presence._close_presences_of_worker('n2/0') AS closed_none;

-- A session with no presence rows has nobody, no change and no interval.
SELECT count(*) FROM presence.present_at('tl-empty', now());
SELECT count(*) FROM presence.presence_timeline('tl-empty', '-infinity', 'infinity');
SELECT count(*) FROM presence.presence_intervals('tl-empty', '-infinity', 'infinity');

-- Errors: an unknown session (as audit_trail), NULLs, a window that ends before it begins.
SELECT regress.try($$SELECT presence.present_at('tl-nope', now())$$);
SELECT regress.try($$SELECT presence.audit_trail('tl-nope')$$);
SELECT regress.try($$SELECT presence.present_at(NULL, now())$$);
SELECT regress.try($$SELECT presence.present_at('tl', NULL)$$);
SELECT regress.try($$SELECT presence.presence_timeline('tl', NULL, now())$$);
SELECT regress.try($$SELECT presence.presence_intervals('tl', now(), NULL)$$);
SELECT regress.try($$SELECT presence.presence_timeline('tl', '2026-01-01 11:00+00', '2026-01-01 10:00+00')$$);
SELECT regress.try($$SELECT presence.presence_intervals('tl', '2026-01-01 11:00+00', '2026-01-01 10:00+00')$$);

-- Privileges: an auditor may ask, PUBLIC may not.
CREATE ROLE tl_auditor;
CREATE ROLE tl_nobody;
SELECT presence.grant_auditor_role('tl_auditor');
SET ROLE tl_auditor;
SELECT count(*) AS auditor_sees FROM presence.present_at('tl', '2026-01-01 10:14:30+00');
SELECT count(*) AS auditor_sees FROM presence.presence_timeline('tl', '-infinity', 'infinity');
SELECT count(*) AS auditor_sees FROM presence.presence_intervals('tl', '-infinity', 'infinity');
SET ROLE tl_nobody;
SELECT regress.try($$SELECT presence.present_at('tl', now())$$);
SELECT regress.try($$SELECT presence.presence_timeline('tl', now(), now())$$);
SELECT regress.try($$SELECT presence.presence_intervals('tl', now(), now())$$);
SELECT regress.try($$SELECT presence._presence_changes(gen_random_uuid(), now())$$);
RESET ROLE;
DROP OWNED BY tl_auditor;
DROP ROLE tl_auditor;
DROP ROLE tl_nobody;
