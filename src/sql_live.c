/*-------------------------------------------------------------------------
 * sql_live.c
 *	  SQL functions that reach the live side: online_users(), stats(),
 *	  the connection count broadcast() reports, and _notify_workers(),
 *	  through which broadcast / end_session / remove_participant reach
 *	  connected clients at commit.
 *-------------------------------------------------------------------------
 */
#include "presence.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/jsonb.h"

#include <jansson.h>

#include "auth.h"
#include "protocol.h"
#include "redis_layout.h"
#include "redis_sync.h"
#include "shmem.h"

PG_FUNCTION_INFO_V1(presence_online_users);
PG_FUNCTION_INFO_V1(presence_local_session_connections);
PG_FUNCTION_INFO_V1(presence_stats);
PG_FUNCTION_INFO_V1(presence_notify_workers);
PG_FUNCTION_INFO_V1(presence_config_int);

/*
 * Runs fn for every current participant (user id, username, role) of a
 * session, after checking that the session exists.
 */
typedef void (*participant_visitor) (const char *user_id, const char *username,
									 const char *role, void *context);

static void
require_session(const char *session_id)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		args[1] = {CStringGetTextDatum(session_id)};

	SPI_connect();
	if (SPI_execute_with_args("SELECT 1 FROM presence.collaboration_sessions WHERE session_id = $1",
							  1, argtypes, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "presence: session lookup failed");
	if (SPI_processed == 0)
		ereport(ERROR, (errcode(ERRCODE_NO_DATA_FOUND),
						errmsg("presence: session \"%s\" does not exist", session_id)));
	SPI_finish();
}

static void
for_each_participant(const char *session_id, participant_visitor visit, void *context)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		args[1] = {CStringGetTextDatum(session_id)};

	require_session(session_id);
	SPI_connect();
	if (SPI_execute_with_args("SELECT p.user_id::text, u.username, p.role"
							  "  FROM presence.session_participants p"
							  "  JOIN presence.collaboration_sessions s ON s.id = p.session_id"
							  "  JOIN presence.users u ON u.id = p.user_id"
							  " WHERE s.session_id = $1 AND p.left_at IS NULL"
							  " ORDER BY u.username",
							  1, argtypes, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "presence: participant lookup failed");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	row = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;

		visit(SPI_getvalue(row, desc, 1), SPI_getvalue(row, desc, 2), SPI_getvalue(row, desc, 3), context);
	}
	SPI_finish();
}

typedef struct OnlineUsersContext
{
	const char *session_id;
	Tuplestorestate *store;
	TupleDesc	desc;
} OnlineUsersContext;

