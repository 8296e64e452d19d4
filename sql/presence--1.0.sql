/* presence 1.0: schema and SQL API (see docs/sql-reference.md) */

\echo Use "CREATE EXTENSION presence" to load this file. \quit

/*
 * The schema is the extension's own object, so DROP EXTENSION removes it
 * with everything in it, and CREATE EXTENSION refuses to move into a
 * presence schema someone else made (and could have planted objects in).
 * The extension itself is registered in pg_catalog (presence.control).
 */
CREATE SCHEMA presence;

/*
 * Argument checks (C, src/sql_checks.c).  Each raises the documented
 * SQLSTATE: 22004 for a NULL, 22023 for a malformed value, 22001 for an
 * overlong string, 54000 for an oversized JSON document.
 */

CREATE FUNCTION presence._require(value anyelement, argname text) RETURNS anyelement
	AS 'MODULE_PATHNAME', 'presence_require' LANGUAGE C IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION presence._require_length(value text, argname text, max_length int) RETURNS text
	AS 'MODULE_PATHNAME', 'presence_require_length' LANGUAGE C IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION presence._require_object(value jsonb, argname text, max_bytes int DEFAULT 65536) RETURNS jsonb
	AS 'MODULE_PATHNAME', 'presence_require_object' LANGUAGE C IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION presence._require_activity_type(value text) RETURNS text
	AS 'MODULE_PATHNAME', 'presence_require_activity_type' LANGUAGE C IMMUTABLE PARALLEL SAFE;
/* The activity type rule alone, for the activity_log CHECK constraint. */
CREATE FUNCTION presence._valid_activity_type(value text) RETURNS boolean
	AS 'MODULE_PATHNAME', 'presence_valid_activity_type' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

/*
 * Tables
 */

CREATE TABLE presence.users (
	id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
	username text NOT NULL UNIQUE
		CONSTRAINT users_username_length CHECK (length(username) BETWEEN 1 AND 255),
	created_at timestamptz NOT NULL DEFAULT now()
);

/*
 * session_id is what clients use; it becomes part of Redis key names, so it
 * cannot contain ':' and cannot be one of the key-space words the layout
 * itself uses.
 */
CREATE TABLE presence.collaboration_sessions (
	id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
	session_id text NOT NULL UNIQUE
		CONSTRAINT sessions_session_id_format
		CHECK (session_id ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$'
			   AND session_id NOT IN ('session', 'conns', 'updates')),
	operation_id text CONSTRAINT sessions_operation_id_length CHECK (length(operation_id) <= 255),
	owner_id uuid NOT NULL REFERENCES presence.users (id),
	status text NOT NULL DEFAULT 'active'
		CONSTRAINT sessions_status_check
		CHECK (status IN ('active', 'inactive', 'completed', 'failed')),
	target varchar(500),
	objective text CONSTRAINT sessions_objective_length CHECK (length(objective) <= 10000),
	start_time timestamptz NOT NULL DEFAULT now(),
	end_time timestamptz,
	last_activity_at timestamptz NOT NULL DEFAULT now(),
	metadata jsonb NOT NULL DEFAULT '{}'
		CONSTRAINT sessions_metadata_object CHECK (jsonb_typeof(metadata) = 'object')
);

CREATE INDEX collaboration_sessions_active_idx
	ON presence.collaboration_sessions (last_activity_at) WHERE status = 'active';

/* session_id defaults to id::text; a column default cannot see another column. */
CREATE FUNCTION presence._session_id_default() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	NEW.session_id := coalesce(NEW.session_id, NEW.id::text);
	RETURN NEW;
END $$;

CREATE TRIGGER session_id_default BEFORE INSERT ON presence.collaboration_sessions
	FOR EACH ROW EXECUTE FUNCTION presence._session_id_default();

CREATE TABLE presence.session_participants (
	session_id uuid NOT NULL REFERENCES presence.collaboration_sessions (id),
	user_id uuid NOT NULL REFERENCES presence.users (id),
	role text NOT NULL DEFAULT 'viewer'
		CONSTRAINT participants_role_check CHECK (role IN ('viewer', 'commenter', 'operator')),
	joined_at timestamptz NOT NULL DEFAULT now(),
	left_at timestamptz,
	PRIMARY KEY (session_id, user_id)
);

