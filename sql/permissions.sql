--
-- permissions: has_permission(), cell by cell.
--
-- view: every role; comment: commenter, operator; operate: operator;
-- manage, end: the owner only; audit: operator and owner.  The owner holds
-- every permission.  Unknown users and sessions get false, not an error.
--
INSERT INTO presence.users (id, username) VALUES
	('00000000-0000-4000-8000-000000000201', 'perm-owner'),
	('00000000-0000-4000-8000-000000000202', 'perm-viewer'),
	('00000000-0000-4000-8000-000000000203', 'perm-commenter'),
	('00000000-0000-4000-8000-000000000204', 'perm-operator'),
	('00000000-0000-4000-8000-000000000205', 'perm-outsider');
SELECT presence.create_session('00000000-0000-4000-8000-000000000201', session_id => 'perm-s');
SELECT presence.add_participant('perm-s', '00000000-0000-4000-8000-000000000202', 'viewer');
SELECT presence.add_participant('perm-s', '00000000-0000-4000-8000-000000000203', 'commenter');
SELECT presence.add_participant('perm-s', '00000000-0000-4000-8000-000000000204', 'operator');

-- The matrix.  "unknown" is a user id that is not in presence.users.
SELECT who,
	   presence.has_permission('perm-s', id, 'view') AS view,
	   presence.has_permission('perm-s', id, 'comment') AS comment,
	   presence.has_permission('perm-s', id, 'operate') AS operate,
	   presence.has_permission('perm-s', id, 'manage') AS manage,
	   presence.has_permission('perm-s', id, 'end') AS "end",
	   presence.has_permission('perm-s', id, 'audit') AS audit
  FROM (VALUES (1, 'owner', '00000000-0000-4000-8000-000000000201'::uuid),
			   (2, 'viewer', '00000000-0000-4000-8000-000000000202'),
			   (3, 'commenter', '00000000-0000-4000-8000-000000000203'),
			   (4, 'operator', '00000000-0000-4000-8000-000000000204'),
			   (5, 'non-participant', '00000000-0000-4000-8000-000000000205'),
			   (6, 'unknown', '00000000-0000-4000-8000-0000000002ff')) AS u(n, who, id)
 ORDER BY n;

-- A removed participant loses every permission; a role change applies at once.
SELECT presence.remove_participant('perm-s', '00000000-0000-4000-8000-000000000203');
SELECT presence.add_participant('perm-s', '00000000-0000-4000-8000-000000000202', 'operator');
SELECT who,
	   presence.has_permission('perm-s', id, 'view') AS view,
	   presence.has_permission('perm-s', id, 'comment') AS comment,
	   presence.has_permission('perm-s', id, 'operate') AS operate,
	   presence.has_permission('perm-s', id, 'audit') AS audit
  FROM (VALUES (1, 'removed commenter', '00000000-0000-4000-8000-000000000203'::uuid),
			   (2, 'viewer made operator', '00000000-0000-4000-8000-000000000202')) AS u(n, who, id)
 ORDER BY n;

-- Unknown or NULL sessions and users: false.
SELECT presence.has_permission('perm-none', '00000000-0000-4000-8000-000000000201', 'view') AS unknown_session,
	   presence.has_permission(NULL, '00000000-0000-4000-8000-000000000201', 'view') AS null_session,
	   presence.has_permission('perm-s', NULL, 'view') AS null_user;

-- The owner keeps every permission after the session ended.
SELECT presence.end_session('perm-s');
SELECT presence.has_permission('perm-s', '00000000-0000-4000-8000-000000000201', 'manage') AS owner_manage,
	   presence.has_permission('perm-s', '00000000-0000-4000-8000-000000000204', 'operate') AS operator_operate;

-- An unknown action is an error; so is a NULL one.
SELECT regress.try($$SELECT presence.has_permission('perm-s', '00000000-0000-4000-8000-000000000201', 'delete')$$);
SELECT regress.try($$SELECT presence.has_permission('perm-s', '00000000-0000-4000-8000-000000000201', 'VIEW')$$);
SELECT regress.try($$SELECT presence.has_permission('perm-s', '00000000-0000-4000-8000-000000000201', NULL)$$);
SELECT regress.try($$SELECT presence.has_permission('perm-none', NULL, 'delete')$$);
