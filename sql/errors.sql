--
-- errors: a NULL in each argument of each function, and one example of
-- every other SQLSTATE the API raises.  (The other suites test each path
-- in place; this is the overview.)
--
INSERT INTO presence.users (id, username) VALUES
	('00000000-0000-4000-8000-000000000801', 'err-owner'),
	('00000000-0000-4000-8000-000000000802', 'err-ann');
SELECT presence.create_session('00000000-0000-4000-8000-000000000801', session_id => 'err-s');
SELECT presence.create_session('00000000-0000-4000-8000-000000000801', session_id => 'err-ended');
SELECT presence.end_session('err-ended');

-- Every NULL an argument can be: 22004, except where NULL means "none"
-- (optional text and the user of a system event), where it is accepted.
SELECT call, regress.try('SELECT ' || call) AS result
  FROM (VALUES
	('presence.create_session(NULL)'),
	($$presence.create_session('00000000-0000-4000-8000-000000000801', NULL, '{}', NULL, NULL, 'err-null-texts')$$),
	($$presence.create_session('00000000-0000-4000-8000-000000000801', metadata => NULL)$$),
	($$presence.add_participant(NULL, '00000000-0000-4000-8000-000000000802')$$),
	($$presence.add_participant('err-s', NULL)$$),
	($$presence.add_participant('err-s', '00000000-0000-4000-8000-000000000802', NULL)$$),
	($$presence.remove_participant(NULL, '00000000-0000-4000-8000-000000000802')$$),
	($$presence.remove_participant('err-s', NULL)$$),
	('presence.participants(NULL)'),
	($$presence.has_permission(NULL, '00000000-0000-4000-8000-000000000802', 'view')$$),
	($$presence.has_permission('err-s', NULL, 'view')$$),
	($$presence.has_permission('err-s', '00000000-0000-4000-8000-000000000802', NULL)$$),
	('presence.end_session(NULL)'),
	($$presence.end_session('err-s', NULL)$$),
	('presence.online_users(NULL)'),
	($$presence.broadcast(NULL, '{}')$$),
	($$presence.broadcast('err-s', NULL)$$),
	($$presence.log_activity(NULL, NULL, 'x')$$),
	($$presence.log_activity('err-s', NULL, 'x')$$),
	($$presence.log_activity('err-s', NULL, NULL)$$),
	($$presence.log_activity('err-s', NULL, 'x', NULL)$$),
	($$presence.log_activity_batch(NULL, '{}', '{}')$$),
	($$presence.log_activity_batch('{}', NULL, '{}')$$),
	($$presence.log_activity_batch('{}', '{}', NULL)$$),
	($$presence.log_activity_batch('{err-s}', '{NULL}', '{x}', NULL, NULL, NULL, NULL)$$),
	('presence.session_activity(NULL)'),
	($$presence.session_activity('err-s', NULL)$$),
	('presence.audit_trail(NULL)'),
	('presence.activity_statistics(NULL)'),
	('presence.export_activity_csv(NULL)'),
	('presence.verify_audit_chain(NULL)'),
	('presence.audit_chain_head(NULL)'),
	('presence.purge_activity(NULL)'),
	('presence.issue_token(NULL)'),
	($$presence.issue_token('00000000-0000-4000-8000-000000000802', NULL)$$),
	($$presence.issue_token('00000000-0000-4000-8000-000000000802', '1 hour', NULL)$$),
	('presence.grant_application_role(NULL)'),
	('presence.grant_auditor_role(NULL)')
	) AS t(call);

-- Every other SQLSTATE, once.
SELECT what, regress.try(statement) AS result
  FROM (VALUES
	(1, 'unknown session', $$SELECT presence.participants('err-none')$$),
	(2, 'unknown user', $$SELECT presence.add_participant('err-s', '00000000-0000-4000-8000-0000000008ff')$$),
	(3, 'bad role', $$SELECT presence.add_participant('err-s', '00000000-0000-4000-8000-000000000802', 'owner')$$),
	(4, 'bad action', $$SELECT presence.has_permission('err-s', '00000000-0000-4000-8000-000000000802', 'own')$$),
	(5, 'bad end status', $$SELECT presence.end_session('err-s', 'inactive')$$),
	(6, 'bad session id', $$SELECT presence.create_session('00000000-0000-4000-8000-000000000801', session_id => 'a b')$$),
	(7, 'bad activity type', $$SELECT presence.log_activity('err-s', NULL, 'A')$$),
	(8, 'metadata not an object', $$SELECT presence.create_session('00000000-0000-4000-8000-000000000801', metadata => '"m"')$$),
	(9, 'details not an object', $$SELECT presence.log_activity('err-s', NULL, 'x', '1')$$),
	(10, 'oversize text', $$SELECT presence.create_session('00000000-0000-4000-8000-000000000801', target => repeat('t', 501))$$),
	(11, 'oversize details', $$SELECT presence.log_activity('err-s', NULL, 'x', jsonb_build_object('t', repeat('x', 70000)))$$),
	(12, 'duplicate session id', $$SELECT presence.create_session('00000000-0000-4000-8000-000000000801', session_id => 'err-s')$$),
	(13, 'ended session', $$SELECT presence.add_participant('err-ended', '00000000-0000-4000-8000-000000000802')$$),
	(14, 'owner removed', $$SELECT presence.remove_participant('err-s', '00000000-0000-4000-8000-000000000801')$$),
	(15, 'bad ttl', $$SELECT presence.issue_token('00000000-0000-4000-8000-000000000802', '0')$$),
	(16, 'negative purge interval', $$SELECT presence.purge_activity('-1 hour')$$),
	(17, 'append-only', $$DELETE FROM presence.activity_log$$)
	) AS t(n, what, statement)
 ORDER BY n;
-- max_participants (53400) is in sessions.sql: it needs a full session.