CREATE INDEX session_participants_current_idx
	ON presence.session_participants (session_id) WHERE left_at IS NULL;
CREATE INDEX session_participants_user_idx ON presence.session_participants (user_id);

/*
 * The activity log.  chain_seq, prev_hash and row_hash are set by the
 * activity_chain trigger and form a SHA-256 hash chain per session
 * (docs/sql-reference.md, "The audit chain").
 */
/* A random UUID like gen_random_uuid(), cheaper per row (src/audit_chain.c). */
CREATE FUNCTION presence._activity_id() RETURNS uuid
	AS 'MODULE_PATHNAME', 'presence_activity_id' LANGUAGE C VOLATILE PARALLEL SAFE;

CREATE TABLE presence.activity_log (
	id uuid PRIMARY KEY DEFAULT presence._activity_id(),
	session_id uuid NOT NULL REFERENCES presence.collaboration_sessions (id),
	user_id uuid REFERENCES presence.users (id),
	activity_type varchar(100) NOT NULL
		CONSTRAINT activity_type_format CHECK (presence._valid_activity_type(activity_type)),
	details jsonb NOT NULL DEFAULT '{}'
		CONSTRAINT activity_details_object CHECK (jsonb_typeof(details) = 'object'),
	ip_address inet,
	user_agent text CONSTRAINT activity_user_agent_length CHECK (length(user_agent) <= 512),
	created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
	chain_seq bigint NOT NULL,
	prev_hash bytea NOT NULL,
	row_hash bytea NOT NULL,
	CONSTRAINT activity_log_chain_unique UNIQUE (session_id, chain_seq)
);

CREATE INDEX activity_log_session_created_idx
	ON presence.activity_log (session_id, created_at DESC);
CREATE INDEX activity_log_created_idx ON presence.activity_log (created_at);

/*
 * Where purge_activity cut each session's chain: the last purged row's
 * sequence number and hash, so the remaining rows still verify.
 */
CREATE TABLE presence.audit_chain_anchors (
	session_id uuid PRIMARY KEY REFERENCES presence.collaboration_sessions (id),
	chain_seq bigint NOT NULL,
	row_hash bytea NOT NULL,
	rows_purged bigint NOT NULL,
	purged_at timestamptz NOT NULL DEFAULT now()
);

SELECT pg_catalog.pg_extension_config_dump('presence.users', '');
SELECT pg_catalog.pg_extension_config_dump('presence.collaboration_sessions', '');
SELECT pg_catalog.pg_extension_config_dump('presence.session_participants', '');
SELECT pg_catalog.pg_extension_config_dump('presence.activity_log', '');
SELECT pg_catalog.pg_extension_config_dump('presence.audit_chain_anchors', '');

/*
 * Append-only guard and hash chain (C)
 */

CREATE FUNCTION presence._activity_chain() RETURNS trigger
	AS 'MODULE_PATHNAME', 'presence_activity_chain' LANGUAGE C;
CREATE FUNCTION presence._activity_guard() RETURNS trigger
	AS 'MODULE_PATHNAME', 'presence_activity_guard' LANGUAGE C;

CREATE TRIGGER activity_chain BEFORE INSERT ON presence.activity_log
	FOR EACH ROW EXECUTE FUNCTION presence._activity_chain();
CREATE TRIGGER activity_append_only BEFORE UPDATE OR DELETE ON presence.activity_log
	FOR EACH ROW EXECUTE FUNCTION presence._activity_guard();
CREATE TRIGGER activity_no_truncate BEFORE TRUNCATE ON presence.activity_log
	FOR EACH STATEMENT EXECUTE FUNCTION presence._activity_guard();
CREATE TRIGGER anchors_append_only BEFORE UPDATE OR DELETE ON presence.audit_chain_anchors
	FOR EACH ROW EXECUTE FUNCTION presence._activity_guard();
