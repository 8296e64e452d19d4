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

/*
 * The rows a replay reads: the presence changes the workers log and the
 * two SQL-side events that end presences, per session, user (NULL for
 * session_ended) and type in time order.  So a replay finds a session's
 * users by skipping through the index, and each user's state before a
 * window by a few probes of one user and type each, then reads each
 * user's rows in the window: its cost does not grow with the session's
 * history before the window, and other activity costs nothing.
 */
CREATE INDEX activity_log_presence_idx ON presence.activity_log (session_id, user_id, activity_type, created_at, chain_seq)
	WHERE activity_type IN ('user_joined', 'user_left', 'user_timeout', 'status_changed',
							'participant_removed', 'session_ended');

/*
 * Every change of a user's presence in a session up to (and at) upto,
 * exact from after since on: the log's presence rows replayed in the
 * order of (created_at, chain_seq) as a per-user state machine with the
 * live server's rules (docs/sql-reference.md, "Presence at a past
 * moment").  Time first: a worker writes its queue in batches, so its
 * rows can follow in the chain a row logged after them elsewhere, and
 * the state at a moment must be that of the rows logged until then.  A
 * row is either presence-setting (a join makes present, a leave,
 * timeout, removal or the session's end absent) or a status change,
 * which counts only while present; a join while present (a race of two
 * workers or nodes) and a status the user already has change nothing.
 *
 * Of the rows logged at or before since only those that decide the state
 * then are replayed, found by index probes whatever the length of the
 * presence: for a user present then, the join that began it (the first
 * after their last end, their own or the session's), and of the status
 * changes since, the last one to another status than the current one and
 * the first after it (or after the join), which entered the current
 * status.  The others change nothing: later joins nothing, and status
 * changes only within the runs these bound.  Then each user's rows
 * after since, and every session_ended (whoever it names) for each user.
 * Window functions, not a loop, do the rest.
 */
