/*-------------------------------------------------------------------------
 * requests.c
 *	  What a client message means: authentication, authorisation, the
 *	  change to live state, the write it makes, the reply it gets.
 *
 * The top of a ws worker.  The transport hands it whole messages
 * (requests_ws_handlers), the activity queue hands it rows once they are
 * written or refused (requests_activity_handlers); both are wired by
 * ws_worker.c.  The path of a message is socket (ws_server.c) -> here,
 * rate limit (connection.c) and parse (protocol.c) -> authorise
 * (worker_db.c) -> state and fan-out (live_state.c) or a write
 * (db_write.c, activity.c) -> reply (connection.c).  Replies follow
 * docs/protocol.md: a request with a ref gets exactly one reply carrying
 * it; without a ref only failures are answered, except where the result
 * itself is the point (welcome, session_created, session_joined,
 * heartbeat_ack).
 *-------------------------------------------------------------------------
 */
#include "presence.h"

#include "activity.h"
#include "clock.h"
#include "db_write.h"
#include "live_state.h"
#include "permissions.h"
#include "protocol.h"
#include "requests.h"
#include "shmem.h"
#include "worker_db.h"
#include "ws_server.h"

static void
request_fail(Connection *connection, json_t *ref, const char *code, const char *message)
{
	presence_count_error(protocol_error_code_index(code));
	connection_send_json(connection, protocol_error(ref, code, message));
}

/* The plain ack a request with a ref gets; nothing without one. */
static void
acknowledge(Connection *connection, json_t *ref)
{
	if (ref)
		connection_send_json(connection, protocol_reply("ack", ref));
}

/* Answers a failed database step with the matching protocol error. */
static void
fail_db(Connection *connection, json_t *ref, DbResult result, const char *not_found,
		const char *forbidden, const char *invalid)
{
	switch (result)
	{
		case DB_NOT_FOUND:
			request_fail(connection, ref, "not_found", not_found);
			break;
		case DB_FORBIDDEN:
			request_fail(connection, ref, "forbidden", forbidden);
			break;
		case DB_CONFLICT:
		case DB_INVALID:
			request_fail(connection, ref, "bad_request", invalid);
			break;
		case DB_OK:
		case DB_BUSY:
		case DB_FAILED:
			request_fail(connection, ref, "unavailable", "the database is unavailable; retry later");
			break;
	}
}


/* Authenticated: the connection takes the token's identity and gets welcome. */
static void
admit_finish(Connection *connection, const JwtIdentity *identity, const char *stored_name, json_t *ref)
{
	json_t	   *welcome;

	connection->authenticated = true;
	ws_server_authenticated(connection);
	strlcpy(connection->user_id, identity->user_id, sizeof(connection->user_id));
	strlcpy(connection->username, identity->username[0] ? identity->username : stored_name,
			sizeof(connection->username));
	connection->token_expires_at = identity->expires_at;
	connection->last_message_ms = presence_now_ms();

	welcome = protocol_reply("welcome", ref);
	if (welcome == NULL)
		return;
	json_object_set_new(welcome, "protocol", json_integer(PROTOCOL_VERSION));
	json_object_set_new(welcome, "connectionId", json_string(connection->id));
	json_object_set_new(welcome, "userId", json_string(connection->user_id));
	json_object_set_new(welcome, "username", json_string(connection->username));
	json_object_set_new(welcome, "heartbeatInterval", json_integer(presence_heartbeat_interval_ms));
	json_object_set_new(welcome, "serverTime", json_integer(presence_now_ms()));
	connection_send_json(connection, welcome);
}

/*
 * A request whose write is on its way (db_submit answers at once on a
 * primary, later on a standby): the connection is held so the answer
 * never lands on freed memory.
 */
typedef struct PendingReply
{
	Connection *connection;
	json_t	   *ref;
	JwtIdentity identity;
} PendingReply;