CREATE TRIGGER anchors_no_truncate BEFORE TRUNCATE ON presence.audit_chain_anchors
	FOR EACH STATEMENT EXECUTE FUNCTION presence._activity_guard();

/* An integer presence.* setting; being C, it loads the library that defines it. */
CREATE FUNCTION presence._config_int(name text) RETURNS integer
	AS 'MODULE_PATHNAME', 'presence_config_int' LANGUAGE C STABLE STRICT;

/*
 * Internal helpers shared by the API functions.  Each raises P0002
 * (no_data_found) for a session or user that does not exist.
 */

/* The session row for a client-facing session id, or an error naming it. */
CREATE FUNCTION presence._session(p_session_id text, lock_row boolean DEFAULT false)
RETURNS presence.collaboration_sessions
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	s presence.collaboration_sessions;
BEGIN
	PERFORM presence._require(p_session_id, 'session_id');
	IF lock_row THEN
		SELECT * INTO s FROM presence.collaboration_sessions WHERE session_id = p_session_id FOR UPDATE;
	ELSE
		SELECT * INTO s FROM presence.collaboration_sessions WHERE session_id = p_session_id;
	END IF;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'presence: session "%" does not exist', left(p_session_id, 128)
			USING ERRCODE = 'no_data_found';
	END IF;
	RETURN s;
END $$;

CREATE FUNCTION presence._require_user(p_user_id uuid) RETURNS uuid
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	PERFORM presence._require(p_user_id, 'user_id');
	PERFORM 1 FROM presence.users WHERE id = p_user_id;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'presence: user % does not exist', p_user_id USING ERRCODE = 'no_data_found';
	END IF;
	RETURN p_user_id;
END $$;

/*
 * Writes one chained activity row, for the API functions that log what
 * they did (log_activity and log_activity_batch have their own INSERT,
 * shaped for their hot paths).  No SET search_path: the body names only a
 * qualified table, and the setting would cost more than the rest.
 */
CREATE FUNCTION presence._append_activity(p_session uuid, p_user uuid, p_type text, p_details jsonb)
RETURNS uuid
LANGUAGE sql AS $$
	INSERT INTO presence.activity_log (session_id, user_id, activity_type, details)
	VALUES (p_session, p_user, p_type, p_details)
	RETURNING id
$$;

/*
 * The user a valid token names, added when presence.auto_create_users is
 * on (the workers call this at authentication).  A display name already
 * taken by another user gets the id's first block appended.
 */
CREATE FUNCTION presence._ensure_user(p_id uuid, p_name text) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	result text;
BEGIN
	SELECT username INTO result FROM presence.users WHERE id = p_id;
	IF FOUND THEN
		RETURN result;
	END IF;
	INSERT INTO presence.users (id, username)
	VALUES (p_id, CASE WHEN EXISTS (SELECT 1 FROM presence.users WHERE username = p_name)
					   THEN left(p_name, 240) || ' #' || left(p_id::text, 8) ELSE p_name END)
	ON CONFLICT DO NOTHING
	RETURNING username INTO result;
	IF result IS NULL THEN
		SELECT username INTO result FROM presence.users WHERE id = p_id;
	END IF;
	RETURN result;
END $$;

/*
 * Sessions and participants
 */

