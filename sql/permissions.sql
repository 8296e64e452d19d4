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

--
-- presence.permission_function: the application's function decides
-- instead of the matrix, called as its owner.  Here a team table decides
-- view; a raising, a NULL-returning and an escalating function, and names
-- that do not resolve, deny with a warning.
--
CREATE ROLE regress_perm_app NOLOGIN;
CREATE SCHEMA regress_perm_app AUTHORIZATION regress_perm_app;
CREATE TABLE regress_perm_secret (x int);
SET ROLE regress_perm_app;
CREATE TABLE regress_perm_app.team (user_id uuid PRIMARY KEY);
INSERT INTO regress_perm_app.team VALUES ('00000000-0000-4000-8000-000000000205');
CREATE FUNCTION regress_perm_app.may(session_id text, user_id uuid, action text) RETURNS boolean
LANGUAGE sql STABLE AS $$
	SELECT action IN ('view', 'comment') AND EXISTS (SELECT 1 FROM regress_perm_app.team t WHERE t.user_id = may.user_id)
$$;
CREATE FUNCTION regress_perm_app.whoami(session_id text, user_id uuid, action text) RETURNS boolean
LANGUAGE sql AS $$ SELECT current_user = 'regress_perm_app' AND session_user <> current_user $$;
CREATE FUNCTION regress_perm_app.fails(session_id text, user_id uuid, action text) RETURNS boolean
LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'no team for %', user_id; END $$;
CREATE FUNCTION regress_perm_app.unknown(session_id text, user_id uuid, action text) RETURNS boolean
LANGUAGE sql AS $$ SELECT NULL::boolean $$;
CREATE FUNCTION regress_perm_app.escalate(session_id text, user_id uuid, action text) RETURNS boolean
LANGUAGE plpgsql AS $$ BEGIN ALTER ROLE regress_perm_app SUPERUSER; RETURN true; END $$;
CREATE FUNCTION regress_perm_app.peek(session_id text, user_id uuid, action text) RETURNS boolean
LANGUAGE sql AS $$ SELECT count(*) >= 0 FROM public.regress_perm_secret $$;
CREATE FUNCTION regress_perm_app.wrong(session_id text, user_id uuid, action text) RETURNS text
LANGUAGE sql AS $$ SELECT 'yes' $$;
RESET ROLE;
SELECT presence.create_session('00000000-0000-4000-8000-000000000201', session_id => 'perm-f');

-- A team member may view and comment, not operate; the session's owner
-- outside the team holds nothing: the matrix is not consulted.
SET presence.permission_function = 'regress_perm_app.may';
SELECT presence.has_permission('perm-f', '00000000-0000-4000-8000-000000000205', 'view') AS member_view,
	   presence.has_permission('perm-f', '00000000-0000-4000-8000-000000000205', 'comment') AS member_comment,
	   presence.has_permission('perm-f', '00000000-0000-4000-8000-000000000205', 'operate') AS member_operate,
	   presence.has_permission('perm-f', '00000000-0000-4000-8000-000000000201', 'view') AS owner_view;
-- It reads the table as it is now.
DELETE FROM regress_perm_app.team;
SELECT presence.has_permission('perm-f', '00000000-0000-4000-8000-000000000205', 'view') AS removed_view;
-- The action is still checked first; NULL arguments are still false.
SELECT regress.try($$SELECT presence.has_permission('perm-f', '00000000-0000-4000-8000-000000000205', 'own')$$);
SELECT presence.has_permission('perm-f', NULL, 'view') AS null_user;

-- It runs as its owner, not as has_permission's.
SET presence.permission_function = 'regress_perm_app.whoami';
SELECT presence.has_permission('perm-f', '00000000-0000-4000-8000-000000000205', 'view') AS as_owner;

-- An error, NULL, and the owner's attempts at superuser rights deny.
SET presence.permission_function = 'regress_perm_app.fails';
SELECT presence.has_permission('perm-f', '00000000-0000-4000-8000-000000000205', 'view') AS raises;
SET presence.permission_function = 'regress_perm_app.unknown';
SELECT presence.has_permission('perm-f', '00000000-0000-4000-8000-000000000205', 'view') AS null_answer;
SET presence.permission_function = 'regress_perm_app.escalate';
SELECT presence.has_permission('perm-f', '00000000-0000-4000-8000-000000000205', 'view') AS escalates;
SELECT rolsuper FROM pg_roles WHERE rolname = 'regress_perm_app';
SET presence.permission_function = 'regress_perm_app.peek';
SELECT presence.has_permission('perm-f', '00000000-0000-4000-8000-000000000205', 'view') AS peeks;

-- Names that do not resolve to (text, uuid, text) -> boolean deny.
SET presence.permission_function = 'may';
SELECT presence.has_permission('perm-f', '00000000-0000-4000-8000-000000000205', 'view') AS unqualified;
SET presence.permission_function = 'regress_perm_app.missing';
SELECT presence.has_permission('perm-f', '00000000-0000-4000-8000-000000000205', 'view') AS missing;
SET presence.permission_function = 'regress_perm_app.wrong';
SELECT presence.has_permission('perm-f', '00000000-0000-4000-8000-000000000205', 'view') AS wrong_type;
SET presence.permission_function = 'regress_perm_app.may(text';
SELECT presence.has_permission('perm-f', '00000000-0000-4000-8000-000000000205', 'view') AS malformed;

-- A schema whose name has a dot and a quote is named quoted; unquoted, the
-- dot splits it and the name does not resolve.
CREATE SCHEMA "regress.perm""app" AUTHORIZATION regress_perm_app;
CREATE FUNCTION "regress.perm""app".may(session_id text, user_id uuid, action text) RETURNS boolean
LANGUAGE sql AS $$ SELECT true $$;
ALTER FUNCTION "regress.perm""app".may(text, uuid, text) OWNER TO regress_perm_app;
SET presence.permission_function = '"regress.perm""app".may';
SELECT presence.has_permission('perm-f', '00000000-0000-4000-8000-000000000205', 'view') AS quoted;
SET presence.permission_function = 'regress.perm"app.may';
SELECT presence.has_permission('perm-f', '00000000-0000-4000-8000-000000000205', 'view') AS unquoted;
DROP SCHEMA "regress.perm""app" CASCADE;

-- Only a superuser sets it; permissions_changed is not PUBLIC's.
RESET presence.permission_function;
SET ROLE regress_perm_app;
SELECT regress.try($$SET presence.permission_function = 'regress_perm_app.may'$$);
SELECT regress.try($$SELECT presence.permissions_changed('perm-f')$$);
RESET ROLE;
SELECT presence.permissions_changed('perm-f');
SELECT regress.try($$SELECT presence.permissions_changed('perm-none')$$);
-- Back to the matrix.
SELECT presence.has_permission('perm-f', '00000000-0000-4000-8000-000000000201', 'view') AS matrix_owner_view;
DROP SCHEMA regress_perm_app CASCADE;
DROP TABLE regress_perm_secret;
DROP ROLE regress_perm_app;
