--
-- audit_chain: the hash chain, recomputed independently; tampering
-- (edited, deleted, inserted rows, each on a session of its own);
-- audit_chain_head; the append-only guard; purge_activity; restores.
--
INSERT INTO presence.users (id, username) VALUES
	('00000000-0000-4000-8000-000000000401', 'chain-ann'),
	('00000000-0000-4000-8000-000000000402', 'chain-ben');

-- The recipe of docs/sql-reference.md, in plain SQL: F(x) is x's text
-- (its type's output function, as format('%s') gives it) as a 4-byte
-- big-endian length and its bytes, or ffffffff for NULL, and
--   row_hash = SHA-256(prev_hash || F(chain_seq) || F(id) || F(session_id)
--                      || F(user_id) || F(activity_type) || F(details)
--                      || F(ip_address) || F(user_agent)
--                      || F(created_at as microseconds since 1970))
CREATE FUNCTION regress.chain_field(value anyelement) RETURNS bytea LANGUAGE sql IMMUTABLE AS $$
	SELECT CASE WHEN value IS NULL THEN '\xffffffff'::bytea
				ELSE int4send(octet_length(format('%s', value)))
					 || convert_to(format('%s', value), getdatabaseencoding()) END
$$;
CREATE FUNCTION regress.chain_hash(a presence.activity_log, prev bytea) RETURNS bytea LANGUAGE sql STABLE AS $$
	SELECT sha256(prev || regress.chain_field(a.chain_seq) || regress.chain_field(a.id)
				  || regress.chain_field(a.session_id) || regress.chain_field(a.user_id)
				  || regress.chain_field(a.activity_type) || regress.chain_field(a.details)
				  || regress.chain_field(a.ip_address) || regress.chain_field(a.user_agent)
				  || regress.chain_field((extract(epoch FROM a.created_at) * 1000000)::bigint))
$$;
-- Every row of a session: does it link to the previous one, and does its
-- hash match the recipe?
CREATE FUNCTION regress.audit(p_session_id text)
RETURNS TABLE (chain_seq bigint, links boolean, hashes boolean) LANGUAGE sql STABLE AS $$
	SELECT a.chain_seq,
		   a.prev_hash = coalesce(lag(a.row_hash) OVER w,
								  (SELECT x.row_hash FROM presence.audit_chain_anchors x WHERE x.session_id = s.id),
								  '\x0000000000000000000000000000000000000000000000000000000000000000'),
		   a.row_hash = regress.chain_hash(a, a.prev_hash)
	  FROM presence.activity_log a JOIN presence.collaboration_sessions s ON s.id = a.session_id
	 WHERE s.session_id = p_session_id
	WINDOW w AS (ORDER BY a.chain_seq)
	 ORDER BY a.chain_seq
$$;
-- The row with a given chain_seq.
CREATE FUNCTION regress.link(p_session_id text, p_seq bigint) RETURNS uuid LANGUAGE sql STABLE AS $$
	SELECT a.id FROM presence.activity_log a JOIN presence.collaboration_sessions s ON s.id = a.session_id
	 WHERE s.session_id = p_session_id AND a.chain_seq = p_seq
$$;
-- A session of n rows logged through the API.
CREATE FUNCTION regress.chain_session(p_session_id text, n int) RETURNS void LANGUAGE sql AS $$
	SELECT presence.create_session('00000000-0000-4000-8000-000000000401', session_id => p_session_id);
	SELECT count(*) FROM presence.log_activity_batch(array_fill(p_session_id, ARRAY[n - 1]),
													 array_fill('00000000-0000-4000-8000-000000000402'::uuid, ARRAY[n - 1]),
													 ARRAY(SELECT 'step.' || i FROM generate_series(2, n) i),
													 ARRAY(SELECT jsonb_build_object('step', i) FROM generate_series(2, n) i));
$$;

--
-- A fixed chain: the rows have fixed ids and times, so the hashes are
-- test vectors for anyone implementing the recipe.
--
INSERT INTO presence.collaboration_sessions (id, session_id, owner_id)
VALUES ('00000000-0000-4000-8000-00000000c001', 'chain-vector', '00000000-0000-4000-8000-000000000401');
INSERT INTO presence.activity_log (id, session_id, user_id, activity_type, details, ip_address, user_agent, created_at)
VALUES ('00000000-0000-4000-8000-00000000a001', '00000000-0000-4000-8000-00000000c001',
		'00000000-0000-4000-8000-000000000401', 'note.added', '{"text": "hello, world"}',
		'192.0.2.1', 'curl/8.0', '2024-01-02 03:04:05.123456+00'),
	   ('00000000-0000-4000-8000-00000000a002', '00000000-0000-4000-8000-00000000c001',
		NULL, 'system.tick', '{}', NULL, NULL, '2024-01-02 03:04:06+00'),
	   ('00000000-0000-4000-8000-00000000a003', '00000000-0000-4000-8000-00000000c001',
		'00000000-0000-4000-8000-000000000402', 'note.added', '{"text": "caf\u00e9 \u2713", "n": [1, 2.50]}',
		'2001:db8::/32', NULL, '2024-01-02 03:04:07+00');
SELECT chain_seq, id, encode(prev_hash, 'hex') AS prev_hash, encode(row_hash, 'hex') AS row_hash
  FROM presence.activity_log WHERE session_id = '00000000-0000-4000-8000-00000000c001' ORDER BY chain_seq;
SELECT * FROM regress.audit('chain-vector');
SELECT * FROM presence.verify_audit_chain('chain-vector');
SELECT * FROM presence.audit_chain_head('chain-vector');
-- The chain cannot be chosen by an ordinary insert: chain values given
-- without the whole link are replaced.
INSERT INTO presence.activity_log (id, session_id, activity_type, created_at, chain_seq)
VALUES ('00000000-0000-4000-8000-00000000a004', '00000000-0000-4000-8000-00000000c001', 'system.tick',
		'2024-01-02 03:04:08+00', 99)
RETURNING chain_seq, encode(row_hash, 'hex') AS row_hash;
SELECT * FROM regress.audit('chain-vector');

-- A session with no rows has the genesis head.
INSERT INTO presence.collaboration_sessions (id, session_id, owner_id)
VALUES ('00000000-0000-4000-8000-00000000c002', 'chain-empty', '00000000-0000-4000-8000-000000000401');
SELECT * FROM presence.verify_audit_chain('chain-empty');
SELECT * FROM presence.audit_chain_head('chain-empty');

SELECT regress.try($$SELECT presence.verify_audit_chain('chain-none')$$);
SELECT regress.try($$SELECT presence.verify_audit_chain(NULL)$$);
SELECT regress.try($$SELECT presence.audit_chain_head('chain-none')$$);
SELECT regress.try($$SELECT presence.audit_chain_head(NULL)$$);

-- Chains through the API: session_created is link 1, and every writer
-- (single rows, batches, participants, the end) appends in order, also
-- several sessions in one transaction.
BEGIN;
SELECT regress.chain_session('chain-api', 3);
SELECT regress.chain_session('chain-api2', 2);
SELECT presence.log_activity('chain-api', NULL, 'single.row') IS NOT NULL AS logged;
SELECT presence.add_participant('chain-api', '00000000-0000-4000-8000-000000000402');
SELECT presence.log_activity('chain-api2', NULL, 'single.row') IS NOT NULL AS logged;
COMMIT;
SELECT presence.end_session('chain-api');
SELECT a.chain_seq, a.activity_type, r.links, r.hashes
  FROM regress.audit('chain-api') r JOIN presence.activity_log a ON a.id = regress.link('chain-api', r.chain_seq)
 ORDER BY 1;
SELECT * FROM presence.verify_audit_chain('chain-api');
SELECT * FROM presence.verify_audit_chain('chain-api2');
-- A rolled-back append leaves no gap.
BEGIN;
SELECT presence.log_activity('chain-api2', NULL, 'rolled.back') IS NOT NULL AS logged;
ROLLBACK;
BEGIN;
SAVEPOINT s;
SELECT presence.log_activity('chain-api2', NULL, 'rolled.back') IS NOT NULL AS logged;
ROLLBACK TO SAVEPOINT s;
SELECT presence.log_activity('chain-api2', NULL, 'kept') IS NOT NULL AS logged;
COMMIT;
SELECT chain_seq, activity_type FROM presence.session_activity('chain-api2', 2);
SELECT * FROM presence.verify_audit_chain('chain-api2');

-- log_activity_batch computes each link itself (src/activity_batch.c),
-- not through the activity_chain trigger: every hashed column, NULLs and
-- defaults included, hashes as the recipe says, and direct INSERTs and
-- batches in one transaction continue one chain, in either order.
SELECT presence.create_session('00000000-0000-4000-8000-000000000401', session_id => 'chain-batch');
BEGIN;
SELECT count(*) FROM presence.log_activity_batch(
	ARRAY['chain-batch', 'chain-batch', 'chain-api2'],
	ARRAY['00000000-0000-4000-8000-000000000402', NULL, NULL]::uuid[],
	ARRAY['b.full', 'b.defaults', 'b.other'],
	ARRAY['{"text": "caf\u00e9 \u2713", "n": [1, 2.50]}', NULL, '{}']::jsonb[],
	ARRAY['2001:db8::/32', NULL, '192.0.2.1']::inet[],
	ARRAY['curl/8.0', NULL, NULL],
	ARRAY['2024-01-02 03:04:05.123456+00', NULL, NULL]::timestamptz[]);
INSERT INTO presence.activity_log (session_id, activity_type)
SELECT id, 'direct.after.batch' FROM presence.collaboration_sessions WHERE session_id = 'chain-batch';
SELECT count(*) FROM presence.log_activity_batch(ARRAY['chain-batch'], ARRAY[NULL]::uuid[], ARRAY['b.after.direct']);
COMMIT;
SELECT a.chain_seq, a.activity_type, a.details, a.ip_address, a.user_agent,
	   a.created_at = '2024-01-02 03:04:05.123456+00' AS given_time, r.links, r.hashes
  FROM regress.audit('chain-batch') r JOIN presence.activity_log a ON a.id = regress.link('chain-batch', r.chain_seq)
 ORDER BY 1;
SELECT * FROM presence.verify_audit_chain('chain-batch');
SELECT * FROM presence.verify_audit_chain('chain-api2');
-- Over several of its multi-insert flushes (1,000 rows each) and two
-- sessions: ids come back in row order, are version-7 UUIDs that grow
-- with every row and carry the row's time in milliseconds.
CREATE TABLE regress.batch_ids AS
SELECT b.id, b.n FROM presence.log_activity_batch(
	ARRAY(SELECT CASE WHEN i % 3 = 0 THEN 'chain-api2' ELSE 'chain-batch' END FROM generate_series(1, 2500) i),
	array_fill(NULL::uuid, ARRAY[2500]),
	array_fill('b.bulk'::text, ARRAY[2500]),
	ARRAY(SELECT jsonb_build_object('i', i) FROM generate_series(1, 2500) i)) WITH ORDINALITY AS b(id, n);
SELECT count(*) AS rows,
	   bool_and(a.details ->> 'i' = b.n::text) AS in_row_order,
	   bool_and(substr(b.id::text, 15, 1) = '7' AND substr(b.id::text, 20, 1) IN ('8', '9', 'a', 'b')) AS version_7,
	   bool_and(abs(('x' || substr(replace(b.id::text, '-', ''), 1, 12))::bit(48)::bigint
					- floor(extract(epoch FROM a.created_at) * 1000)) <= 1) AS time_in_id
  FROM regress.batch_ids b JOIN presence.activity_log a ON a.id = b.id;
SELECT bool_and(id > previous) AS increasing
  FROM (SELECT id, lag(id) OVER (ORDER BY n) AS previous FROM regress.batch_ids) l WHERE previous IS NOT NULL;
DROP TABLE regress.batch_ids;
SELECT * FROM presence.verify_audit_chain('chain-batch');
SELECT * FROM presence.verify_audit_chain('chain-api2');
-- Instead of a foreign-key check per row, the batch locks each of its
-- sessions and users FOR KEY SHARE, as those checks do, until the
-- transaction ends (the locker is the row's xmax).
BEGIN;
SELECT count(*) FROM presence.log_activity_batch(ARRAY['chain-batch'], ARRAY['00000000-0000-4000-8000-000000000402']::uuid[],
												 ARRAY['b.locks']);
SELECT session_id, xmax::text = pg_current_xact_id()::text AS locked FROM presence.collaboration_sessions
 WHERE session_id IN ('chain-batch', 'chain-api2') ORDER BY 1;
SELECT username, xmax::text = pg_current_xact_id()::text AS locked FROM presence.users
 WHERE username IN ('chain-ann', 'chain-ben') ORDER BY 1;
COMMIT;
-- A row trigger the extension did not make: the batch writes through a
-- plain INSERT instead, which fires it (and the chain trigger).
CREATE FUNCTION regress.count_rows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	PERFORM set_config('regress.rows', (coalesce(nullif(current_setting('regress.rows', true), ''), '0')::int + 1)::text, false);
	RETURN NULL;
END $$;
CREATE TRIGGER regress_count AFTER INSERT ON presence.activity_log FOR EACH ROW EXECUTE FUNCTION regress.count_rows();
SELECT count(*) FROM presence.log_activity_batch(ARRAY['chain-batch', 'chain-batch'], ARRAY[NULL, NULL]::uuid[],
												 ARRAY['b.plain', 'b.plain']);
SELECT current_setting('regress.rows') AS trigger_saw;
DROP TRIGGER regress_count ON presence.activity_log;
DROP FUNCTION regress.count_rows();
SELECT chain_seq, activity_type FROM presence.session_activity('chain-batch', 2);
SELECT * FROM presence.verify_audit_chain('chain-batch');

-- A subtransaction that aborts while the batch checks a row (here a
-- CHECK constraint calling a function with an EXCEPTION block) forgets
-- only the links it set: the links of the rows the batch holds but has
-- not written yet stay, and the chain does not fork.
CREATE FUNCTION regress.check_with_subxact(t text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
	BEGIN
		PERFORM 1 / 0;
	EXCEPTION WHEN division_by_zero THEN NULL;
	END;
	RETURN true;
END $$;
ALTER TABLE presence.activity_log ADD CONSTRAINT regress_subxact CHECK (regress.check_with_subxact(activity_type));
SELECT count(*) FROM presence.log_activity_batch(array_fill('chain-batch'::text, ARRAY[3]), array_fill(NULL::uuid, ARRAY[3]),
												 array_fill('b.subxact'::text, ARRAY[3]));
-- a savepoint rolled back after a batch: the links of the batch before it stay
BEGIN;
SELECT count(*) FROM presence.log_activity_batch(ARRAY['chain-batch'], ARRAY[NULL]::uuid[], ARRAY['b.kept']);
SAVEPOINT s;
SELECT count(*) FROM presence.log_activity_batch(ARRAY['chain-batch'], ARRAY[NULL]::uuid[], ARRAY['b.undone']);
ROLLBACK TO s;
SELECT count(*) FROM presence.log_activity_batch(ARRAY['chain-batch', 'chain-batch'], ARRAY[NULL, NULL]::uuid[],
												 ARRAY['b.kept', 'b.kept']);
COMMIT;
ALTER TABLE presence.activity_log DROP CONSTRAINT regress_subxact;
DROP FUNCTION regress.check_with_subxact(text);
SELECT chain_seq, activity_type FROM presence.session_activity('chain-batch', 6);
SELECT * FROM presence.verify_audit_chain('chain-batch');
-- The batch stores its values without an INSERT's coercions and checks,
-- so a table that needs them gets a plain INSERT: a column narrowed
-- (varchar(63), timestamptz(0)), a partition (its partition constraint),
-- an id default of someone else's.
BEGIN;
ALTER TABLE presence.activity_log ALTER COLUMN activity_type TYPE varchar(63) USING left(activity_type, 63);
SELECT regress.try(format($$SELECT presence.log_activity_batch(ARRAY['chain-batch'], ARRAY[NULL]::uuid[], ARRAY[%L])$$,
						  'b.' || repeat('x', 62)));
ROLLBACK;
BEGIN;
ALTER TABLE presence.activity_log ALTER COLUMN created_at TYPE timestamptz(0);
SELECT count(*) FROM presence.log_activity_batch(ARRAY['chain-batch'], ARRAY[NULL]::uuid[], ARRAY['b.seconds'],
												 created_ats => ARRAY['2024-01-02 03:04:05.6+00']::timestamptz[]);
SELECT created_at = '2024-01-02 03:04:06+00' AS rounded FROM presence.activity_log WHERE activity_type = 'b.seconds';
ROLLBACK;
BEGIN;
CREATE TABLE regress.activity_parent (LIKE presence.activity_log) PARTITION BY RANGE (created_at);
ALTER TABLE regress.activity_parent ATTACH PARTITION presence.activity_log FOR VALUES FROM ('2000-01-01') TO ('2100-01-01');
SELECT regress.try($$SELECT presence.log_activity_batch(ARRAY['chain-batch'], ARRAY[NULL]::uuid[], ARRAY['b.outside'],
														created_ats => ARRAY['2200-01-01']::timestamptz[])$$);
ROLLBACK;
BEGIN;
ALTER TABLE presence.activity_log ALTER COLUMN id SET DEFAULT '00000000-0000-4000-8000-0000000004ff';
SELECT b AS id FROM presence.log_activity_batch(ARRAY['chain-batch'], ARRAY[NULL]::uuid[], ARRAY['b.default']) b;
ROLLBACK;
SELECT * FROM presence.verify_audit_chain('chain-batch');

-- The chain trigger runs under the inserting role's search_path: an
-- operator in a schema put ahead of pg_catalog is not what it calls.
CREATE SCHEMA regress_evil;
CREATE FUNCTION regress_evil.eq(uuid, uuid) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
	RAISE NOTICE 'regress_evil.= called by %', current_user;
	RETURN $1::text = $2::text;
END $$;
CREATE OPERATOR regress_evil.= (LEFTARG = uuid, RIGHTARG = uuid, FUNCTION = regress_evil.eq);
SET search_path = regress_evil, pg_catalog;
INSERT INTO presence.activity_log (session_id, activity_type)
SELECT id, 'direct.search_path' FROM presence.collaboration_sessions WHERE session_id OPERATOR(pg_catalog.=) 'chain-batch';
RESET search_path;
DROP SCHEMA regress_evil CASCADE;
SELECT * FROM presence.verify_audit_chain('chain-batch');

--
-- The log is append-only, for the superuser too (the anchors: below).
--
SELECT regress.try($$UPDATE presence.activity_log SET details = '{}' WHERE id = '00000000-0000-4000-8000-00000000a001'$$);
SELECT regress.try($$DELETE FROM presence.activity_log WHERE id = '00000000-0000-4000-8000-00000000a001'$$);
SELECT regress.try($$TRUNCATE presence.activity_log$$);

--
-- Tampering, by a superuser who gets past the guard.  Each case has a
-- session of its own with links 1 (session_created) to 6.
--

-- An edited row is the first bad one.
SELECT regress.chain_session('tamper-edit', 6);
ALTER TABLE presence.activity_log DISABLE TRIGGER activity_append_only;
UPDATE presence.activity_log SET details = '{"step": 33}' WHERE id = regress.link('tamper-edit', 3);
ALTER TABLE presence.activity_log ENABLE TRIGGER activity_append_only;
SELECT ok, rows_checked, first_bad_id = regress.link('tamper-edit', 3) AS first_bad_is_link_3
  FROM presence.verify_audit_chain('tamper-edit');
SELECT * FROM regress.audit('tamper-edit');

-- An edit whose row hash is recomputed breaks the next link.
SELECT regress.chain_session('tamper-rehash', 6);
SET session_replication_role = replica;
UPDATE presence.activity_log a SET details = '{"step": 33}' WHERE id = regress.link('tamper-rehash', 3);
UPDATE presence.activity_log a SET row_hash = regress.chain_hash(a, a.prev_hash) WHERE id = regress.link('tamper-rehash', 3);
RESET session_replication_role;
SELECT ok, rows_checked, first_bad_id = regress.link('tamper-rehash', 4) AS first_bad_is_link_4
  FROM presence.verify_audit_chain('tamper-rehash');

-- A deleted row: the row after it is the first bad one.
SELECT regress.chain_session('tamper-delete', 6);
SELECT regress.link('tamper-delete', 4) AS after_deleted \gset
SET session_replication_role = replica;
DELETE FROM presence.activity_log WHERE id = regress.link('tamper-delete', 3);
RESET session_replication_role;
SELECT ok, rows_checked, first_bad_id = :'after_deleted' AS first_bad_is_old_link_4
  FROM presence.verify_audit_chain('tamper-delete');

-- A deleted first row.
SELECT regress.chain_session('tamper-delete-first', 6);
SET session_replication_role = replica;
DELETE FROM presence.activity_log WHERE id = regress.link('tamper-delete-first', 1);
RESET session_replication_role;
SELECT ok, rows_checked, first_bad_id = regress.link('tamper-delete-first', 2) AS first_bad_is_link_2
  FROM presence.verify_audit_chain('tamper-delete-first');

-- An inserted row: links 3.. move up one, a forged link 3 goes in.
SELECT regress.chain_session('tamper-insert', 6);
SET session_replication_role = replica;
UPDATE presence.activity_log SET chain_seq = chain_seq + 1000
 WHERE session_id = (SELECT id FROM presence.collaboration_sessions WHERE session_id = 'tamper-insert') AND chain_seq >= 3;
UPDATE presence.activity_log SET chain_seq = chain_seq - 999
 WHERE session_id = (SELECT id FROM presence.collaboration_sessions WHERE session_id = 'tamper-insert') AND chain_seq > 1000;
INSERT INTO presence.activity_log (id, session_id, user_id, activity_type, chain_seq, prev_hash, row_hash)
SELECT '00000000-0000-4000-8000-00000000f001', a.session_id, NULL, 'forged', 3, a.row_hash, sha256('forged')
  FROM presence.activity_log a WHERE a.id = regress.link('tamper-insert', 2);
RESET session_replication_role;
SELECT ok, rows_checked, first_bad_id FROM presence.verify_audit_chain('tamper-insert');

-- An inserted row whose hash follows the recipe: the next row is bad.
SELECT regress.chain_session('tamper-insert-rehash', 6);
SELECT regress.link('tamper-insert-rehash', 3) AS pushed_back \gset
SET session_replication_role = replica;
UPDATE presence.activity_log SET chain_seq = chain_seq + 1000
 WHERE session_id = (SELECT id FROM presence.collaboration_sessions WHERE session_id = 'tamper-insert-rehash') AND chain_seq >= 3;
UPDATE presence.activity_log SET chain_seq = chain_seq - 999
 WHERE session_id = (SELECT id FROM presence.collaboration_sessions WHERE session_id = 'tamper-insert-rehash') AND chain_seq > 1000;
INSERT INTO presence.activity_log (id, session_id, user_id, activity_type, created_at, chain_seq, prev_hash, row_hash)
SELECT '00000000-0000-4000-8000-00000000f002', a.session_id, NULL, 'forged', a.created_at, 3, a.row_hash, '\x'
  FROM presence.activity_log a WHERE a.id = regress.link('tamper-insert-rehash', 2);
UPDATE presence.activity_log a SET row_hash = regress.chain_hash(a, a.prev_hash) WHERE id = '00000000-0000-4000-8000-00000000f002';
RESET session_replication_role;
SELECT ok, rows_checked, first_bad_id = :'pushed_back' AS first_bad_is_old_link_3
  FROM presence.verify_audit_chain('tamper-insert-rehash');

-- A row appended with a forged link.
SELECT regress.chain_session('tamper-append', 6);
SET session_replication_role = replica;
INSERT INTO presence.activity_log (id, session_id, activity_type, chain_seq, prev_hash, row_hash)
SELECT '00000000-0000-4000-8000-00000000f003', a.session_id, 'forged', 7, a.row_hash, sha256('forged')
  FROM presence.activity_log a WHERE a.id = regress.link('tamper-append', 6);
RESET session_replication_role;
SELECT ok, rows_checked, first_bad_id FROM presence.verify_audit_chain('tamper-append');

-- Cutting off the newest rows leaves a chain that verifies; only a head
-- recorded earlier (audit_chain_head) shows it.
SELECT regress.chain_session('tamper-tail', 6);
SELECT chain_seq AS recorded_seq, row_hash AS recorded_hash FROM presence.audit_chain_head('tamper-tail') \gset
SET session_replication_role = replica;
DELETE FROM presence.activity_log WHERE id = regress.link('tamper-tail', 6);
RESET session_replication_role;
SELECT * FROM presence.verify_audit_chain('tamper-tail');
SELECT chain_seq = :recorded_seq AS same_seq, row_hash = :'recorded_hash' AS same_hash
  FROM presence.audit_chain_head('tamper-tail');

--
-- purge_activity: removes each session's oldest rows up to its first
-- newer one, anchors the cut, and the rest still verifies.  The rows here
-- are from 2001; nothing else in this database is older than 2010.
--
-- (Sessions made directly, without a session_created row of today.)
INSERT INTO presence.collaboration_sessions (id, session_id, owner_id) VALUES
	('00000000-0000-4000-8000-00000000c011', 'purge-part', '00000000-0000-4000-8000-000000000401'),
	('00000000-0000-4000-8000-00000000c012', 'purge-all', '00000000-0000-4000-8000-000000000401'),
	('00000000-0000-4000-8000-00000000c013', 'purge-none', '00000000-0000-4000-8000-000000000401');
-- purge-part: three old rows, a new one, an old one after it.
SELECT count(*) FROM presence.log_activity_batch(array_fill('purge-part'::text, ARRAY[5]),
	array_fill(NULL::uuid, ARRAY[5]), ARRAY['old.a', 'old.b', 'old.c', 'new.d', 'old.e'],
	created_ats => ARRAY['2001-01-01', '2001-01-02', '2001-01-03', NULL, '2001-01-05']::timestamptz[]);
-- purge-all: only old rows.
SELECT count(*) FROM presence.log_activity_batch(array_fill('purge-all'::text, ARRAY[3]),
	array_fill(NULL::uuid, ARRAY[3]), ARRAY['old.a', 'old.b', 'old.c'],
	created_ats => ARRAY['2001-01-01', '2001-01-02', '2001-01-03']::timestamptz[]);
-- purge-none: a new row first, so nothing goes.
SELECT count(*) FROM presence.log_activity_batch(array_fill('purge-none'::text, ARRAY[2]),
	array_fill(NULL::uuid, ARRAY[2]), ARRAY['new.a', 'old.b'],
	created_ats => ARRAY[NULL, '2001-01-02']::timestamptz[]);
SELECT session_id, (presence.verify_audit_chain(session_id)).* FROM (VALUES ('purge-part'), ('purge-all'), ('purge-none')) v(session_id);
SELECT chain_seq AS part_seq, row_hash AS part_hash FROM presence.audit_chain_head('purge-part') \gset
SELECT chain_seq AS all_seq, row_hash AS all_hash FROM presence.audit_chain_head('purge-all') \gset

SELECT presence.purge_activity(now() - timestamptz '2010-01-01') AS purged;
SELECT s.session_id, a.chain_seq, a.activity_type
  FROM presence.activity_log a JOIN presence.collaboration_sessions s ON s.id = a.session_id
 WHERE s.session_id LIKE 'purge-%' ORDER BY 1, 2;
SELECT s.session_id, x.chain_seq, x.rows_purged
  FROM presence.audit_chain_anchors x JOIN presence.collaboration_sessions s ON s.id = x.session_id
 ORDER BY 1;
SELECT session_id, (presence.verify_audit_chain(session_id)).* FROM (VALUES ('purge-part'), ('purge-all'), ('purge-none')) v(session_id);
SELECT * FROM regress.audit('purge-part');
-- The heads did not move.
SELECT chain_seq = :part_seq AS same_seq, row_hash = :'part_hash' AS same_hash FROM presence.audit_chain_head('purge-part');
SELECT chain_seq = :all_seq AS same_seq, row_hash = :'all_hash' AS same_hash FROM presence.audit_chain_head('purge-all');
-- Nothing more to purge; a fully purged session chains on from its anchor.
SELECT presence.purge_activity(now() - timestamptz '2010-01-01') AS purged_again;
SELECT presence.log_activity('purge-all', NULL, 'after.purge') IS NOT NULL AS logged;
SELECT chain_seq, activity_type FROM presence.session_activity('purge-all');
SELECT * FROM presence.verify_audit_chain('purge-all');
SELECT * FROM regress.audit('purge-all');
-- Deleting the first row after an anchor is still caught.
SET session_replication_role = replica;
DELETE FROM presence.activity_log WHERE id = regress.link('purge-part', 4);
RESET session_replication_role;
SELECT ok, rows_checked, first_bad_id = regress.link('purge-part', 5) AS first_bad_is_link_5
  FROM presence.verify_audit_chain('purge-part');

-- The anchors are append-only too.
SELECT regress.try($$UPDATE presence.audit_chain_anchors SET rows_purged = 0$$);
SELECT regress.try($$DELETE FROM presence.audit_chain_anchors$$);
SELECT regress.try($$TRUNCATE presence.audit_chain_anchors$$);
SELECT regress.try($$SELECT presence.purge_activity('-1 day')$$);
SELECT regress.try($$SELECT presence.purge_activity('-1 month')$$);
SELECT regress.try($$SELECT presence.purge_activity(NULL)$$);

--
-- A restore (pg_dump loads the table after CREATE EXTENSION): rows that a
-- superuser inserts with their whole link keep it.
--
SELECT regress.chain_session('restored', 4);
CREATE TEMP TABLE dumped AS
SELECT a.* FROM presence.activity_log a JOIN presence.collaboration_sessions s ON s.id = a.session_id
 WHERE s.session_id = 'restored';
SET session_replication_role = replica;
DELETE FROM presence.activity_log WHERE id IN (SELECT id FROM dumped);
RESET session_replication_role;
-- in an order other than the chain's, as a dump may
INSERT INTO presence.activity_log SELECT * FROM dumped ORDER BY chain_seq DESC;
SELECT count(*) AS unchanged_rows FROM presence.activity_log a JOIN dumped d USING (id, chain_seq, prev_hash, row_hash);
SELECT * FROM presence.verify_audit_chain('restored');
-- and the chain goes on from the restored head.
SELECT presence.log_activity('restored', NULL, 'after.restore') IS NOT NULL AS logged;
SELECT * FROM presence.verify_audit_chain('restored');

--
-- Signed checkpoints.  Signing needs a key file, so it is tested in
-- test/test_audit_checkpoints.py; here, what needs none.
--
SELECT regress.try($$SELECT * FROM presence.audit_checkpoint('chain-vector')$$);
SELECT regress.try($$SELECT * FROM presence.audit_checkpoint(NULL)$$);
-- verify_audit_chain checks every stored checkpoint: one whose signature
-- is not its key's is caught, though every row verifies;
SELECT regress.chain_session('checkpoint-forged', 3);
INSERT INTO presence.audit_checkpoints (session_id, chain_seq, row_hash, signed_at, signature, public_key)
SELECT a.session_id, a.chain_seq, a.row_hash, '2024-01-02 03:05:00+00', decode(repeat('00', 64), 'hex'),
	   decode(repeat('ab', 32), 'hex')
  FROM presence.activity_log a JOIN presence.collaboration_sessions s ON s.id = a.session_id
 WHERE s.session_id = 'checkpoint-forged' AND a.chain_seq = 2;
SELECT * FROM presence.verify_audit_chain('checkpoint-forged');
-- the checkpoints are append-only, like the log.
SELECT regress.try($$UPDATE presence.audit_checkpoints SET chain_seq = 1$$);
SELECT regress.try($$DELETE FROM presence.audit_checkpoints$$);
SELECT regress.try($$TRUNCATE presence.audit_checkpoints$$);
SELECT regress.try($$INSERT INTO presence.audit_checkpoints SELECT session_id, 0, row_hash, signed_at, signature, public_key
						FROM presence.audit_checkpoints$$);

-- (Its row type argument would hold up DROP EXTENSION in drop.sql.)
DROP FUNCTION regress.chain_hash(presence.activity_log, bytea);
