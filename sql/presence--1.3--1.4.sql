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

/*
 * A checkpoint: the head of a session's chain (chain_seq, row_hash) signed
 * with the Ed25519 key of presence.audit_signing_key_file at signed_at;
 * public_key is the signer's raw 32-byte public key, so keys can rotate
 * and old checkpoints still verify (docs/sql-reference.md, "Signed
 * checkpoints").  Append-only like the log.  purge_activity leaves them:
 * a checkpoint below the purge anchor is still a true, signed statement
 * about rows that were removed the sanctioned way, it holds no personal
 * data, and removing it would let a purge hide a rewrite of what it left.
 */
CREATE TABLE presence.audit_checkpoints (
	session_id uuid NOT NULL REFERENCES presence.collaboration_sessions (id),
	chain_seq bigint NOT NULL CONSTRAINT audit_checkpoints_seq_positive CHECK (chain_seq > 0),
	row_hash bytea NOT NULL CONSTRAINT audit_checkpoints_hash_length CHECK (octet_length(row_hash) = 32),
	signed_at timestamptz NOT NULL,
	signature bytea NOT NULL,
	public_key bytea NOT NULL,
	PRIMARY KEY (session_id, chain_seq, signed_at)
);

SELECT pg_catalog.pg_extension_config_dump('presence.audit_checkpoints', '');

CREATE TRIGGER checkpoints_append_only BEFORE UPDATE OR DELETE ON presence.audit_checkpoints
	FOR EACH ROW EXECUTE FUNCTION presence._activity_guard();
CREATE TRIGGER checkpoints_no_truncate BEFORE TRUNCATE ON presence.audit_checkpoints
	FOR EACH STATEMENT EXECUTE FUNCTION presence._activity_guard();

CREATE FUNCTION presence.audit_checkpoint(session_id text,
										  OUT chain_seq bigint, OUT row_hash bytea,
										  OUT signed_at timestamptz, OUT signature bytea)
	AS 'MODULE_PATHNAME', 'presence_audit_checkpoint'
	LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

/*
 * verify_audit_chain also checks the stored checkpoints: two more result
 * columns, so the function is made again, with the grants it had.
 */
DO $$
DECLARE
	grantees regrole[] := ARRAY(
		SELECT a.grantee::regrole
		  FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) a
		 WHERE p.oid = 'presence.verify_audit_chain(text)'::pg_catalog.regprocedure
		   AND a.privilege_type = 'EXECUTE' AND a.grantee <> 0 AND a.grantee <> p.proowner);
	r regrole;
BEGIN
	DROP FUNCTION presence.verify_audit_chain(text);
	CREATE FUNCTION presence.verify_audit_chain(session_id text,
												OUT ok boolean, OUT rows_checked bigint, OUT first_bad_id uuid,
												OUT checkpoints_checked bigint, OUT first_bad_checkpoint bigint)
		AS 'MODULE_PATHNAME', 'presence_verify_audit_chain'
		LANGUAGE C STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
	REVOKE ALL ON FUNCTION presence.verify_audit_chain(text) FROM PUBLIC;
	FOREACH r IN ARRAY grantees LOOP
		EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION presence.verify_audit_chain(text) TO %s', r);
	END LOOP;
END $$;

/* Auditors can read the checkpoints and save a fresh one. */
CREATE OR REPLACE FUNCTION presence.grant_auditor_role(role_name regrole) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	PERFORM presence._require(role_name, 'role_name');
	EXECUTE format('GRANT USAGE ON SCHEMA presence TO %s', role_name);
	EXECUTE format('GRANT EXECUTE ON FUNCTION
		presence.participants(text),
		presence.has_permission(text, uuid, text),
		presence.session_activity(text, int),
		presence.audit_trail(text),
		presence.activity_statistics(text),
		presence.export_activity_csv(text),
		presence.verify_audit_chain(text),
		presence.audit_chain_head(text),
		presence.audit_checkpoint(text),
		presence.stats() TO %s', role_name);
	EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA presence TO %s', role_name);
END $$;

REVOKE ALL ON FUNCTION presence.audit_checkpoint(text) FROM PUBLIC;

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
