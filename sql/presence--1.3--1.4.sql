/*
 * presence 1.3 -> 1.4
 *
 * Three things the activity log living in the database makes possible:
 * presence at any past moment (present_at, presence_timeline,
 * presence_intervals), signed audit checkpoints that an auditor verifies
 * outside the database (audit_checkpoint, presence.audit_checkpoints), and
 * permissions decided by the application's own SQL function
 * (presence.permission_function).
 */
\echo Use "ALTER EXTENSION presence UPDATE TO '1.4'" to load this file. \quit

-- == Presence at any past moment ==

-- == Signed audit checkpoints ==

-- == Permissions from the application's function ==

/*
 * presence.permission_function's answer, called as the function's owner in
 * a security-restricted operation (src/permissions.c).  Errors propagate;
 * has_permission() turns them into a denial.
 */
CREATE FUNCTION presence._application_permission(session_id text, user_id uuid, action text)
RETURNS boolean
	AS 'MODULE_PATHNAME', 'presence_application_permission' LANGUAGE C VOLATILE STRICT;

/*
 * The permission matrix, or presence.permission_function when it is set.
 * The owner holds every permission of the matrix; other users hold what
 * their current role grants.  The function's failure denies, with a
 * warning naming it.
 */
CREATE OR REPLACE FUNCTION presence.has_permission(session_id text, user_id uuid, action text) RETURNS boolean
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	s_id uuid;
	s_owner uuid;
	user_role text;
BEGIN
	PERFORM presence._require(action, 'action');
	IF action NOT IN ('view', 'comment', 'operate', 'manage', 'end', 'audit') THEN
		RAISE EXCEPTION 'presence: invalid action "%"', left(action, 64)
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Actions are view, comment, operate, manage, end and audit.';
	END IF;
	IF session_id IS NULL OR user_id IS NULL THEN
		RETURN false;
	END IF;
	IF coalesce(current_setting('presence.permission_function', true), '') <> '' THEN
		BEGIN
			RETURN presence._application_permission(session_id, user_id, action);
		EXCEPTION WHEN OTHERS THEN
			RAISE WARNING 'presence: permission function % denied % to user % in session "%": %',
				current_setting('presence.permission_function'), action, user_id, left(session_id, 128), SQLERRM;
			RETURN false;
		END;
	END IF;
	SELECT cs.id, cs.owner_id INTO s_id, s_owner
	  FROM presence.collaboration_sessions cs WHERE cs.session_id = has_permission.session_id;
	IF NOT FOUND THEN
		RETURN false;
	END IF;
	IF s_owner = user_id THEN
		RETURN true;
	END IF;
	SELECT p.role INTO user_role FROM presence.session_participants p
	 WHERE p.session_id = s_id AND p.user_id = has_permission.user_id AND p.left_at IS NULL;
	RETURN CASE action
		WHEN 'view' THEN user_role IS NOT NULL
		WHEN 'comment' THEN coalesce(user_role IN ('commenter', 'operator'), false)
		WHEN 'operate' THEN coalesce(user_role = 'operator', false)
		WHEN 'audit' THEN coalesce(user_role = 'operator', false)
		ELSE false
	END;
END $$;

/*
 * The application changed what its permission function answers for a
 * session (or for one user in it): the ws workers forget their cached
 * answers for the session, and a named user who may no longer view it
 * leaves it at once.
 */
CREATE FUNCTION presence.permissions_changed(session_id text, user_id uuid DEFAULT NULL) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	s presence.collaboration_sessions := presence._session(session_id);
BEGIN
	PERFORM presence._notify_workers('participant_changed', s.session_id, user_id, NULL);
END $$;

REVOKE ALL ON FUNCTION presence._application_permission(text, uuid, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION presence.permissions_changed(text, uuid) FROM PUBLIC;

/* The application that writes the permission function tells the workers when its answers change. */
CREATE OR REPLACE FUNCTION presence.grant_application_role(role_name regrole) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	PERFORM presence._require(role_name, 'role_name');
	EXECUTE format('GRANT USAGE ON SCHEMA presence TO %s', role_name);
	EXECUTE format('GRANT EXECUTE ON FUNCTION
		presence.create_session(uuid, text, jsonb, text, text, text),
		presence.add_participant(text, uuid, text),
		presence.remove_participant(text, uuid),
		presence.participants(text),
		presence.has_permission(text, uuid, text),
		presence.end_session(text, text),
		presence.log_activity(text, uuid, text, jsonb),
		presence.log_activity_batch(text[], uuid[], text[], jsonb[], inet[], text[], timestamptz[]),
		presence.session_activity(text, int),
		presence.online_users(text),
		presence.channel(text),
		presence.presence_change(uuid),
		presence.broadcast(text, jsonb),
		presence.stats(),
		presence.issue_token(uuid, interval, text),
		presence.permissions_changed(text, uuid) TO %s', role_name);
	EXECUTE format('GRANT SELECT, INSERT ON presence.users TO %s', role_name);
	EXECUTE format('GRANT SELECT ON presence.collaboration_sessions, presence.session_participants TO %s', role_name);
END $$;