static PendingReply *
pending_reply(Connection *connection, json_t *ref)
{
	PendingReply *pending = calloc(1, sizeof(PendingReply));

	if (pending == NULL)
		return NULL;
	connection_hold(connection);
	pending->connection = connection;
	pending->ref = ref ? json_incref(ref) : NULL;
	return pending;
}

static void
pending_reply_free(PendingReply *pending)
{
	connection_release(pending->connection);
	if (pending->ref)
		json_decref(pending->ref);
	free(pending);
}

/*
 * Refuses a connection whose user could not be found or added: 4001 with
 * the reason when the database said no (a retry would not help), 1011
 * when it failed (a retry may).
 */
static void
refuse_user(Connection *connection, DbResult result)
{
	presence_count(CTR_AUTH_FAILURES, 1);
	if (result == DB_NOT_FOUND)
		connection_close(connection, 4001, "unknown user");
	else if (result == DB_CONFLICT || result == DB_INVALID || result == DB_FORBIDDEN)
		connection_close(connection, 4001, "the user could not be added: its name is refused or taken");
	else
		connection_close(connection, 1011, "authentication is unavailable; retry later");
}

static void
user_ensured(const DbReply *reply, void *arg)
{
	PendingReply *pending = arg;

	if (connection_is_open(pending->connection))
	{
		const char *stored_name = reply->result == DB_OK && reply->rows == 1 ? db_reply_value(reply, 0) : NULL;

		if (stored_name)
			admit_finish(pending->connection, &pending->identity, stored_name, pending->ref);
		else
			refuse_user(pending->connection, reply->result == DB_OK ? DB_FAILED : reply->result);
	}
	pending_reply_free(pending);
}

/*
 * Admits the user of a verified token (from an auth message or the
 * Authorization header): finds the user, or adds them with
 * presence.auto_create_users, then sends welcome.  An added user's
 * welcome waits for the write, which a standby sends to the primary.
 */
static void
request_admit(Connection *connection, const JwtIdentity *identity, json_t *ref)
{
	char		stored_name[PRESENCE_USERNAME_MAX + 1] = "";
	DbResult	result = db_resolve_user(identity->user_id, stored_name);

	if (result == DB_NOT_FOUND && presence_auto_create_users)
	{
		PendingReply *pending = pending_reply(connection, ref);
		const char *params[2] = {identity->user_id, identity->username[0] ? identity->username : identity->user_id};

		if (pending)
			pending->identity = *identity;
		if (pending && db_submit(DB_ENSURE_USER, params, NULL, user_ensured, pending))
			return;
		if (pending)
			pending_reply_free(pending);
		result = DB_FAILED;
	}
	if (result != DB_OK)
	{
		refuse_user(connection, result);
		return;
	}
	admit_finish(connection, identity, stored_name, ref);
}

/*
 * A verdict on a token (an auth message's, or the Authorization
 * header's).  Failure closes with 4001 and a reason that never quotes
 * the token.
 */
static void
admit_verdict(Connection *connection, JwtVerdict verdict, const JwtIdentity *identity, json_t *ref)
{
	if (verdict != JWT_VALID)
	{
		presence_count(CTR_AUTH_FAILURES, 1);
		connection_close(connection, 4001, jwt_verdict_message(verdict));
		return;
	}
	request_admit(connection, identity, ref);
}

static void
send_session_created(Connection *connection, json_t *ref, json_t *session)
{
	json_t	   *reply = protocol_reply("session_created", ref);

	if (reply)
	{
		json_object_set_new(reply, "session", session);
		connection_send_json(connection, reply);
	}
	else
		json_decref(session);
}

