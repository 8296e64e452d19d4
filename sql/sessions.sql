--
-- sessions: create_session, add_participant, remove_participant,
-- participants, end_session and what they log.
-- presence.max_participants is 4 (test/regress.conf).
--
INSERT INTO presence.users (id, username) VALUES
	('00000000-0000-4000-8000-000000000101', 'ses-owner'),
	('00000000-0000-4000-8000-000000000102', 'ses-ann'),
	('00000000-0000-4000-8000-000000000103', 'ses-ben'),
	('00000000-0000-4000-8000-000000000104', 'ses-cat'),
	('00000000-0000-4000-8000-000000000105', 'ses-dan');

--
-- create_session
--
SELECT presence.create_session('00000000-0000-4000-8000-000000000101', 'op-1', '{"k": "v"}',
							   'target-1', 'objective-1', 'ses-full');
SELECT session_id, operation_id, owner_id, status, target, objective, metadata,
	   end_time IS NULL AS open, start_time = now() AS started_now
  FROM presence.collaboration_sessions WHERE session_id = 'ses-full';
-- The owner is an operator, and session_created is the first link.
SELECT username, role FROM presence.participants('ses-full');
SELECT activity_type, username, details FROM presence.audit_trail('ses-full');

-- Defaults: the session id is the row id, metadata is {}.
WITH created AS (SELECT presence.create_session('00000000-0000-4000-8000-000000000101') AS session_id)
SELECT cs.session_id = cs.id::text AS id_is_session_id, cs.metadata, cs.operation_id, cs.target, cs.objective
  FROM created JOIN presence.collaboration_sessions cs USING (session_id);

-- A session id of 128 characters is the longest.
SELECT length(presence.create_session('00000000-0000-4000-8000-000000000101',
									  session_id => 'S.' || repeat('x', 126)));

-- Errors.
SELECT regress.try($$SELECT presence.create_session('00000000-0000-4000-8000-000000000101', session_id => 'ses-full')$$);
SELECT regress.try($$SELECT presence.create_session('00000000-0000-4000-8000-000000000101', session_id => 'a:b')$$);
SELECT regress.try($$SELECT presence.create_session('00000000-0000-4000-8000-000000000101', session_id => '-dash')$$);
SELECT regress.try($$SELECT presence.create_session('00000000-0000-4000-8000-000000000101', session_id => 'updates')$$);
SELECT regress.try($$SELECT presence.create_session('00000000-0000-4000-8000-000000000101', session_id => repeat('x', 129))$$);
SELECT regress.try($$SELECT presence.create_session('00000000-0000-4000-8000-000000000101', session_id => '')$$);
SELECT regress.try($$SELECT presence.create_session('00000000-0000-4000-8000-0000000001ff')$$);
SELECT regress.try($$SELECT presence.create_session(NULL)$$);
SELECT regress.try($$SELECT presence.create_session('00000000-0000-4000-8000-000000000101', metadata => '[1]')$$);
SELECT regress.try($$SELECT presence.create_session('00000000-0000-4000-8000-000000000101', metadata => 'null')$$);
SELECT regress.try($$SELECT presence.create_session('00000000-0000-4000-8000-000000000101', metadata => NULL)$$);
SELECT regress.try($$SELECT presence.create_session('00000000-0000-4000-8000-000000000101',
					 metadata => jsonb_build_object('big', repeat('x', 65536)))$$);
SELECT regress.try($$SELECT presence.create_session('00000000-0000-4000-8000-000000000101', operation_id => repeat('o', 256))$$);
SELECT regress.try($$SELECT presence.create_session('00000000-0000-4000-8000-000000000101', target => repeat('t', 501))$$);
SELECT regress.try($$SELECT presence.create_session('00000000-0000-4000-8000-000000000101', objective => repeat('o', 10001))$$);
-- Lengths count characters, not bytes.
SELECT regress.try($$SELECT presence.create_session('00000000-0000-4000-8000-000000000101', target => repeat('é', 500),
					 session_id => 'ses-accents')$$);

--
-- add_participant, remove_participant, participants
--
SELECT presence.add_participant('ses-full', '00000000-0000-4000-8000-000000000102');
SELECT presence.add_participant('ses-full', '00000000-0000-4000-8000-000000000103', 'commenter');
SELECT username, role FROM presence.participants('ses-full') ORDER BY username;
-- Re-adding changes the role (and logs it); the same role again does nothing.
SELECT presence.add_participant('ses-full', '00000000-0000-4000-8000-000000000102', 'operator');
SELECT presence.add_participant('ses-full', '00000000-0000-4000-8000-000000000102', 'operator');
SELECT username, role FROM presence.participants('ses-full') ORDER BY username;

