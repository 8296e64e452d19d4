/*-------------------------------------------------------------------------
 * requests.c
 *	  One client message, from parsed request to reply: authentication,
 *	  authorisation, the change to live state, the activity it logs.
 *
 * The path of a message is socket (ws_server.c) -> parse (protocol.c) ->
 * authorise (here, with worker_db.c) -> state and fan-out (live_state.c)
 * -> activity queue (activity.c).  Replies follow PROTOCOL.md: a request
 * with a ref gets exactly one reply carrying it; without a ref only
 * failures are answered, except where the result itself is the point
 * (welcome, session_created, session_joined, heartbeat_ack).
 *-------------------------------------------------------------------------
 */
#include "presence.h"

#include "activity.h"
#include "clock.h"
#include "live_state.h"
#include "primary_link.h"
#include "protocol.h"
#include "requests.h"
#include "shmem.h"
#include "worker_db.h"
#include "ws_server.h"

/* Error codes of PROTOCOL.md, in the order /metrics counts them. */
const char *const request_error_codes[REQUEST_ERROR_CODES] = {
	"bad_request", "unauthorized", "forbidden", "not_found",
	"session_full", "rate_limited", "unavailable", "internal"
};

void
request_fail(Connection *connection, json_t *ref, const char *code, const char *message)
{
	for (int i = 0; i < REQUEST_ERROR_CODES; i++)
		if (strcmp(code, request_error_codes[i]) == 0)
			presence_count_error(i);
	ws_send_json(connection, protocol_error(ref, code, message));
}

/* The plain ack a request with a ref gets; nothing without one. */
static void
acknowledge(Connection *connection, json_t *ref)
{
	if (ref)
		ws_send_json(connection, protocol_reply("ack", ref));
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
		case DB_READ_ONLY:
		case DB_BUSY:
		case DB_FAILED:
			request_fail(connection, ref, "unavailable", "the database is unavailable; retry later");
			break;
	}
}

/*
 * Authenticates a connection with the token of an auth message.  Failure
 * closes with 4001 and a reason that never quotes the token.
 */
void
request_authenticate(Connection *connection, const char *token, size_t token_len, json_t *ref)
{
	JwtIdentity identity;
	JwtVerdict	verdict = jwt_verify(token, token_len, presence_jwt_secret, presence_jwt_audience,
									 presence_jwt_leeway_s, presence_now_ms() / 1000, &identity);

	if (verdict != JWT_VALID)
	{
		presence_count(CTR_AUTH_FAILURES, 1);
		ws_close(connection, 4001, jwt_verdict_message(verdict));
		return;
	}
	request_admit(connection, &identity, ref);
}

/* Authenticated: the connection takes the token's identity and gets welcome. */
static void
admit_finish(Connection *connection, const JwtIdentity *identity, const char *stored_name, json_t *ref)
{
	json_t	   *welcome;

	connection->authenticated = true;
	ws_connection_authenticated(connection);
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
	ws_send_json(connection, welcome);
}

/*
 * A request a standby sent to the primary, waiting for its answer: the
 * connection is held so the answer never lands on freed memory.
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

static bool
primary_succeeded(PGresult *result)
{
	return result && PQresultStatus(result) == PGRES_TUPLES_OK && PQntuples(result) == 1;
}

/* Answers a request the primary refused or could not take. */
static void
fail_primary(Connection *connection, json_t *ref, PGresult *result, const char *refused)
{
	DbResult	outcome = result ? db_classify_sqlstate(PQresultErrorField(result, PG_DIAG_SQLSTATE)) : DB_FAILED;

	if (outcome == DB_CONFLICT)
		request_fail(connection, ref, "bad_request", "a session with this sessionId already exists");
	else if (outcome == DB_INVALID || outcome == DB_NOT_FOUND)
		request_fail(connection, ref, "bad_request", refused);
	else
		request_fail(connection, ref, "unavailable", "the primary database is unavailable; retry later");
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
		ws_close(connection, 4001, "unknown user");
	else if (result == DB_CONFLICT || result == DB_INVALID || result == DB_FORBIDDEN)
		ws_close(connection, 4001, "the user could not be added: its name is refused or taken");
	else
		ws_close(connection, 1011, "authentication is unavailable; retry later");
}

static void
user_ensured(PGresult *result, void *context)
{
	PendingReply *pending = context;

	if (pending->connection->wsi)
	{
		if (primary_succeeded(result))
			admit_finish(pending->connection, &pending->identity, PQgetvalue(result, 0, 0), pending->ref);
		else
			refuse_user(pending->connection,
						result ? db_classify_sqlstate(PQresultErrorField(result, PG_DIAG_SQLSTATE)) : DB_FAILED);
	}
	pending_reply_free(pending);
}

/*
 * Admits the user of a verified token (from an auth message or the
 * Authorization header): finds or adds the user, then sends welcome.  On
 * a standby a new user is added on the primary, and welcome waits for it.
 */
void
request_admit(Connection *connection, const JwtIdentity *identity, json_t *ref)
{
	char		stored_name[PRESENCE_USERNAME_MAX + 1] = "";
	DbResult	result = db_resolve_user(identity->user_id, identity->username, stored_name);

	if (result == DB_READ_ONLY)
	{
		PendingReply *pending = pending_reply(connection, ref);
		const char *params[2] = {identity->user_id, identity->username[0] ? identity->username : identity->user_id};

		if (pending)
			pending->identity = *identity;
		if (pending && primary_link_send(DB_ENSURE_USER_SQL, 2, params, user_ensured, pending))
			return;
		if (pending)
			pending_reply_free(pending);
	}
	if (result != DB_OK)
	{
		refuse_user(connection, result);
		return;
	}
	admit_finish(connection, identity, stored_name, ref);
}