static void
session_created(const DbReply *reply, void *arg)
{
	PendingReply *pending = arg;
	DbResult	result = reply->result;
	json_t	   *session = NULL;

	if (result == DB_OK && reply->rows == 1 && db_reply_value(reply, 0))
		session = json_loads(db_reply_value(reply, 0), 0, NULL);
	/* a refusal of privileges is the standby link's role lacking grants: a setup fault, not the client's */
	if ((session == NULL && result == DB_OK) || result == DB_FORBIDDEN)
		result = DB_FAILED;
	if (connection_is_open(pending->connection))
	{
		if (session)
			send_session_created(pending->connection, pending->ref, json_incref(session));
		else
			fail_db(pending->connection, pending->ref, result, "unknown user", "not allowed",
					result == DB_CONFLICT ? "a session with this sessionId already exists" : "invalid session fields");
	}
	if (session)
		json_decref(session);
	pending_reply_free(pending);
}

/*
 * A client creates a session as its owner.  It may choose the session's
 * id only where presence.client_session_ids allows: elsewhere the ids are
 * the application's (create_session(... session_id => 'op-001')), and
 * any authenticated user could otherwise take one first.
 */
static void
handle_session_create(Connection *connection, ClientRequest *request)
{
	PendingReply *pending;
	char	   *metadata;
	const char *params[6];
	bool		submitted;

	if (request->session_id && !presence_client_session_ids)
	{
		request_fail(connection, request->ref, "forbidden",
					 "this server does not let clients choose a sessionId; leave it out to get one");
		return;
	}
	metadata = request->metadata ? json_dumps(request->metadata, JSON_COMPACT) : NULL;
	params[0] = connection->user_id;
	params[1] = request->operation_id;
	params[2] = metadata;
	params[3] = request->target;
	params[4] = request->objective;
	params[5] = request->session_id;
	pending = (request->metadata == NULL || metadata) ? pending_reply(connection, request->ref) : NULL;
	submitted = pending && db_submit(DB_CREATE_SESSION, params, NULL, session_created, pending);
	free(metadata);
	if (submitted)
		return;
	if (pending)
		pending_reply_free(pending);
	request_fail(connection, request->ref, "internal", "out of memory");
}

/*
 * May the user join, by presence.permission_function's view?  The
 * session must exist and be active all the same.  The role shown is the
 * participant's, if the user has one, else viewer: what they may do is
 * the function's to say, request by request.
 */
static DbResult
function_session_access(const char *session_id, const char *user_id, char *role, bool *is_owner)
{
	char		status[DB_STATUS_MAX + 1];
	DbResult	result = db_session_state(session_id, user_id, status, role, is_owner);

	if (result != DB_OK)
		return result;
	if (strcmp(status, "active") != 0)
		return DB_INVALID;
	if (!permission_allowed(session_id, user_id, PERM_VIEW, NULL))
		return DB_FORBIDDEN;
	if (role[0] == '\0')
		strlcpy(role, "viewer", DB_ROLE_MAX + 1);
	return DB_OK;
}

static void
handle_session_join(Connection *connection, ClientRequest *request)
{
	char		role[DB_ROLE_MAX + 1] = "";
	bool		is_owner = false;
	bool		by_function = permission_function_set();
	DbResult	result = by_function ?
		function_session_access(request->session_id, connection->user_id, role, &is_owner) :
		db_session_access(request->session_id, connection->user_id, role, &is_owner);

	/* to one who is not a participant a session does not exist: ids are not probed */
	if (result == DB_FORBIDDEN)
		result = DB_NOT_FOUND;
	if (result != DB_OK)
	{
		fail_db(connection, request->ref, result, "session not found", "session not found", "session is not active");
		return;
	}
	switch (live_join(connection, request->session_id, role, is_owner, request))
	{
		case LIVE_JOIN_OK:
			if (by_function)
				permission_remember(live_permission_cache(connection, request->session_id), PERM_VIEW, true);
			break;
		case LIVE_JOIN_FULL:
			request_fail(connection, request->ref, "session_full", "the session has reached its participant limit");
			break;
		case LIVE_JOIN_NO_MEMORY:
			request_fail(connection, request->ref, "internal", "out of memory");
			break;
	}
}