static void
emit_online_user(const char *user_id, const char *username, const char *role, void *context)
{
	OnlineUsersContext *out = context;
	LiveUserEntry live;
	Datum		values[7];
	bool		nulls[7] = {false};

	if (presence_users_lookup(out->session_id, user_id, &live) == 0)
		return;
	values[0] = DirectFunctionCall1(uuid_in, CStringGetDatum(user_id));
	values[1] = CStringGetTextDatum(live.username[0] ? live.username : username);
	values[2] = CStringGetTextDatum(role);
	values[3] = CStringGetTextDatum(live.status);
	values[4] = TimestampTzGetDatum(live.last_seen_ms * 1000 -
									(POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY);
	if (live.has_cursor)
	{
		StringInfoData cursor;

		initStringInfo(&cursor);
		appendStringInfoString(&cursor, "{\"eventId\": ");
		escape_json(&cursor, live.cursor_event_id);
		appendStringInfo(&cursor, ", \"position\": " INT64_FORMAT "}", live.cursor_position);
		values[5] = DirectFunctionCall1(jsonb_in, CStringGetDatum(cursor.data));
	}
	else
		nulls[5] = true;
	if (live.activity[0])
		values[6] = CStringGetTextDatum(live.activity);
	else
		nulls[6] = true;
	tuplestore_putvalues(out->store, out->desc, values, nulls);
}

/* A node's clock may run ahead of this one; a lastSeen further ahead is not believed. */
#define MAX_CLOCK_AHEAD_MS (24 * 3600 * 1000LL)

/*
 * One row per user Redis has a fresh connection for, with the seed's
 * status rule: seen within 30 s keeps the user's own status, within
 * 120 s is away, older is offline.
 */
static void
emit_redis_users(OnlineUsersContext *out, redisReply *reply, int64 now_ms)
{
	for (size_t i = 0; i + 1 < reply->elements; i += 2)
	{
		json_t	   *data = json_loadb(reply->element[i]->str, reply->element[i]->len, 0, NULL);
		RedisPresence presence;
		const char *status;
		int64		age_ms;
		Datum		values[7];
		bool		nulls[7] = {false};

		/* the one parser of PresenceData from Redis; a lastSeen past any sane time is garbage */
		redis_parse_presence(data, &presence);
		if (presence.user_id == NULL || !presence.has_last_seen || presence.last_seen_ms < 0 ||
			presence.last_seen_ms > now_ms + MAX_CLOCK_AHEAD_MS)
		{
			if (data)
				json_decref(data);
			continue;
		}
		age_ms = now_ms - presence.last_seen_ms;
		if (age_ms >= 120000)
			status = "offline";
		else if (age_ms >= 30000 || presence.status < 0)
			status = "away";
		else
			status = presence_status_names[presence.status];
		values[0] = DirectFunctionCall1(uuid_in, CStringGetDatum(presence.user_id));
		values[1] = CStringGetTextDatum(presence.username ? presence.username : presence.user_id);
		nulls[2] = presence.role == NULL;
		if (!nulls[2])
			values[2] = CStringGetTextDatum(presence.role);
		values[3] = CStringGetTextDatum(status);
		values[4] = TimestampTzGetDatum(presence.last_seen_ms * 1000 -
										(POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY);
		nulls[5] = !presence.has_cursor;
		if (!nulls[5])
		{
			json_t	   *cursor = json_pack("{s:s, s:I}", "eventId", presence.cursor_event_id,
										   "position", (json_int_t) presence.cursor_position);
			char	   *text = cursor ? json_dumps(cursor, JSON_COMPACT) : NULL;

			values[5] = DirectFunctionCall1(jsonb_in, CStringGetDatum(text ? text : "null"));
			free(text);
			if (cursor)
				json_decref(cursor);
		}
		nulls[6] = presence.activity == NULL;
		if (!nulls[6])
			values[6] = CStringGetTextDatum(presence.activity);
		tuplestore_putvalues(out->store, out->desc, values, nulls);
		json_decref(data);
	}
}

/*
 * online_users(session_id): every node's users from Redis when it is
 * configured and reachable, else this node's workers (shared memory).
 */
Datum
presence_online_users(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	OnlineUsersContext context;
	redisReply *reply = NULL;
	int64		now_ms = (GetCurrentTimestamp() +
						  (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY) / 1000;

	if (PG_ARGISNULL(0))
		ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						errmsg("presence: session_id must not be null")));
	InitMaterializedSRF(fcinfo, 0);
	context.session_id = text_to_cstring(PG_GETARG_TEXT_PP(0));
	context.store = rsinfo->setResult;
	context.desc = rsinfo->setDesc;
	if (redis_configured() && protocol_valid_session_id(context.session_id))
		reply = redis_sync_session_users(context.session_id, now_ms);
	if (reply != NULL)
	{
		require_session(context.session_id);
		if (reply->type == REDIS_REPLY_ARRAY)
			emit_redis_users(&context, reply, now_ms);
		freeReplyObject(reply);
	}
	else
		for_each_participant(context.session_id, emit_online_user, &context);
	return (Datum) 0;
}

typedef struct SessionTally
{
	const char *session_id;
	int			connections;
} SessionTally;

static void
count_connections(const char *user_id, const char *username, const char *role, void *context)
{
	SessionTally *tally = context;
	LiveUserEntry live;

	tally->connections += presence_users_lookup(tally->session_id, user_id, &live);
}

/* Connections on this node joined to a session: what broadcast() reaches. */
Datum
presence_local_session_connections(PG_FUNCTION_ARGS)
{
	SessionTally tally = {text_to_cstring(PG_GETARG_TEXT_PP(0)), 0};

	for_each_participant(tally.session_id, count_connections, &tally);
	PG_RETURN_INT32(tally.connections);
}

/* The columns of presence.stats(). */
#define STATS_COLUMNS 16

/* stats(): counters since start and gauges summed over the workers. */
Datum
presence_stats(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	NodeGauges	gauges;
	Datum		values[STATS_COLUMNS];
	bool		nulls[STATS_COLUMNS] = {false};

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE || desc->natts != STATS_COLUMNS)
		elog(ERROR, "presence: stats must return a record of %d columns", STATS_COLUMNS);
	desc = BlessTupleDesc(desc);
	presence_node_gauges(&gauges);
	values[0] = Int64GetDatum(gauges.connections);
	values[1] = Int64GetDatum(gauges.sessions);
	values[2] = Int64GetDatum(gauges.users);
	values[3] = Int64GetDatum((int64) presence_counter_value(CTR_MESSAGES_IN));
	values[4] = Int64GetDatum((int64) presence_counter_value(CTR_MESSAGES_OUT));
	values[5] = Int64GetDatum((int64) presence_counter_value(CTR_HEARTBEATS_MISSED));
	values[6] = BoolGetDatum(gauges.workers > 0 && gauges.redis_connected);
	values[7] = Int64GetDatum((int64) presence_counter_value(CTR_REDIS_ERRORS));
	values[8] = Int64GetDatum((int64) presence_counter_value(CTR_ACTIVITY_QUEUED));
	values[9] = Int64GetDatum((int64) presence_counter_value(CTR_ACTIVITY_WRITTEN));
	values[10] = Float8GetDatum(presence_latency_quantile_ms(0.95));
	values[11] = Int64GetDatum((int64) presence_counter_value(CTR_ERRORS_SENT));
	values[12] = Int64GetDatum((int64) presence_counter_value(CTR_CONNECTIONS_REFUSED));
	values[13] = Int64GetDatum((int64) presence_counter_value(CTR_AUTH_FAILURES));
	values[14] = Int32GetDatum(gauges.workers);
	values[15] = Int64GetDatum((int64) presence_counter_value(CTR_COMMANDS_DROPPED));
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}