CREATE FUNCTION presence._presence_changes(p_session uuid, since timestamptz, upto timestamptz)
RETURNS TABLE (chain_seq bigint, at timestamptz, user_id uuid, status_before text, status_after text,
			   cause text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
	WITH RECURSIVE users AS (
		(SELECT a.user_id FROM presence.activity_log a
		  WHERE a.session_id = p_session AND a.user_id IS NOT NULL
			AND a.activity_type IN ('user_joined', 'user_left', 'user_timeout', 'status_changed',
									'participant_removed', 'session_ended')
		  ORDER BY a.user_id LIMIT 1)
		UNION ALL
		SELECT (SELECT a.user_id FROM presence.activity_log a
				 WHERE a.session_id = p_session AND a.user_id > u.user_id
				   AND a.activity_type IN ('user_joined', 'user_left', 'user_timeout', 'status_changed',
										   'participant_removed', 'session_ended')
				 ORDER BY a.user_id LIMIT 1)
		  FROM users u WHERE u.user_id IS NOT NULL
	), known_users AS MATERIALIZED (
		SELECT u.user_id FROM users u WHERE u.user_id IS NOT NULL
	), session_ends AS MATERIALIZED (
		-- OFFSET 0 keeps this a probe per user, not a scan of the session
		SELECT e.chain_seq, e.created_at
		  FROM known_users u,
			   LATERAL (SELECT a.chain_seq, a.created_at FROM presence.activity_log a
						 WHERE a.session_id = p_session AND a.user_id = u.user_id AND a.activity_type = 'session_ended'
						   AND a.created_at <= upto
						OFFSET 0) e
		UNION ALL
		SELECT a.chain_seq, a.created_at
		  FROM presence.activity_log a
		 WHERE a.session_id = p_session AND a.user_id IS NULL AND a.activity_type = 'session_ended'
		   AND a.created_at <= upto
	), last_session_end AS MATERIALIZED (
		SELECT e.created_at, e.chain_seq FROM session_ends e
		 WHERE e.created_at <= since
		 ORDER BY e.created_at DESC, e.chain_seq DESC LIMIT 1
	), arrivals AS MATERIALIZED (
		SELECT u.user_id, j.chain_seq, j.created_at
		  FROM known_users u
		  LEFT JOIN LATERAL (
			SELECT e.created_at, e.chain_seq
			  FROM (SELECT o.created_at, o.chain_seq
					  FROM unnest(ARRAY['user_left', 'user_timeout', 'participant_removed']) k,
						   LATERAL (SELECT a.created_at, a.chain_seq FROM presence.activity_log a
									 WHERE a.session_id = p_session AND a.user_id = u.user_id AND a.activity_type = k
									   AND a.activity_type IN ('user_left', 'user_timeout', 'participant_removed')
									   AND a.created_at <= since
									 ORDER BY a.created_at DESC, a.chain_seq DESC LIMIT 1) o
					UNION ALL
					SELECT l.created_at, l.chain_seq FROM last_session_end l) e
			 ORDER BY e.created_at DESC, e.chain_seq DESC LIMIT 1) e ON true
		  JOIN LATERAL (
			SELECT a.chain_seq, a.created_at FROM presence.activity_log a
			 WHERE a.session_id = p_session AND a.user_id = u.user_id AND a.activity_type = 'user_joined'
			   AND (a.created_at, a.chain_seq) > (coalesce(e.created_at, '-infinity'), coalesce(e.chain_seq, 0))
			   AND a.created_at <= since
			 ORDER BY a.created_at, a.chain_seq LIMIT 1) j ON true
	), status_changes AS NOT MATERIALIZED (
		SELECT a.user_id, a.chain_seq, a.created_at, a.details ->> 'status' AS status
		  FROM presence.activity_log a
		 WHERE a.session_id = p_session AND a.activity_type = 'status_changed'
		   AND a.details ->> 'status' IN ('online', 'away')
	), current_status AS MATERIALIZED (
		SELECT r.user_id, r.chain_seq AS joined_seq, r.created_at AS joined_at, l.chain_seq, l.created_at, l.status
		  FROM arrivals r,
			   LATERAL (SELECT c.chain_seq, c.created_at, c.status FROM status_changes c
						 WHERE c.user_id = r.user_id AND (c.created_at, c.chain_seq) > (r.created_at, r.chain_seq)
						   AND c.created_at <= since
						 ORDER BY c.created_at DESC, c.chain_seq DESC LIMIT 1) l
	), other_status AS MATERIALIZED (
		SELECT s.user_id, d.chain_seq, d.created_at
		  FROM current_status s,
			   LATERAL (SELECT c.chain_seq, c.created_at FROM status_changes c
						 WHERE c.user_id = s.user_id AND (c.created_at, c.chain_seq) > (s.joined_at, s.joined_seq)
						   AND (c.created_at, c.chain_seq) < (s.created_at, s.chain_seq) AND c.status <> s.status
						 ORDER BY c.created_at DESC, c.chain_seq DESC LIMIT 1) d
	), entered AS (
		SELECT f.chain_seq
		  FROM current_status s
		  LEFT JOIN other_status d ON d.user_id = s.user_id,
			   LATERAL (SELECT c.chain_seq FROM status_changes c
						 WHERE c.user_id = s.user_id
						   AND (c.created_at, c.chain_seq) > (coalesce(d.created_at, s.joined_at),
															  coalesce(d.chain_seq, s.joined_seq))
						   AND (c.created_at, c.chain_seq) <= (s.created_at, s.chain_seq)
						 ORDER BY c.created_at, c.chain_seq LIMIT 1) f
	), with_details AS (
		SELECT a.chain_seq, a.created_at, a.user_id, a.activity_type::text AS kind, a.details
		  FROM presence.activity_log a
		 WHERE a.session_id = p_session
		   AND a.chain_seq IN (SELECT r.chain_seq FROM arrivals r UNION ALL SELECT d.chain_seq FROM other_status d
							   UNION ALL SELECT f.chain_seq FROM entered f)
		UNION ALL
		SELECT a.chain_seq, a.created_at, a.user_id, a.activity_type::text, a.details
		  FROM known_users u, presence.activity_log a
		 WHERE a.session_id = p_session AND a.user_id = u.user_id
		   AND a.activity_type IN ('user_joined', 'user_left', 'user_timeout', 'status_changed',
								   'participant_removed')
		   AND a.created_at > since AND a.created_at <= upto
		UNION ALL
		SELECT e.chain_seq, e.created_at, u.user_id, 'session_ended', NULL
		  FROM session_ends e, known_users u
		 WHERE e.created_at > since
	), presence_runs AS (
		SELECT p.*,
			   count(*) FILTER (WHERE p.kind <> 'status_changed')
				   OVER (PARTITION BY p.user_id ORDER BY p.created_at, p.chain_seq) AS run
		  FROM with_details p
	), presence_after AS (
		SELECT r.*,
			   coalesce(first_value(r.kind = 'user_joined')
						   OVER (PARTITION BY r.user_id, r.run ORDER BY r.created_at, r.chain_seq)
						AND r.run > 0, false) AS present
		  FROM presence_runs r
	), presence_before AS (
		SELECT a.*,
			   coalesce(lag(a.present) OVER (PARTITION BY a.user_id ORDER BY a.created_at, a.chain_seq), false) AS was_present
		  FROM presence_after a
	), status_set AS (
		SELECT b.*,
			   CASE WHEN b.kind = 'user_joined' AND NOT b.was_present
						THEN CASE WHEN b.details ->> 'status' IN ('online', 'away') THEN b.details ->> 'status'
								  ELSE 'online' END
					WHEN b.kind = 'status_changed' AND b.was_present AND b.details ->> 'status' IN ('online', 'away')
						THEN b.details ->> 'status' END AS new_status
		  FROM presence_before b
	), status_runs AS (
		SELECT s.*, count(s.new_status) OVER (PARTITION BY s.user_id ORDER BY s.created_at, s.chain_seq) AS status_run
		  FROM status_set s
	), status_after AS (
		SELECT r.*,
			   CASE WHEN r.present
					THEN first_value(r.new_status) OVER (PARTITION BY r.user_id, r.status_run ORDER BY r.created_at, r.chain_seq)
					ELSE 'offline' END AS status
		  FROM status_runs r
	), changes AS (
		SELECT a.*,
			   coalesce(lag(a.status) OVER (PARTITION BY a.user_id ORDER BY a.created_at, a.chain_seq), 'offline') AS previous
		  FROM status_after a
	)
	SELECT c.chain_seq, c.created_at, c.user_id, c.previous, c.status,
		   CASE c.kind
			   WHEN 'user_joined' THEN
				   CASE WHEN c.details -> 'resumed' = 'true'::jsonb THEN 'resumed' ELSE 'join' END
			   WHEN 'user_left' THEN
				   CASE WHEN c.details ->> 'cause' IN ('server_restart', 'removed', 'permission_revoked')
						THEN c.details ->> 'cause' ELSE 'leave' END
			   WHEN 'user_timeout' THEN 'timeout'
			   WHEN 'participant_removed' THEN 'removed'
			   WHEN 'session_ended' THEN 'session_ended'
			   ELSE CASE WHEN c.details -> 'automatic' = 'true'::jsonb THEN 'automatic_' || c.status
						 ELSE 'status' END
		   END
	  FROM changes c
	 WHERE c.previous <> c.status
$$;

/*
 * For a ws worker starting without Redis: its predecessor's presences
 * ended with it (a crash, kill -9, an immediate shutdown), so every
 * presence the log shows open in a session that has not ended, begun by
 * a join of that worker ("worker" in the user_joined details), gets a
 * user_left with cause server_restart now.  Not one that another worker
 * (another node: without Redis a node runs one) also logged a join in
 * since: nodes without Redis do not see each other's users, so that
 * node may hold the user still, and its leave ends the presence when
 * the user goes.  Returns how many.
 */
CREATE FUNCTION presence._close_presences_of_worker(worker text) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	session_ids text[];
	user_ids uuid[];
BEGIN
	SELECT array_agg(s.session_id), array_agg(o.user_id) INTO session_ids, user_ids
	  FROM presence.collaboration_sessions s,
		   LATERAL (SELECT DISTINCT ON (c.user_id) c.user_id, c.status_after,
						   first_value(c.chain_seq) OVER opening AS opened_seq,
						   first_value(c.at) OVER opening AS opened_at
					  FROM presence._presence_changes(s.id, 'infinity', 'infinity') c
					WINDOW opening AS (PARTITION BY c.user_id
									   ORDER BY c.status_before = 'offline' DESC, c.at DESC, c.chain_seq DESC)
					 ORDER BY c.user_id, c.at DESC, c.chain_seq DESC) o,
		   presence.activity_log a
	 WHERE s.status IN ('active', 'inactive') AND o.status_after <> 'offline'
	   AND a.session_id = s.id AND a.chain_seq = o.opened_seq AND a.details ->> 'worker' = worker
	   AND NOT EXISTS (SELECT FROM presence.activity_log j
						WHERE j.session_id = s.id AND j.user_id = o.user_id AND j.activity_type = 'user_joined'
						  AND (j.created_at, j.chain_seq) > (o.opened_at, o.opened_seq)
						  AND j.details ->> 'worker' IS DISTINCT FROM worker);
	IF session_ids IS NULL THEN
		RETURN 0;
	END IF;
	PERFORM presence.log_activity_batch(session_ids, user_ids,
										array_fill('user_left'::text, ARRAY[cardinality(session_ids)]),
										array_fill(jsonb_build_object('cause', 'server_restart'),
												   ARRAY[cardinality(session_ids)]));
	RETURN cardinality(session_ids);
END $$;

/* The window a timeline or interval query covers, checked as every argument is. */
CREATE FUNCTION presence._require_window(window_from timestamptz, window_to timestamptz) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	PERFORM presence._require(window_from, 'from');
	PERFORM presence._require(window_to, 'to');
	IF window_from > window_to THEN
		RAISE EXCEPTION 'presence: "from" (%) is after "to" (%)', window_from, window_to
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
END $$;

/*
 * Who was present at the instant at, after every presence row logged at
 * or before it; since is when the user entered the status they had then
 * (their join, or their last status change).
 */
CREATE FUNCTION presence.present_at(session_id text, at timestamptz)
RETURNS TABLE (user_id uuid, username text, role text, status text, since timestamptz)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	s presence.collaboration_sessions := presence._session(session_id);
BEGIN
	PERFORM presence._require(at, 'at');
	RETURN QUERY
	SELECT l.user_id, u.username, p.role, l.status_after, l.at
	  FROM (SELECT DISTINCT ON (c.user_id) c.user_id, c.status_after, c.at
			  FROM presence._presence_changes(s.id, present_at.at, present_at.at) c
			 ORDER BY c.user_id, c.at DESC, c.chain_seq DESC) l
	  LEFT JOIN presence.users u ON u.id = l.user_id
	  LEFT JOIN presence.session_participants p ON p.session_id = s.id AND p.user_id = l.user_id
	 WHERE l.status_after <> 'offline'
	 ORDER BY u.username, l.user_id;
END $$;

/*
 * Every presence change after "from" up to and at "to", in the replay's
 * order (time, then chain_seq):
 * present_at("from") with these applied is present_at("to").
 */
CREATE FUNCTION presence.presence_timeline(session_id text, "from" timestamptz, "to" timestamptz)
RETURNS TABLE (at timestamptz, user_id uuid, status_before text, status_after text, cause text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	s presence.collaboration_sessions := presence._session(session_id);
BEGIN
	PERFORM presence._require_window("from", "to");
	RETURN QUERY
	SELECT c.at, c.user_id, c.status_before, c.status_after, c.cause
	  FROM presence._presence_changes(s.id, presence_timeline."from", presence_timeline."to") c
	 WHERE c.at > presence_timeline."from"
	 ORDER BY c.at, c.chain_seq, c.user_id;
END $$;

/*
 * Per user, the intervals present (online or away) within ["from", "to"]:
 * an interval begun before "from" starts at "from", one still open at
 * "to" ends at "to", so present_to - present_from sums to the time there.
 */
CREATE FUNCTION presence.presence_intervals(session_id text, "from" timestamptz, "to" timestamptz)
RETURNS TABLE (user_id uuid, present_from timestamptz, present_to timestamptz)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	s presence.collaboration_sessions := presence._session(session_id);
BEGIN
	PERFORM presence._require_window("from", "to");
	RETURN QUERY
	SELECT i.user_id, greatest(i.began, presence_intervals."from"), coalesce(i.ended, presence_intervals."to")
	  FROM (SELECT c.user_id, c.at AS began, c.status_before = 'offline' AS arrival,
				   lead(c.at) OVER (PARTITION BY c.user_id ORDER BY c.at, c.chain_seq) AS ended
			  FROM presence._presence_changes(s.id, presence_intervals."from", presence_intervals."to") c
			 WHERE c.status_before = 'offline' OR c.status_after = 'offline') i
	 WHERE i.arrival AND (i.ended IS NULL OR i.ended > presence_intervals."from")
	 ORDER BY 2, i.user_id;
END $$;

REVOKE ALL ON FUNCTION presence._presence_changes(uuid, timestamptz, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION presence._require_window(timestamptz, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION presence._close_presences_of_worker(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION presence.present_at(text, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION presence.presence_timeline(text, timestamptz, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION presence.presence_intervals(text, timestamptz, timestamptz) FROM PUBLIC;

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

/* Auditors can replay presence, read the checkpoints and save a fresh one. */
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
		presence.present_at(text, timestamptz),
		presence.presence_timeline(text, timestamptz, timestamptz),
		presence.presence_intervals(text, timestamptz, timestamptz),
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

-- == Lock order ==

/*
 * The functions that change a session (add_participant, remove_participant,
 * end_session) lock its row FOR NO KEY UPDATE, not FOR UPDATE: they never
 * change its key, and FOR UPDATE also blocks the foreign-key check
 * (FOR KEY SHARE) of every activity row, which log_activity makes while
 * it holds the chain lock these functions take next, a deadlock.  Two of
 * them still wait for each other, as before.
 */
CREATE OR REPLACE FUNCTION presence._session(p_session_id text, lock_row boolean DEFAULT false)
RETURNS presence.collaboration_sessions
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	s presence.collaboration_sessions;
BEGIN
	PERFORM presence._require(p_session_id, 'session_id');
	IF lock_row THEN
		SELECT * INTO s FROM presence.collaboration_sessions WHERE session_id = p_session_id FOR NO KEY UPDATE;
	ELSE
		SELECT * INTO s FROM presence.collaboration_sessions WHERE session_id = p_session_id;
	END IF;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'presence: session "%" does not exist', left(p_session_id, 128)
			USING ERRCODE = 'no_data_found';
	END IF;
	RETURN s;
END $$;
