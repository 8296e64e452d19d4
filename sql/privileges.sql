--
-- privileges: nothing in presence is PUBLIC's; grant_application_role and
-- grant_auditor_role give a role what an application or an auditor needs.
--
CREATE ROLE app_role;
CREATE ROLE auditor_role;
CREATE ROLE nobody_role;	-- has only what PUBLIC has
SELECT presence.grant_application_role('app_role');
SELECT presence.grant_auditor_role('auditor_role');
-- Granting again changes nothing.
SELECT presence.grant_application_role('app_role');

INSERT INTO presence.users (id, username) VALUES
	('00000000-0000-4000-8000-000000000701', 'priv-owner'),
	('00000000-0000-4000-8000-000000000702', 'priv-ann');
SELECT presence.create_session('00000000-0000-4000-8000-000000000701', session_id => 'priv-s');

-- PUBLIC has no schema usage, no table privilege, no function.
SELECT has_schema_privilege('public', 'presence', 'USAGE') AS schema_usage;
SELECT c.relname, p.privilege
  FROM pg_class c, unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) p(privilege)
 WHERE c.relnamespace = 'presence'::regnamespace AND c.relkind = 'r'
   AND has_table_privilege('public', c.oid, p.privilege);
SELECT count(*) AS functions_public_may_run
  FROM pg_proc WHERE pronamespace = 'presence'::regnamespace AND has_function_privilege('public', oid, 'EXECUTE');

-- regress.try() as a role; "{role}" in the statement is its name.
CREATE FUNCTION regress.try_as(role_name text, statement text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	result text;
BEGIN
	EXECUTE format('SET LOCAL ROLE %I', role_name);
	result := regress.try(replace(statement, '{role}', role_name));
	RESET ROLE;
	RETURN split_part(result, ':', 1);
END $$;

-- What each role can call: ok, or the SQLSTATE (42501 is permission denied).
SELECT n, what,
	   regress.try_as('app_role', statement) AS app_role,
	   regress.try_as('auditor_role', statement) AS auditor_role,
	   regress.try_as('nobody_role', statement) AS nobody_role
  FROM (VALUES
	(1, 'create_session', $$SELECT presence.create_session('00000000-0000-4000-8000-000000000701', session_id => 'priv-{role}')$$),
	(2, 'add_participant', $$SELECT presence.add_participant('priv-s', '00000000-0000-4000-8000-000000000702', 'commenter')$$),
	(3, 'participants', $$SELECT presence.participants('priv-s')$$),
	(4, 'has_permission', $$SELECT presence.has_permission('priv-s', '00000000-0000-4000-8000-000000000702', 'view')$$),
	(5, 'log_activity', $$SELECT presence.log_activity('priv-s', '00000000-0000-4000-8000-000000000702', 'by.{role}')$$),
	(6, 'log_activity_batch', $$SELECT presence.log_activity_batch('{priv-s}', '{NULL}', '{batch.by.{role}}')$$),
	(7, 'session_activity', $$SELECT presence.session_activity('priv-s')$$),
	(8, 'online_users', $$SELECT presence.online_users('priv-s')$$),
	(9, 'broadcast', $$SELECT presence.broadcast('priv-s', '{}')$$),
	(10, 'stats', $$SELECT presence.stats()$$),
	(11, 'issue_token', $$SELECT presence.issue_token('00000000-0000-4000-8000-000000000702')$$),
	(12, 'remove_participant', $$SELECT presence.remove_participant('priv-s', '00000000-0000-4000-8000-000000000702')$$),
	(13, 'end_session', $$SELECT presence.end_session('priv-{role}')$$),
	(14, 'audit_trail', $$SELECT presence.audit_trail('priv-s')$$),
	(15, 'activity_statistics', $$SELECT presence.activity_statistics('priv-s')$$),
	(16, 'export_activity_csv', $$SELECT presence.export_activity_csv('priv-s')$$),
	(17, 'verify_audit_chain', $$SELECT presence.verify_audit_chain('priv-s')$$),
	(18, 'audit_chain_head', $$SELECT presence.audit_chain_head('priv-s')$$),
	(19, 'purge_activity', $$SELECT presence.purge_activity('100 years')$$),
	(20, 'grant_application_role', $$SELECT presence.grant_application_role('{role}')$$),
	(21, 'grant_auditor_role', $$SELECT presence.grant_auditor_role('{role}')$$),
	(22, '_append_activity', $$SELECT presence._append_activity(NULL, NULL, 'x', '{}')$$),
	(23, '_notify_workers', $$SELECT presence._notify_workers('broadcast', 'priv-s', NULL, '{}')$$),
	(24, 'SELECT users', $$SELECT * FROM presence.users$$),
	(25, 'INSERT users', $$INSERT INTO presence.users (username) VALUES ('priv-{role}')$$),
	(26, 'SELECT sessions', $$SELECT * FROM presence.collaboration_sessions$$),
	(27, 'SELECT participants', $$SELECT * FROM presence.session_participants$$),
	(28, 'SELECT activity_log', $$SELECT * FROM presence.activity_log$$),
	(29, 'SELECT anchors', $$SELECT * FROM presence.audit_chain_anchors$$),
	(30, 'INSERT activity_log', $$INSERT INTO presence.activity_log (session_id, activity_type)
								   SELECT id, 'forged' FROM presence.collaboration_sessions LIMIT 1$$),
	(31, 'UPDATE sessions', $$UPDATE presence.collaboration_sessions SET status = 'failed'$$),
	(32, 'DELETE activity_log', $$DELETE FROM presence.activity_log$$),
	(33, 'DELETE users', $$DELETE FROM presence.users WHERE username = 'priv-ann'$$),
	-- (55000 for the auditor: no signing key is configured here)
	(34, 'audit_checkpoint', $$SELECT presence.audit_checkpoint('priv-s')$$),
	(35, 'SELECT checkpoints', $$SELECT * FROM presence.audit_checkpoints$$),
	(36, 'INSERT checkpoints', $$INSERT INTO presence.audit_checkpoints
								  SELECT id, 1, sha256(''), now(), '', '' FROM presence.collaboration_sessions LIMIT 1$$)
	) AS t(n, what, statement)
 ORDER BY n;

-- What the application role did is in the log under its name.
SELECT activity_type FROM presence.audit_trail('priv-s') WHERE activity_type LIKE '%by.%' ORDER BY 1;

DROP OWNED BY app_role, auditor_role, nobody_role;
DROP ROLE app_role, auditor_role, nobody_role;