/*
 * _notify_workers(command, session_id, user_id, payload): queue a command
 * for the workers, delivered if and when this transaction commits.
 */
Datum
presence_notify_workers(PG_FUNCTION_ARGS)
{
	char	   *name;
	char	   *user_id = NULL;
	char	   *payload = NULL;
	PresenceCommandKind kind;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						errmsg("presence: command and session_id must not be null")));
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	if (!PG_ARGISNULL(2))
		user_id = DatumGetCString(DirectFunctionCall1(uuid_out, PG_GETARG_DATUM(2)));
	if (!PG_ARGISNULL(3))
		payload = DatumGetCString(DirectFunctionCall1(jsonb_out, PG_GETARG_DATUM(3)));
	kind = presence_command_kind(name);
	if (kind == 0)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("presence: unknown worker command \"%s\"", name)));
	presence_command_enqueue(kind, text_to_cstring(PG_GETARG_TEXT_PP(1)), user_id, payload);
	PG_RETURN_VOID();
}

/* _config_int(name): an integer presence.* setting. */
Datum
presence_config_int(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));

	if (strncmp(name, "presence.", 9) != 0)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("presence: \"%s\" is not a presence setting", name)));
	PG_RETURN_INT32(pg_strtoint32(GetConfigOption(name, false, false)));
}