/* Whether the connection's role in the session allows an activity type. */
static bool
may_log(const char *role, bool is_owner, const char *activity_type)
{
	if (is_owner || strcmp(role, "operator") == 0)
		return true;
	return strcmp(activity_type, "comment") == 0 && strcmp(role, "commenter") == 0;
}

/*
 * Whether a joined connection may still see the session.  With
 * presence.permission_function, each request of a joined client asks
 * (through the cache); a user who lost view leaves the session the way
 * remove_participant() makes them.  true when not joined: the request
 * itself refuses that.
 */
static bool
still_viewing(Connection *connection, const char *session_id)
{
	PermissionCache *cache;
	PermissionAnswer answer;

	if (!permission_function_set() || (cache = live_permission_cache(connection, session_id)) == NULL)
		return true;
	answer = permission_ask(session_id, connection->user_id, PERM_VIEW, cache);
	/* a function that failed refuses this request, it does not say the user lost view */
	if (answer == PERMISSION_DENIED)
		live_remove_participant(session_id, connection->user_id, LEAVE_CAUSE_PERMISSION_REVOKED);
	return answer == PERMISSION_ALLOWED;
}

/*
 * A command from SQL changed a participant (presence.add_participant,
 * presence.permissions_changed, ...; live state has dropped the cached
 * answers): a user named by it who may no longer view leaves now, not at
 * their next request.  The application may have fixed its function too:
 * it is asked again at once, back-off or not.
 */
void
requests_participant_changed(const char *session_id, const char *user_id)
{
	permission_backoff_reset();
	if (permission_function_set() && user_id && live_user_joined(session_id, user_id) &&
		permission_ask(session_id, user_id, PERM_VIEW, NULL) == PERMISSION_DENIED)
		live_remove_participant(session_id, user_id, LEAVE_CAUSE_PERMISSION_REVOKED);
}

/* Whether the connection may log an activity type: its role's or the permission function's say. */
static bool
activity_allowed(Connection *connection, const char *session_id, const char *role, bool is_owner,
				 const char *activity_type)
{
	if (!permission_function_set())
		return may_log(role, is_owner, activity_type);
	return permission_allowed(session_id, connection->user_id,
							  strcmp(activity_type, "comment") == 0 ? PERM_COMMENT : PERM_OPERATE,
							  live_permission_cache(connection, session_id));
}

/* Why an activity was refused, in the terms of whoever decided. */
static const char *
activity_refusal(const char *activity_type)
{
	bool		comment = strcmp(activity_type, "comment") == 0;

	if (permission_function_set())
		return comment ? "commenting needs the comment permission" : "this activity needs the operate permission";
	return comment ? "commenting needs the commenter or operator role" : "this activity needs the operator role";
}

static void
handle_activity(Connection *connection, ClientRequest *request)
{
	const char *role;
	bool		is_owner;

	if (!still_viewing(connection, request->session_id) ||
		!live_is_joined(connection, request->session_id, &role, &is_owner))
	{
		request_fail(connection, request->ref, "forbidden", "join the session first");
		return;
	}
	if (!activity_allowed(connection, request->session_id, role, is_owner, request->activity_type))
	{
		request_fail(connection, request->ref, "forbidden", activity_refusal(request->activity_type));
		return;
	}
	if (!activity_enqueue(request->session_id, connection->user_id, request->activity_type,
						  request->details, connection, connection, request->ref, true))
		request_fail(connection, request->ref, "unavailable", "the activity queue is full; retry later");
}

static const char *const END_NOT_FOUND = "session not found";
static const char *const END_FORBIDDEN = "only the owner can end the session";
static const char *const END_INVALID = "the session has already ended";