-- Four participants is the limit (the owner counts); a role change at the
-- limit is fine, a fifth participant is not.
SELECT presence.add_participant('ses-full', '00000000-0000-4000-8000-000000000104', 'viewer');
SELECT regress.try($$SELECT presence.add_participant('ses-full', '00000000-0000-4000-8000-000000000105')$$);
SELECT presence.add_participant('ses-full', '00000000-0000-4000-8000-000000000104', 'commenter');

-- Removing makes room; removed users are no longer listed.
SELECT presence.remove_participant('ses-full', '00000000-0000-4000-8000-000000000104');
SELECT presence.add_participant('ses-full', '00000000-0000-4000-8000-000000000105', 'viewer');
SELECT username, role FROM presence.participants('ses-full') ORDER BY username;
SELECT u.username, p.role, p.left_at IS NOT NULL AS has_left
  FROM presence.session_participants p JOIN presence.users u ON u.id = p.user_id
  JOIN presence.collaboration_sessions s ON s.id = p.session_id
 WHERE s.session_id = 'ses-full' ORDER BY u.username;
-- A removed user can come back (at the limit again, so another leaves first).
SELECT presence.remove_participant('ses-full', '00000000-0000-4000-8000-000000000105');
SELECT presence.add_participant('ses-full', '00000000-0000-4000-8000-000000000104', 'viewer');
SELECT username, role FROM presence.participants('ses-full') ORDER BY username;

-- Errors.
SELECT regress.try($$SELECT presence.add_participant('ses-full', '00000000-0000-4000-8000-000000000105', 'admin')$$);
SELECT regress.try($$SELECT presence.add_participant('ses-full', '00000000-0000-4000-8000-000000000105', NULL)$$);
SELECT regress.try($$SELECT presence.add_participant('ses-full', '00000000-0000-4000-8000-0000000001ff')$$);
SELECT regress.try($$SELECT presence.add_participant('ses-full', NULL)$$);
SELECT regress.try($$SELECT presence.add_participant('ses-none', '00000000-0000-4000-8000-000000000105')$$);
SELECT regress.try($$SELECT presence.add_participant(NULL, '00000000-0000-4000-8000-000000000105')$$);
SELECT regress.try($$SELECT presence.remove_participant('ses-full', '00000000-0000-4000-8000-000000000101')$$);
SELECT regress.try($$SELECT presence.remove_participant('ses-full', '00000000-0000-4000-8000-000000000105')$$);
SELECT regress.try($$SELECT presence.remove_participant('ses-full', '00000000-0000-4000-8000-0000000001ff')$$);
SELECT regress.try($$SELECT presence.remove_participant('ses-full', NULL)$$);
SELECT regress.try($$SELECT presence.remove_participant('ses-none', '00000000-0000-4000-8000-000000000102')$$);
SELECT regress.try($$SELECT presence.remove_participant(NULL, '00000000-0000-4000-8000-000000000102')$$);
SELECT regress.try($$SELECT presence.participants('ses-none')$$);
SELECT regress.try($$SELECT presence.participants(NULL)$$);

--
-- end_session
--
SELECT regress.try($$SELECT presence.end_session('ses-full', 'active')$$);
SELECT regress.try($$SELECT presence.end_session('ses-full', NULL)$$);
SELECT regress.try($$SELECT presence.end_session('ses-none')$$);
SELECT regress.try($$SELECT presence.end_session(NULL)$$);
SELECT presence.end_session('ses-full');
SELECT status, end_time IS NOT NULL AS ended FROM presence.collaboration_sessions WHERE session_id = 'ses-full';
-- An ended session takes no new participants and cannot end again.
SELECT regress.try($$SELECT presence.end_session('ses-full', 'failed')$$);
SELECT regress.try($$SELECT presence.add_participant('ses-full', '00000000-0000-4000-8000-000000000105')$$);
-- A session can also fail.
SELECT presence.create_session('00000000-0000-4000-8000-000000000102', session_id => 'ses-failing');
SELECT presence.end_session('ses-failing', 'failed');
SELECT status, end_time IS NOT NULL AS ended FROM presence.collaboration_sessions WHERE session_id = 'ses-failing';

-- Everything above is in the session's audit trail, oldest first.
SELECT activity_type, username, details FROM presence.audit_trail('ses-full');
