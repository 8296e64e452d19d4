/*
 * presence 1.1 -> 1.2
 *
 * Presence for backends: every presence change the activity log records
 * (a user joins, leaves, times out, or changes status; never a cursor) is
 * announced with NOTIFY on the session's channel, presence.channel(), in
 * the transaction that writes the row; presence.presence_change() reads
 * what it was.  So a backend LISTENs instead of
 * polling online_users(), hears each change once and only once it is
 * committed, and hears the changes of every worker and of every standby
 * (whose rows are written on the primary) alike.
 */
\echo Use "ALTER EXTENSION presence UPDATE TO '1.2'" to load this file. \quit

/*
 * The channel a session's presence changes are announced on: a channel
 * name is an identifier of at most 63 bytes, so longer session ids are
 * hashed ("#" never appears in a session id).  LISTEN takes it quoted:
 * format('LISTEN %I', presence.channel('op-42')).
 */
CREATE FUNCTION presence.channel(session_id text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, pg_temp
RETURN CASE WHEN octet_length(session_id) <= 54 THEN 'presence:' || session_id
			ELSE 'presence#' || md5(session_id) END;

/*
 * What a presence row of the activity log says, for a backend that heard
 * of it: the notification carries only the row's id, since any role that
 * can connect may LISTEN (and NOTIFY) on any channel.  What the change
 * was is read here, under the caller's grants; a forged or replayed id
 * yields nothing new.
 */
CREATE FUNCTION presence.presence_change(activity_id uuid,
										 OUT session_id text, OUT user_id uuid, OUT username text,
										 OUT event text, OUT status text, OUT automatic boolean,
										 OUT at timestamptz)
RETURNS SETOF record
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
	SELECT s.session_id, a.user_id, u.username,
		   CASE a.activity_type WHEN 'user_joined' THEN 'join' WHEN 'user_left' THEN 'leave'
								WHEN 'user_timeout' THEN 'timeout' ELSE 'status' END,
		   CASE a.activity_type WHEN 'user_joined' THEN 'online' WHEN 'status_changed' THEN a.details ->> 'status'
								ELSE 'offline' END,
		   CASE WHEN a.activity_type = 'status_changed' THEN
				CASE WHEN jsonb_typeof(a.details -> 'automatic') = 'boolean' THEN (a.details -> 'automatic')::boolean
					 ELSE false END END,
		   a.created_at
	  FROM presence.activity_log a
	  JOIN presence.collaboration_sessions s ON s.id = a.session_id
	  LEFT JOIN presence.users u ON u.id = a.user_id
	 WHERE a.id = activity_id
	   AND a.activity_type IN ('user_joined', 'user_left', 'user_timeout', 'status_changed')
$$;

/*
 * After each statement that adds activity rows: one notification per
 * presence row, in chain order, its payload the row's id.  The audit log
 * is never held hostage by listeners: a LISTENer that stops reading
 * fills PostgreSQL's notification queue, and a NOTIFY into a full queue
 * fails its whole transaction; past half full, rows are written without
 * being announced, and the log says so.
 */
CREATE FUNCTION presence._announce_presence() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	change record;
	queue_warned boolean := false;
BEGIN
	FOR change IN
		SELECT s.session_id, a.id
		  FROM added a
		  JOIN presence.collaboration_sessions s ON s.id = a.session_id
		 WHERE a.activity_type IN ('user_joined', 'user_left', 'user_timeout', 'status_changed')
		 ORDER BY a.session_id, a.chain_seq
	LOOP
		IF pg_notification_queue_usage() >= 0.5 THEN
			IF NOT queue_warned THEN
				RAISE WARNING 'presence: the NOTIFY queue is % %% full; presence changes are written but not announced',
					round(pg_notification_queue_usage() * 100)
					USING HINT = 'A session that LISTENs and does not read (often one idle in a transaction) holds the queue.';
				queue_warned := true;
			END IF;
			CONTINUE;
		END IF;
		PERFORM pg_notify(presence.channel(change.session_id), json_build_object('activityId', change.id)::text);
	END LOOP;
	RETURN NULL;
END $$;

CREATE TRIGGER activity_presence_notify AFTER INSERT ON presence.activity_log
	REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION presence._announce_presence();

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
		presence.issue_token(uuid, interval, text) TO %s', role_name);
	EXECUTE format('GRANT SELECT, INSERT ON presence.users TO %s', role_name);
	EXECUTE format('GRANT SELECT ON presence.collaboration_sessions, presence.session_participants TO %s', role_name);
END $$;

REVOKE ALL ON FUNCTION presence.channel(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION presence.presence_change(uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION presence._announce_presence() FROM PUBLIC;