static void
session_end_answered(const DbReply *reply, void *arg)
{
	PendingReply *pending = arg;

	if (connection_is_open(pending->connection))
	{
		if (reply->result == DB_OK && reply->rows == 1)
			acknowledge(pending->connection, pending->ref);
		else if (reply->result == DB_OK)
			request_fail(pending->connection, pending->ref, "forbidden", END_FORBIDDEN);
		else
			fail_db(pending->connection, pending->ref,
					reply->result == DB_FORBIDDEN ? DB_FAILED : reply->result,
					END_NOT_FOUND, END_FORBIDDEN, END_INVALID);
	}
	pending_reply_free(pending);
}

/*
 * May the user end the session, by presence.permission_function's end?
 * To one who may not even view it a session does not exist.  The write
 * then ends it without looking at ownership: the function's answer,
 * just given, is the whole rule.
 */
static DbResult
function_session_end(Connection *connection, const char *session_id)
{
	char		status[DB_STATUS_MAX + 1];
	char		role[DB_ROLE_MAX + 1];
	bool		is_owner;
	PermissionCache *cache = live_permission_cache(connection, session_id);
	DbResult	result = db_session_state(session_id, connection->user_id, status, role, &is_owner);

	if (result != DB_OK)
		return result;
	if (permission_allowed(session_id, connection->user_id, PERM_END, cache))
		return DB_OK;
	return permission_allowed(session_id, connection->user_id, PERM_VIEW, cache) ? DB_FORBIDDEN : DB_NOT_FOUND;
}

/*
 * The owner ends a session (with presence.permission_function, whoever
 * it lets).  Ownership is read here (on a standby, from its replica); the
 * write ends the session only while the user still owns it, so a change
 * in between cannot let anyone else end it.
 */
static void
handle_session_end(Connection *connection, ClientRequest *request)
{
	bool		by_function = permission_function_set();
	DbResult	result = by_function ? function_session_end(connection, request->session_id) :
		db_session_owner(request->session_id, connection->user_id);
	const char *params[3] = {request->session_id, request->end_status, connection->user_id};
	PendingReply *pending;

	if (result != DB_OK)
	{
		fail_db(connection, request->ref, result, END_NOT_FOUND,
				by_function ? "ending the session needs the end permission" : END_FORBIDDEN, END_INVALID);
		return;
	}
	pending = pending_reply(connection, request->ref);
	if (pending && db_submit(by_function ? DB_END_SESSION_PERMITTED : DB_END_SESSION, params, NULL,
							 session_end_answered, pending))
		return;
	if (pending)
		pending_reply_free(pending);
	request_fail(connection, request->ref, "internal", "out of memory");
}

static void
heartbeat_still_viewing(Connection *connection, const char *session_id)
{
	(void) still_viewing(connection, session_id);
}

/*
 * A client that only watches sends nothing but heartbeats: they ask its
 * view again (through the cache) in the sessions they keep it in, or it
 * would receive everyone's presence after losing view for as long as it
 * stays connected.
 */
static void
handle_heartbeat(Connection *connection, ClientRequest *request)
{
	json_t	   *reply = protocol_reply("heartbeat_ack", request->ref);

	if (request->session_id)
		heartbeat_still_viewing(connection, request->session_id);
	else if (permission_function_set())
		live_joined_sessions_each(connection, heartbeat_still_viewing);
	live_heartbeat(connection, request->session_id, &request->cursor);
	if (reply)
	{
		json_object_set_new(reply, "serverTime", json_integer(presence_now_ms()));
		connection_send_json(connection, reply);
	}
}

