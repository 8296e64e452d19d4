--
-- upgrade: a database made with 1.0 is updated in place to 1.1 (a fixed
-- _ensure_user), 1.2 (presence announced with NOTIFY) and 1.3
-- (log_activity_batch in C) and 1.4 (present_at and the replay, signed
-- audit checkpoints, the permission function), its data and its audit
-- chain untouched; later versions add sql/presence--1.4--<new>.sql and raise default_version in
-- presence.control (docs/sql-reference.md, "Upgrades").
--
DROP EXTENSION presence CASCADE;
CREATE ROLE regress_upgrade_app;
CREATE EXTENSION presence VERSION '1.0';
INSERT INTO presence.users (id, username) VALUES ('00000000-0000-4000-8000-000000000a01', 'upg-owner');
SELECT presence.create_session('00000000-0000-4000-8000-000000000a01', session_id => 'upg-s');
SELECT presence.log_activity('upg-s', NULL, 'before.update') IS NOT NULL AS logged;

SELECT name, version, installed, superuser, relocatable, schema, requires
  FROM pg_available_extension_versions WHERE name = 'presence' ORDER BY version;
SELECT * FROM pg_extension_update_paths('presence') ORDER BY source, target;
-- 1.0's _ensure_user gives up when the name and the name with the id's first block are taken
INSERT INTO presence.users (id, username) VALUES ('00000000-0000-4000-8000-000000000a02', 'vera'),
	('00000000-0000-4000-8000-000000000a03', 'vera #abcd1234');
SELECT presence._ensure_user('abcd1234-0000-4000-8000-000000000a04', 'vera');
ALTER EXTENSION presence UPDATE TO '1.1';
SELECT extversion FROM pg_extension WHERE extname = 'presence';
-- 1.1's finds a free name
SELECT presence._ensure_user('abcd1234-0000-4000-8000-000000000a04', 'vera');
SELECT presence._ensure_user('abcd1234-0000-4000-8000-000000000a04', 'someone else');
-- 1.2 announces presence changes on the session's channel
ALTER EXTENSION presence UPDATE TO '1.2';
SELECT extversion FROM pg_extension WHERE extname = 'presence';
SELECT tgname FROM pg_trigger WHERE tgrelid = 'presence.activity_log'::regclass AND tgname = 'activity_presence_notify';
SELECT presence.channel('upg-s'), presence.channel(repeat('x', 54)) = 'presence:' || repeat('x', 54) AS short_kept,
	presence.channel(repeat('x', 55)) AS long_hashed;
SELECT count(*) FROM presence.log_activity_batch(ARRAY['upg-s'], ARRAY[NULL]::uuid[], ARRAY['batch.in.sql']);
-- 1.3: log_activity_batch is C, its grants kept; the SQL batch check is gone
GRANT EXECUTE ON FUNCTION presence.log_activity_batch(text[], uuid[], text[], jsonb[], inet[], text[], timestamptz[])
	TO regress_upgrade_app;
ALTER EXTENSION presence UPDATE TO '1.3';
SELECT extversion FROM pg_extension WHERE extname = 'presence';
SELECT l.lanname, p.prosecdef, p.proconfig, p.proretset,
	   has_function_privilege('regress_upgrade_app', p.oid, 'EXECUTE') AS app_may,
	   has_function_privilege('public', p.oid, 'EXECUTE') AS public_may
  FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang WHERE p.oid = 'presence.log_activity_batch'::regproc;
SELECT to_regproc('presence._check_activity_rows') IS NULL AS check_gone;
SELECT count(*) FROM presence.log_activity_batch(ARRAY['upg-s', 'upg-s'], ARRAY[NULL, NULL]::uuid[],
												 ARRAY['batch.in.c', 'batch.in.c']);
-- 1.4: presence replayed from the log, signed checkpoints, the application's
-- permission function; verify_audit_chain gains columns and keeps its grants
INSERT INTO presence.users (id, username) VALUES ('00000000-0000-4000-8000-000000000a05', 'upg-guest');
SELECT presence.add_participant('upg-s', '00000000-0000-4000-8000-000000000a05', 'commenter');
SELECT count(*) FROM presence.log_activity_batch(ARRAY['upg-s', 'upg-s'],
	ARRAY['00000000-0000-4000-8000-000000000a05', '00000000-0000-4000-8000-000000000a05']::uuid[],
	ARRAY['user_joined', 'status_changed'], ARRAY['{}', '{"status": "away"}']::jsonb[], NULL, NULL,
	ARRAY['2026-01-01 10:00+00', '2026-01-01 10:05+00']::timestamptz[]);
GRANT EXECUTE ON FUNCTION presence.verify_audit_chain(text) TO regress_upgrade_app;
ALTER EXTENSION presence UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'presence';
SELECT has_function_privilege('regress_upgrade_app', 'presence.verify_audit_chain(text)', 'EXECUTE') AS verify_kept,
	   has_function_privilege('public', 'presence.audit_checkpoint(text)', 'EXECUTE') AS public_may_sign;
SELECT username, status, since FROM presence.present_at('upg-s', '2026-01-01 10:03+00');
SELECT username, status, since FROM presence.present_at('upg-s', '2026-01-01 10:06+00');
SELECT presence.has_permission('upg-s', '00000000-0000-4000-8000-000000000a05', 'comment') AS matrix_comment,
	   presence.has_permission('upg-s', '00000000-0000-4000-8000-000000000a05', 'operate') AS matrix_operate;
SELECT count(*) AS checkpoints FROM presence.audit_checkpoints;
-- The data and the chain are untouched and go on.
SELECT presence.log_activity('upg-s', NULL, 'after.update') IS NOT NULL AS logged;
SELECT chain_seq, activity_type FROM presence.session_activity('upg-s');
SELECT * FROM presence.verify_audit_chain('upg-s');

SELECT regress.try($$ALTER EXTENSION presence UPDATE TO '9.9'$$);
SELECT regress.try($$ALTER EXTENSION presence SET SCHEMA public$$);
REVOKE EXECUTE ON FUNCTION presence.log_activity_batch(text[], uuid[], text[], jsonb[], inet[], text[], timestamptz[])
	FROM regress_upgrade_app;
REVOKE EXECUTE ON FUNCTION presence.verify_audit_chain(text) FROM regress_upgrade_app;
DROP ROLE regress_upgrade_app;