CREATE FUNCTION presence.create_session(owner_id uuid, operation_id text DEFAULT NULL,
										metadata jsonb DEFAULT '{}', target text DEFAULT NULL,
										objective text DEFAULT NULL, session_id text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	s presence.collaboration_sessions;
BEGIN
	PERFORM presence._require_user(owner_id);
	PERFORM presence._require_object(metadata, 'metadata');
	PERFORM presence._require_length(operation_id, 'operation_id', 255);
	PERFORM presence._require_length(target, 'target', 500);
	PERFORM presence._require_length(objective, 'objective', 10000);
	IF session_id IS NOT NULL AND (session_id !~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$'
								   OR session_id IN ('session', 'conns', 'updates')) THEN
		RAISE EXCEPTION 'presence: invalid session_id "%"', left(session_id, 128)
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'A session id is 1 to 128 of [A-Za-z0-9_.-], starting with a letter or digit.';
	END IF;
	BEGIN
		INSERT INTO presence.collaboration_sessions AS cs (session_id, operation_id, owner_id, target, objective, metadata)
		VALUES (create_session.session_id, create_session.operation_id, create_session.owner_id,
				create_session.target, create_session.objective, create_session.metadata)
		RETURNING * INTO s;
	EXCEPTION WHEN unique_violation THEN
		RAISE EXCEPTION 'presence: session "%" already exists', session_id USING ERRCODE = 'unique_violation';
	END;
	INSERT INTO presence.session_participants (session_id, user_id, role)
	VALUES (s.id, s.owner_id, 'operator');
	PERFORM presence._append_activity(s.id, s.owner_id, 'session_created',
		jsonb_strip_nulls(jsonb_build_object('operation_id', s.operation_id, 'target', s.target,
											 'objective', s.objective, 'metadata', s.metadata)));
	RETURN s.session_id;
END $$;

/*
 * create_session, answered the way a WebSocket client sees it (the
 * session_created payload), in one statement: the workers call it, over
 * libpq from a standby.
 */
CREATE FUNCTION presence._create_session_described(owner_id uuid, operation_id text, metadata jsonb,
												   target text, objective text, session_id text)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	created text := presence.create_session(owner_id, operation_id, coalesce(metadata, '{}'),
											target, objective, session_id);
BEGIN
	RETURN (SELECT json_build_object('sessionId', cs.session_id, 'operationId', cs.operation_id,
									 'ownerId', cs.owner_id, 'status', cs.status, 'target', cs.target,
									 'objective', cs.objective, 'metadata', cs.metadata,
									 'startTime', (extract(epoch FROM cs.start_time) * 1000)::bigint)::text
			  FROM presence.collaboration_sessions cs WHERE cs.session_id = created);
END $$;

CREATE FUNCTION presence.add_participant(session_id text, user_id uuid, role text DEFAULT 'viewer')
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	s presence.collaboration_sessions;
	previous_role text;
	current_count bigint;
	max_allowed int := presence._config_int('presence.max_participants');
BEGIN
	PERFORM presence._require(role, 'role');
	IF role NOT IN ('viewer', 'commenter', 'operator') THEN
		RAISE EXCEPTION 'presence: invalid role "%"', left(role, 64)
			USING ERRCODE = 'invalid_parameter_value', HINT = 'Roles are viewer, commenter and operator.';
	END IF;
	s := presence._session(session_id, true);
	PERFORM presence._require_user(user_id);
	IF s.status IN ('completed', 'failed') THEN
		RAISE EXCEPTION 'presence: session "%" has ended', s.session_id
			USING ERRCODE = 'object_not_in_prerequisite_state';
	END IF;
	SELECT p.role INTO previous_role FROM presence.session_participants p
	 WHERE p.session_id = s.id AND p.user_id = add_participant.user_id AND p.left_at IS NULL;
	IF previous_role IS NULL THEN
		SELECT count(*) INTO current_count FROM presence.session_participants p
		 WHERE p.session_id = s.id AND p.left_at IS NULL;
		IF current_count >= max_allowed THEN
			RAISE EXCEPTION 'presence: session "%" already has % participants', s.session_id, current_count
				USING ERRCODE = 'configuration_limit_exceeded',
					  HINT = 'presence.max_participants limits the participants of one session.';
		END IF;
	ELSIF previous_role = role THEN
		RETURN;
	END IF;
	INSERT INTO presence.session_participants AS p (session_id, user_id, role)
	VALUES (s.id, add_participant.user_id, add_participant.role)
	ON CONFLICT ON CONSTRAINT session_participants_pkey DO UPDATE
		SET role = EXCLUDED.role,
			joined_at = CASE WHEN p.left_at IS NULL THEN p.joined_at ELSE now() END,
			left_at = NULL;
	PERFORM presence._append_activity(s.id, user_id, 'participant_added',
		jsonb_strip_nulls(jsonb_build_object('role', role, 'previous_role', previous_role)));
	PERFORM presence._notify_workers('participant_changed', s.session_id, user_id, to_jsonb(role));
END $$;

CREATE FUNCTION presence.remove_participant(session_id text, user_id uuid) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	s presence.collaboration_sessions;
BEGIN
	s := presence._session(session_id, true);
	PERFORM presence._require(user_id, 'user_id');
	IF user_id = s.owner_id THEN
		RAISE EXCEPTION 'presence: the owner of session "%" cannot be removed', s.session_id
			USING ERRCODE = 'object_not_in_prerequisite_state';
	END IF;
	UPDATE presence.session_participants p SET left_at = now()
	 WHERE p.session_id = s.id AND p.user_id = remove_participant.user_id AND p.left_at IS NULL;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'presence: user % is not a participant of session "%"', user_id, s.session_id
			USING ERRCODE = 'no_data_found';
	END IF;
	PERFORM presence._append_activity(s.id, user_id, 'participant_removed', '{}');
	PERFORM presence._notify_workers('participant_removed', s.session_id, user_id, NULL);
END $$;

CREATE FUNCTION presence.participants(session_id text)
RETURNS TABLE (user_id uuid, username text, role text, joined_at timestamptz)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	s presence.collaboration_sessions := presence._session(session_id);
BEGIN
	RETURN QUERY
	SELECT p.user_id, u.username, p.role, p.joined_at
	  FROM presence.session_participants p JOIN presence.users u ON u.id = p.user_id
	 WHERE p.session_id = s.id AND p.left_at IS NULL
	 ORDER BY p.joined_at, u.username;
END $$;

/*
 * The permission matrix.  The owner holds every permission; other users
 * hold what their current role grants.
 */
CREATE FUNCTION presence.has_permission(session_id text, user_id uuid, action text) RETURNS boolean
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

CREATE FUNCTION presence.end_session(session_id text, status text DEFAULT 'completed') RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	s presence.collaboration_sessions;
BEGIN
	PERFORM presence._require(status, 'status');
	IF status NOT IN ('completed', 'failed') THEN
		RAISE EXCEPTION 'presence: invalid end status "%"', left(status, 64)
			USING ERRCODE = 'invalid_parameter_value', HINT = 'A session ends as completed or failed.';
	END IF;
	s := presence._session(session_id, true);
	IF s.status IN ('completed', 'failed') THEN
		RAISE EXCEPTION 'presence: session "%" has already ended (%)', s.session_id, s.status
			USING ERRCODE = 'object_not_in_prerequisite_state';
	END IF;
	UPDATE presence.collaboration_sessions cs
	   SET status = end_session.status, end_time = now(), last_activity_at = now()
	 WHERE cs.id = s.id;
	PERFORM presence._append_activity(s.id, NULL, 'session_ended', jsonb_build_object('status', status));
	PERFORM presence._notify_workers('session_ended', s.session_id, NULL, to_jsonb(status));
END $$;

/*
 * Activity and audit
 */

/*
 * One activity row, in one statement: the INSERT itself finds the session
 * and checks the user, so the hot path of every SQL writer runs a single
 * query.  When it inserts nothing, the session or the user is missing and
 * the helpers raise saying which; if both exist by then (created
 * concurrently since the INSERT's snapshot), the INSERT is tried again.
 */
CREATE FUNCTION presence.log_activity(session_id text, user_id uuid, activity_type text,
									  details jsonb DEFAULT '{}')
RETURNS uuid
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	result uuid;
BEGIN
	PERFORM presence._require(session_id, 'session_id');
	PERFORM presence._require_activity_type(activity_type);
	PERFORM presence._require_object(details, 'details');
	LOOP
		INSERT INTO presence.activity_log (session_id, user_id, activity_type, details)
		SELECT cs.id, log_activity.user_id, log_activity.activity_type, log_activity.details
		  FROM presence.collaboration_sessions cs
		 WHERE cs.session_id = log_activity.session_id
		   AND (log_activity.user_id IS NULL
				OR EXISTS (SELECT 1 FROM presence.users u WHERE u.id = log_activity.user_id))
		RETURNING id INTO result;
		IF FOUND THEN
			RETURN result;
		END IF;
		PERFORM presence._session(session_id);
		IF user_id IS NOT NULL THEN
			PERFORM presence._require_user(user_id);
		END IF;
	END LOOP;
END $$;

/*
 * The multi-row path: one statement for many rows, as the workers write
 * their queue.  Arrays are parallel; details, ip_addresses, user_agents and
 * created_ats may be NULL (defaults) or have one element per row, and
 * their elements may be NULL.  _check_activity_rows checks every row as
 * log_activity would (the first bad row raises, nothing is written) and
 * resolves the session ids, so the INSERT reads the arrays in order
 * without a join: row i of the arrays is link i of the chain and id i of
 * the result.
 */
CREATE FUNCTION presence._check_activity_rows(session_ids text[], user_ids uuid[], activity_types text[],
											  details jsonb[], ip_addresses inet[], user_agents text[],
											  created_ats timestamptz[])
RETURNS uuid[]
	AS 'MODULE_PATHNAME', 'presence_check_activity_rows' LANGUAGE C STABLE;

CREATE FUNCTION presence.log_activity_batch(session_ids text[], user_ids uuid[], activity_types text[],
											details jsonb[] DEFAULT NULL, ip_addresses inet[] DEFAULT NULL,
											user_agents text[] DEFAULT NULL, created_ats timestamptz[] DEFAULT NULL)
RETURNS SETOF uuid
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	session_uuids uuid[] := presence._check_activity_rows(session_ids, user_ids, activity_types, details,
														  ip_addresses, user_agents, created_ats);
BEGIN
	RETURN QUERY
	INSERT INTO presence.activity_log (session_id, user_id, activity_type, details, ip_address, user_agent, created_at)
	SELECT r.sid, r.uid, r.typ, coalesce(r.det, '{}'), r.ip, r.ua, coalesce(r.at, clock_timestamp())
	  FROM unnest(session_uuids, user_ids, activity_types, details, ip_addresses, user_agents, created_ats)
		   AS r(sid, uid, typ, det, ip, ua, at)
	RETURNING id;
END $$;

CREATE FUNCTION presence.session_activity(session_id text, max_rows int DEFAULT 100)
RETURNS SETOF presence.activity_log
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	s presence.collaboration_sessions := presence._session(session_id);
BEGIN
	PERFORM presence._require(max_rows, 'max_rows');
	IF max_rows < 1 OR max_rows > 100000 THEN
		RAISE EXCEPTION 'presence: max_rows must be between 1 and 100000, not %', max_rows
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	RETURN QUERY
	SELECT a.* FROM presence.activity_log a
	 WHERE a.session_id = s.id
	 ORDER BY a.created_at DESC, a.chain_seq DESC
	 LIMIT max_rows;
END $$;

CREATE FUNCTION presence.audit_trail(session_id text)
RETURNS TABLE (at timestamptz, user_id uuid, username text, activity_type text, details jsonb,
			   ip_address inet, user_agent text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	s presence.collaboration_sessions := presence._session(session_id);
BEGIN
	RETURN QUERY
	SELECT a.created_at, a.user_id, u.username, a.activity_type::text, a.details, a.ip_address, a.user_agent
	  FROM presence.activity_log a LEFT JOIN presence.users u ON u.id = a.user_id
	 WHERE a.session_id = s.id
	 ORDER BY a.chain_seq;
END $$;

/*
 * Statistics.  peak_concurrent_users replays the join/leave activity in
 * chain order: a user counts from user_joined until user_left or
 * user_timeout (a repeated join while present counts once).
 */
CREATE FUNCTION presence.activity_statistics(session_id text) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	s presence.collaboration_sessions := presence._session(session_id);
	result jsonb;
	peak int := 0;
BEGIN
	WITH transitions AS (
		SELECT a.chain_seq, a.user_id,
			   CASE WHEN a.activity_type = 'user_joined' THEN 1 ELSE 0 END AS present_after
		  FROM presence.activity_log a
		 WHERE a.session_id = s.id AND a.user_id IS NOT NULL
		   AND a.activity_type IN ('user_joined', 'user_left', 'user_timeout')
	), changes AS (
		SELECT t.chain_seq,
			   t.present_after - coalesce(lag(t.present_after) OVER (PARTITION BY t.user_id ORDER BY t.chain_seq), 0) AS delta
		  FROM transitions t
	)
	SELECT coalesce(max(running), 0) INTO peak
	  FROM (SELECT sum(c.delta) OVER (ORDER BY c.chain_seq) AS running FROM changes c) r;

	SELECT jsonb_build_object(
		'total', count(*),
		'by_type', coalesce((SELECT jsonb_object_agg(t.activity_type, t.n)
							   FROM (SELECT a2.activity_type, count(*) AS n FROM presence.activity_log a2
									  WHERE a2.session_id = s.id GROUP BY a2.activity_type) t), '{}'),
		'by_user', coalesce((SELECT jsonb_object_agg(t.user_id, t.n)
							   FROM (SELECT a2.user_id, count(*) AS n FROM presence.activity_log a2
									  WHERE a2.session_id = s.id AND a2.user_id IS NOT NULL GROUP BY a2.user_id) t), '{}'),
		'unique_users', count(DISTINCT a.user_id),
		'first_at', min(a.created_at),
		'last_at', max(a.created_at),
		'duration_seconds', coalesce(extract(epoch FROM max(a.created_at) - min(a.created_at)), 0),
		'peak_concurrent_users', peak)
	  INTO result
	  FROM presence.activity_log a
	 WHERE a.session_id = s.id;
	RETURN result;
END $$;

/*
 * One RFC 4180 cell.  Text a spreadsheet would run as a formula (a leading
 * =, +, -, @, tab or CR) gets a ' in front, and so does text that starts
 * with ' itself, so dropping one leading ' from every cell that has one
 * gives back the value (docs/sql-reference.md).  NULL is an empty cell,
 * the empty string "".
 */
CREATE FUNCTION presence._csv_cell(value text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
	SELECT CASE
		WHEN value IS NULL THEN ''
		WHEN v ~ '[",\r\n]' OR v = '' THEN '"' || replace(v, '"', '""') || '"'
		ELSE v
	END
	  FROM (SELECT CASE WHEN value ~ '^[=+\-@\t\r'']' THEN '''' || value ELSE value END AS v) neutralised
$$;

/*
 * The session's activity as CSV, in chain order, with everything the
 * audit chain hashes in the form it hashes it (ip_address as inet's text,
 * which abbrev() gives: host() would drop a prefix length), so an export
 * can be verified without the database (docs/sql-reference.md).
 */
CREATE FUNCTION presence.export_activity_csv(session_id text) RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	s presence.collaboration_sessions := presence._session(session_id);
	body text;
BEGIN
	SELECT string_agg(
			 concat_ws(',',
				presence._csv_cell(a.id::text),
				presence._csv_cell(to_char(a.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')),
				presence._csv_cell(a.user_id::text),
				presence._csv_cell(u.username),
				presence._csv_cell(a.activity_type::text),
				presence._csv_cell(a.details::text),
				presence._csv_cell(abbrev(a.ip_address)),
				presence._csv_cell(a.user_agent),
				presence._csv_cell(a.chain_seq::text),
				presence._csv_cell(encode(a.row_hash, 'hex')),
				presence._csv_cell(a.session_id::text),
				presence._csv_cell(encode(a.prev_hash, 'hex'))) || E'\r\n',
			 '' ORDER BY a.chain_seq)
	  INTO body
	  FROM presence.activity_log a LEFT JOIN presence.users u ON u.id = a.user_id
	 WHERE a.session_id = s.id;
	RETURN E'id,created_at,user_id,username,activity_type,details,ip_address,user_agent,chain_seq,row_hash,'
		   'session_uuid,prev_hash\r\n' || coalesce(body, '');
END $$;

CREATE FUNCTION presence.verify_audit_chain(session_id text,
											OUT ok boolean, OUT rows_checked bigint, OUT first_bad_id uuid)
	AS 'MODULE_PATHNAME', 'presence_verify_audit_chain'
	LANGUAGE C STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION presence.audit_chain_head(session_id text, OUT chain_seq bigint, OUT row_hash text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	s presence.collaboration_sessions := presence._session(session_id);
BEGIN
	SELECT a.chain_seq, encode(a.row_hash, 'hex') INTO chain_seq, row_hash
	  FROM presence.activity_log a WHERE a.session_id = s.id ORDER BY a.chain_seq DESC LIMIT 1;
	IF NOT FOUND THEN
		SELECT x.chain_seq, encode(x.row_hash, 'hex') INTO chain_seq, row_hash
		  FROM presence.audit_chain_anchors x WHERE x.session_id = s.id;
	END IF;
	IF chain_seq IS NULL THEN
		chain_seq := 0;
		row_hash := repeat('00', 32);
	END IF;
END $$;

CREATE FUNCTION presence.purge_activity(older_than interval) RETURNS bigint
	AS 'MODULE_PATHNAME', 'presence_purge_activity'
	LANGUAGE C SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

/*
 * Tokens
 */

CREATE FUNCTION presence.issue_token(user_id uuid, ttl interval DEFAULT '1 hour', username text DEFAULT NULL)
RETURNS text
	AS 'MODULE_PATHNAME', 'presence_issue_token'
	LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

/*
 * Live presence: answered by the ws workers through shared memory.
 */

CREATE FUNCTION presence._notify_workers(command text, session_id text, user_id uuid, payload jsonb)
RETURNS void
	AS 'MODULE_PATHNAME', 'presence_notify_workers' LANGUAGE C VOLATILE;

CREATE FUNCTION presence.online_users(session_id text)
RETURNS TABLE (user_id uuid, username text, role text, status text, last_seen timestamptz,
			   cursor jsonb, activity text)
	AS 'MODULE_PATHNAME', 'presence_online_users'
	LANGUAGE C STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION presence.broadcast(session_id text, payload jsonb) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	s presence.collaboration_sessions := presence._session(session_id);
BEGIN
	PERFORM presence._require_object(payload, 'payload', presence._config_int('presence.max_message_bytes'));
	PERFORM presence._notify_workers('broadcast', s.session_id, NULL, payload);
	RETURN presence._local_session_connections(s.session_id);
END $$;

CREATE FUNCTION presence._local_session_connections(session_id text) RETURNS integer
	AS 'MODULE_PATHNAME', 'presence_local_session_connections' LANGUAGE C STABLE STRICT;

CREATE FUNCTION presence.stats(
	OUT active_connections bigint, OUT active_sessions bigint, OUT active_users bigint,
	OUT messages_in bigint, OUT messages_out bigint, OUT heartbeats_missed bigint,
	OUT redis_connected boolean, OUT redis_errors bigint,
	OUT activity_queued bigint, OUT activity_written bigint, OUT p95_update_latency_ms double precision,
	OUT errors_sent bigint, OUT connections_refused bigint, OUT auth_failures bigint,
	OUT workers_running integer, OUT commands_dropped bigint)
	AS 'MODULE_PATHNAME', 'presence_stats'
	LANGUAGE C VOLATILE;

/*
 * Grants.  Nothing is executable by PUBLIC; these two helpers give a role
 * what an application or an auditor needs (docs/sql-reference.md).
 */

CREATE FUNCTION presence.grant_application_role(role_name regrole) RETURNS void
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
		presence.broadcast(text, jsonb),
		presence.stats(),
		presence.issue_token(uuid, interval, text) TO %s', role_name);
	EXECUTE format('GRANT SELECT, INSERT ON presence.users TO %s', role_name);
	EXECUTE format('GRANT SELECT ON presence.collaboration_sessions, presence.session_participants TO %s', role_name);
END $$;

CREATE FUNCTION presence.grant_auditor_role(role_name regrole) RETURNS void
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
		presence.stats() TO %s', role_name);
	EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA presence TO %s', role_name);
END $$;

DO $$
DECLARE
	f regprocedure;
BEGIN
	FOR f IN SELECT p.oid FROM pg_proc p WHERE p.pronamespace = 'presence'::regnamespace LOOP
		EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
	END LOOP;
END $$;