/* A complete text message from a client, within its rate limit. */
static void
request_handle(Connection *connection, const char *text, size_t len)
{
	ClientRequest request;
	const char *problem = NULL;
	bool		valid = protocol_parse(text, len, &request, &problem);

	if (!connection->authenticated)
	{
		if (valid && request.type == REQ_AUTH)
		{
			JwtIdentity identity;
			JwtVerdict	verdict = jwt_verify_client_token(request.token, strlen(request.token),
														  presence_now_ms() / 1000, &identity);

			admit_verdict(connection, verdict, &identity, request.ref);
		}
		else
		{
			presence_count(CTR_AUTH_FAILURES, 1);
			connection_close(connection, 4001, "authentication required");
		}
		protocol_request_free(&request);
		return;
	}
	if (!valid)
	{
		request_fail(connection, request.ref, "bad_request", problem);
		protocol_request_free(&request);
		return;
	}
	presence_count_message_in(request.type);
	live_message_received(connection, request.type);

	switch (request.type)
	{
		case REQ_AUTH:
			request_fail(connection, request.ref, "bad_request", "already authenticated");
			break;
		case REQ_SESSION_CREATE:
			handle_session_create(connection, &request);
			break;
		case REQ_SESSION_JOIN:
			handle_session_join(connection, &request);
			break;
		case REQ_SESSION_LEAVE:
			if (live_leave(connection, request.session_id))
				acknowledge(connection, request.ref);
			else
				request_fail(connection, request.ref, "bad_request", "not joined to this session");
			break;
		case REQ_PRESENCE_UPDATE:
			if (still_viewing(connection, request.session_id) &&
				live_set_status(connection, request.session_id, (PresenceStatus) request.status, request.activity))
				acknowledge(connection, request.ref);
			else
				request_fail(connection, request.ref, "forbidden", "join the session first");
			break;
		case REQ_CURSOR_UPDATE:
			if (still_viewing(connection, request.session_id) &&
				live_set_cursor(connection, request.session_id, &request.cursor))
				acknowledge(connection, request.ref);
			else
				request_fail(connection, request.ref, "forbidden", "join the session first");
			break;
		case REQ_HEARTBEAT:
			handle_heartbeat(connection, &request);
			break;
		case REQ_ACTIVITY:
			handle_activity(connection, &request);
			break;
		case REQ_SESSION_END:
			handle_session_end(connection, &request);
			break;
		case REQ_TYPE_COUNT:
			break;
	}
	protocol_request_free(&request);
}

static void
connection_opened(Connection *connection, const JwtVerdict *header_verdict, const JwtIdentity *identity)
{
	if (header_verdict)
		admit_verdict(connection, *header_verdict, identity, NULL);
}

static void
message_received(Connection *connection, const char *text, size_t len)
{
	if (connection_rate_allows(connection, presence_now_ms()))
		request_handle(connection, text, len);
	else if (connection->close_code == 0)
		request_fail(connection, NULL, "rate_limited", "too many messages; slow down");
}

const WsHandlers requests_ws_handlers = {
	.opened = connection_opened,
	.message = message_received,
	.closed = live_connection_closed,
};

/* A written activity: the session sees it, the requester gets its ack. */
static void
activity_committed(const ActivityRow *row, Connection *requester, json_t *ref)
{
	if (row->announce)
	{
		json_t	   *details = row->details ? json_loads(row->details, 0, NULL) : protocol_object();
		json_t	   *event = json_pack("{s:s, s:s, s:{s:s, s:s?, s:s, s:o, s:I}}",
									  "type", "activity", "sessionId", row->session_id, "activity",
									  "id", row->id, "userId", row->user_id,
									  "activityType", row->activity_type, "details", details,
									  "createdAt", (json_int_t) row->created_ms);

		if (event)
		{
			live_send_to_session(row->session_id, event);
			json_decref(event);
		}
	}
	if (requester && ref && connection_is_open(requester))
	{
		json_t	   *ack = protocol_reply("ack", ref);

		if (ack)
		{
			json_object_set_new(ack, "activityId", json_string(row->id));
			connection_send_json(requester, ack);
		}
	}
}

static void
activity_refused(const ActivityRow *row, Connection *requester, json_t *ref)
{
	if (requester && connection_is_open(requester))
		request_fail(requester, ref, "bad_request", "the activity was refused");
}

const ActivityHandlers requests_activity_handlers = {
	.committed = activity_committed,
	.refused = activity_refused,
};