static void
send_session_created(Connection *connection, json_t *ref, json_t *session)
{
	json_t	   *reply = protocol_reply("session_created", ref);

	if (reply)
	{
		json_object_set_new(reply, "session", session);
		ws_send_json(connection, reply);
	}
	else
		json_decref(session);
}

static void
session_created_on_primary(PGresult *result, void *context)
{
	PendingReply *pending = context;
	json_t	   *session = primary_succeeded(result) ? json_loads(PQgetvalue(result, 0, 0), 0, NULL) : NULL;

	if (pending->connection->wsi)
	{
		if (session)
			send_session_created(pending->connection, pending->ref, json_incref(session));
		else
			fail_primary(pending->connection, pending->ref, result, "invalid session fields");
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
	json_t	   *session;
	DbResult	result;

	if (request->session_id && !presence_client_session_ids)
	{
		request_fail(connection, request->ref, "forbidden",
					 "this server does not let clients choose a sessionId; leave it out to get one");
		return;
	}
	result = db_create_session(connection->user_id, request, &session);

	if (result == DB_READ_ONLY)
	{
		PendingReply *pending = pending_reply(connection, request->ref);
		const char *params[6];
		bool		sent;

		db_create_session_params(connection->user_id, request, params);
		sent = pending && primary_link_send(DB_CREATE_SESSION_SQL, 6, params, session_created_on_primary, pending);
		free((char *) params[2]);
		if (sent)
			return;
		if (pending)
			pending_reply_free(pending);
	}
	if (result != DB_OK)
	{
		fail_db(connection, request->ref, result, "unknown user", "not allowed",
				result == DB_CONFLICT ? "a session with this sessionId already exists" : "invalid session fields");
		return;
	}
	send_session_created(connection, request->ref, session);
}

static void
handle_session_join(Connection *connection, ClientRequest *request)
{
	char		role[16] = "";
	bool		is_owner = false;
	DbResult	result = db_session_access(request->session_id, connection->user_id, role, &is_owner);

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

static void
handle_activity(Connection *connection, ClientRequest *request)
{
	const char *role;
	bool		is_owner;

	if (!live_is_joined(connection, request->session_id, &role, &is_owner))
	{
		request_fail(connection, request->ref, "forbidden", "join the session first");
		return;
	}
	if (!may_log(role, is_owner, request->activity_type))
	{
		request_fail(connection, request->ref, "forbidden",
					 strcmp(request->activity_type, "comment") == 0 ?
					 "commenting needs the commenter or operator role" :
					 "this activity needs the operator role");
		return;
	}
	if (!activity_enqueue(request->session_id, connection->user_id, request->activity_type,
						  request->details, connection, connection, request->ref, true))
		request_fail(connection, request->ref, "unavailable", "the activity queue is full; retry later");
}

static void
session_ended_on_primary(PGresult *result, void *context)
{
	PendingReply *pending = context;

	if (pending->connection->wsi)
	{
		if (primary_succeeded(result))
			acknowledge(pending->connection, pending->ref);
		else
			fail_primary(pending->connection, pending->ref, result, "the session has already ended");
	}
	pending_reply_free(pending);
}

static void
handle_session_end(Connection *connection, ClientRequest *request)
{
	DbResult	result = db_end_session(request->session_id, connection->user_id, request->end_status);

	if (result == DB_READ_ONLY)
	{
		PendingReply *pending = pending_reply(connection, request->ref);
		const char *params[2] = {request->session_id, request->end_status};

		if (pending && primary_link_send(DB_END_SESSION_SQL, 2, params, session_ended_on_primary, pending))
			return;
		if (pending)
			pending_reply_free(pending);
	}
	if (result != DB_OK)
	{
		fail_db(connection, request->ref, result, "session not found",
				"only the owner can end the session", "the session has already ended");
		return;
	}
	acknowledge(connection, request->ref);
}

static void
handle_heartbeat(Connection *connection, ClientRequest *request)
{
	json_t	   *reply = protocol_reply("heartbeat_ack", request->ref);

	live_heartbeat(connection, request->session_id, &request->cursor);
	if (reply)
	{
		json_object_set_new(reply, "serverTime", json_integer(presence_now_ms()));
		ws_send_json(connection, reply);
	}
}

/* A complete text message from a client. */
void
request_handle(Connection *connection, const char *text, size_t len)
{
	ClientRequest request;
	const char *problem = NULL;
	bool		valid = protocol_parse(text, len, &request, &problem);

	if (!connection->authenticated)
	{
		if (valid && request.type == REQ_AUTH)
			request_authenticate(connection, request.token, strlen(request.token), request.ref);
		else
		{
			presence_count(CTR_AUTH_FAILURES, 1);
			ws_close(connection, 4001, "authentication required");
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
			if (live_set_status(connection, request.session_id, (PresenceStatus) request.status, request.activity))
				acknowledge(connection, request.ref);
			else
				request_fail(connection, request.ref, "forbidden", "join the session first");
			break;
		case REQ_CURSOR_UPDATE:
			if (live_set_cursor(connection, request.session_id, &request.cursor))
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
