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
 * two SQL-side events that end presences, by chain position within their
 * session, so a replay scans only its session's presence rows however
 * much other activity the log holds.
 */
CREATE INDEX activity_log_presence_idx ON presence.activity_log (session_id, chain_seq)
	WHERE activity_type IN ('user_joined', 'user_left', 'user_timeout', 'status_changed',
							'participant_removed', 'session_ended');

/*
 * Every change of a user's presence in a session up to (and at) upto: the
 * log's presence rows replayed in chain order as a per-user state machine
 * with the live server's rules (docs/sql-reference.md, "Presence at a
 * past moment").  A row is either presence-setting (a join makes present,
 * a leave, timeout, removal or the session's end absent) or a status
 * change, which counts only while present; a join while present (a race
 * of two workers or nodes) and a status the user already has change
 * nothing.  Written as window functions, not a loop, so a long log is
 * one sorted scan.
 */
CREATE FUNCTION presence._presence_changes(p_session uuid, upto timestamptz)
RETURNS TABLE (chain_seq bigint, at timestamptz, user_id uuid, status_before text, status_after text,
			   cause text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
	WITH logged AS MATERIALIZED (
		SELECT a.chain_seq, a.created_at, a.user_id, a.activity_type::text AS kind, a.details
		  FROM presence.activity_log a
		 WHERE a.session_id = p_session
		   AND a.activity_type IN ('user_joined', 'user_left', 'user_timeout', 'status_changed',
								   'participant_removed', 'session_ended')
		   AND a.created_at <= upto
		   AND (a.user_id IS NOT NULL OR a.activity_type = 'session_ended')
	), per_user AS (
		SELECT l.chain_seq, l.created_at, l.user_id, l.kind, l.details
		  FROM logged l
		 WHERE l.kind <> 'session_ended'
		UNION ALL
		SELECT l.chain_seq, l.created_at, u.user_id, l.kind, l.details
		  FROM logged l,
			   (SELECT DISTINCT l2.user_id FROM logged l2 WHERE l2.kind <> 'session_ended') u
		 WHERE l.kind = 'session_ended'
	), presence_runs AS (
		SELECT p.*,
			   count(*) FILTER (WHERE p.kind <> 'status_changed')
				   OVER (PARTITION BY p.user_id ORDER BY p.chain_seq) AS run
		  FROM per_user p
	), presence_after AS (
		SELECT r.*,
			   coalesce(first_value(r.kind = 'user_joined')
						   OVER (PARTITION BY r.user_id, r.run ORDER BY r.chain_seq)
						AND r.run > 0, false) AS present
		  FROM presence_runs r
	), presence_before AS (
		SELECT a.*,
			   coalesce(lag(a.present) OVER (PARTITION BY a.user_id ORDER BY a.chain_seq), false) AS was_present
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
		SELECT s.*, count(s.new_status) OVER (PARTITION BY s.user_id ORDER BY s.chain_seq) AS status_run
		  FROM status_set s
	), status_after AS (
		SELECT r.*,
			   CASE WHEN r.present
					THEN first_value(r.new_status) OVER (PARTITION BY r.user_id, r.status_run ORDER BY r.chain_seq)
					ELSE 'offline' END AS status
		  FROM status_runs r
	), changes AS (
		SELECT a.*,
			   coalesce(lag(a.status) OVER (PARTITION BY a.user_id ORDER BY a.chain_seq), 'offline') AS previous
		  FROM status_after a
	)
	SELECT c.chain_seq, c.created_at, c.user_id, c.previous, c.status,
		   CASE c.kind
			   WHEN 'user_joined' THEN
				   CASE WHEN c.details -> 'resumed' = 'true'::jsonb THEN 'resumed' ELSE 'join' END
			   WHEN 'user_left' THEN
				   CASE WHEN c.details ->> 'cause' = 'server_restart' THEN 'server_restart' ELSE 'leave' END
			   WHEN 'user_timeout' THEN 'timeout'
			   WHEN 'participant_removed' THEN 'removed'
			   WHEN 'session_ended' THEN 'session_ended'
			   ELSE CASE WHEN c.details -> 'automatic' = 'true'::jsonb THEN 'automatic_' || c.status
						 ELSE 'status' END
		   END
	  FROM changes c
	 WHERE c.previous <> c.status
$$;

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
			  FROM presence._presence_changes(s.id, present_at.at) c
			 ORDER BY c.user_id, c.chain_seq DESC) l
	  LEFT JOIN presence.users u ON u.id = l.user_id
	  LEFT JOIN presence.session_participants p ON p.session_id = s.id AND p.user_id = l.user_id
	 WHERE l.status_after <> 'offline'
	 ORDER BY u.username, l.user_id;
END $$;

/*
 * Every presence change after "from" up to and at "to", in chain order:
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
	  FROM presence._presence_changes(s.id, presence_timeline."to") c
	 WHERE c.at > presence_timeline."from"
	 ORDER BY c.chain_seq, c.user_id;
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
				   lead(c.at) OVER (PARTITION BY c.user_id ORDER BY c.chain_seq) AS ended
			  FROM presence._presence_changes(s.id, presence_intervals."to") c
			 WHERE c.status_before = 'offline' OR c.status_after = 'offline') i
	 WHERE i.arrival AND (i.ended IS NULL OR i.ended > presence_intervals."from")
	 ORDER BY 2, i.user_id;
END $$;

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
		presence.present_at(text, timestamptz),
		presence.presence_timeline(text, timestamptz, timestamptz),
		presence.presence_intervals(text, timestamptz, timestamptz),
		presence.stats() TO %s', role_name);
	EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA presence TO %s', role_name);
END $$;

REVOKE ALL ON FUNCTION presence._presence_changes(uuid, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION presence._require_window(timestamptz, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION presence.present_at(text, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION presence.presence_timeline(text, timestamptz, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION presence.presence_intervals(text, timestamptz, timestamptz) FROM PUBLIC;

-- == Signed audit checkpoints ==

-- == Permissions from the application's function ==
