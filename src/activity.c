/*-------------------------------------------------------------------------
 * activity.c
 *	  The ws worker's activity queue and its bulk flush.
 *
 * Presence changes and client activity are queued in memory and written
 * in bulk: one transaction, one prepared statement
 * (presence.log_activity_batch over parallel arrays) per flush, every
 * presence.log_flush_interval or as soon as presence.log_flush_max rows
 * wait.  A row a client asked for with a ref is acknowledged only after
 * the commit, and the worker flushes at the end of the same loop pass,
 * so a ref costs no flush interval.
 *
 * On a hot standby the same statement goes to the primary over libpq
 * (primary_link.c), asynchronously: the rows stay queued, and the refs
 * unacknowledged, until the primary has committed them.
 *
 * A flush that fails because of the rows themselves (a session deleted
 * meanwhile, say) is retried row by row so one bad row cannot block the
 * queue; a flush that fails for any other reason keeps every row and is
 * retried.  The queue is bounded by presence.max_pending_activity: past
 * it new activity is refused with "unavailable", never dropped silently.
 *-------------------------------------------------------------------------
 */
#include "presence.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "pgtime.h"

#include "activity.h"
#include "live_state.h"
#include "primary_link.h"
#include "protocol.h"
#include "shmem.h"
#include "worker_db.h"
#include "ws_server.h"

/* Most rows one statement carries; a longer queue takes several. */
#define FLUSH_BATCH_ROWS 5000
#define BATCH_COLUMNS 7

typedef struct QueuedActivity
{
	char		session_id[PRESENCE_SESSION_ID_MAX + 1];
	char		user_id[PRESENCE_UUID_LEN + 1];	/* "" for system rows */
	char		activity_type[65];
	char	   *details;		/* JSON object text, malloc'd, or NULL */
	char		ip[64];
	char		user_agent[256];
	int64		created_ms;
	Connection *requester;		/* held until acked */
	json_t	   *ref;
	bool		announce;		/* send an activity event after commit */
	char		id[PRESENCE_UUID_LEN + 1];	/* filled by the flush */
} QueuedActivity;

static QueuedActivity *queue;
static int	queue_head;
static int	queue_count;
static int	queue_capacity;
static int64 oldest_queued_ms;
static bool ack_waiting;		/* a queued row has a ref: flush this pass */
static int64 retry_after_ms;	/* after a failed flush, not before this */
static int	remote_in_flight;	/* rows sent to the primary, not yet answered */
static int	remote_isolate;		/* rows still to send one at a time after a refusal */

#define QUEUE_AT(i) (&queue[(queue_head + (i)) % queue_capacity])

static bool
queue_reserve(void)
{
	QueuedActivity *grown;
	int			capacity;

	if (queue_count < queue_capacity)
		return true;
	capacity = Max(256, queue_capacity * 2);
	grown = malloc(capacity * sizeof(QueuedActivity));
	if (grown == NULL)
		return false;
	for (int i = 0; i < queue_count; i++)
		grown[i] = *QUEUE_AT(i);
	free(queue);
	queue = grown;
	queue_capacity = capacity;
	queue_head = 0;
	return true;
}

/*
 * Queues one activity row.  source gives ip_address and user_agent;
 * requester and ref ask for an ack after commit; announce sends the
 * committed row to the session's clients as an activity event.  Returns
 * false when the queue is full (the caller answers "unavailable").
 */
bool
activity_enqueue(const char *session_id, const char *user_id, const char *activity_type,
				 json_t *details, Connection *source, Connection *requester, json_t *ref,
				 bool announce)
{
	QueuedActivity *row;

	if (queue_count >= presence_max_pending_activity || !queue_reserve())
		return false;
	row = QUEUE_AT(queue_count);
	memset(row, 0, sizeof(*row));
	strlcpy(row->session_id, session_id, sizeof(row->session_id));
	strlcpy(row->user_id, user_id ? user_id : "", sizeof(row->user_id));
	strlcpy(row->activity_type, activity_type, sizeof(row->activity_type));
	row->details = details ? json_dumps(details, JSON_COMPACT) : NULL;
	if (source)
	{
		strlcpy(row->ip, source->ip, sizeof(row->ip));
		strlcpy(row->user_agent, source->user_agent, sizeof(row->user_agent));
	}
	row->created_ms = presence_now_ms();
	row->announce = announce;
	if (requester)
	{
		connection_hold(requester);
		row->requester = requester;
		row->ref = ref ? json_incref(ref) : NULL;
		ack_waiting |= ref != NULL;
	}
	if (queue_count == 0)
		oldest_queued_ms = row->created_ms;
	queue_count++;
	presence_count(CTR_ACTIVITY_QUEUED, 1);
	return true;
}

int
activity_pending(void)
{
	return queue_count;
}

bool
activity_flush_due(int64 now_ms, bool force)
{
	return queue_count > remote_in_flight && remote_in_flight == 0 && now_ms >= retry_after_ms &&
		(force || ack_waiting || queue_count >= presence_log_flush_max ||
		 now_ms - oldest_queued_ms >= presence_log_flush_interval_ms);
}

int64
activity_next_deadline(void)
{
	if (queue_count == 0)
		return INT64_MAX;
	if (ack_waiting || queue_count >= presence_log_flush_max)
		return retry_after_ms;
	return Max(retry_after_ms, oldest_queued_ms + presence_log_flush_interval_ms);
}

typedef struct FlushBatch
{
	int			first;			/* queue offset of the first row */
	int			count;
} FlushBatch;

static Datum
text_array(FlushBatch *batch, Oid element_type, const char *(*field) (QueuedActivity *))
{
	Datum	   *values = palloc(batch->count * sizeof(Datum));
	bool	   *nulls = palloc(batch->count * sizeof(bool));
	int			dims[1] = {batch->count};
	int			lbs[1] = {1};
	int16		typlen;
	bool		typbyval;
	char		typalign;

	get_typlenbyvalalign(element_type, &typlen, &typbyval, &typalign);
	for (int i = 0; i < batch->count; i++)
	{
		const char *value = field(QUEUE_AT(batch->first + i));
		Oid			input;
		Oid			ioparam;

		nulls[i] = value == NULL;
		if (value == NULL)
			continue;
		getTypeInputInfo(element_type, &input, &ioparam);
		values[i] = OidInputFunctionCall(input, (char *) value, ioparam, -1);
	}
	return PointerGetDatum(construct_md_array(values, nulls, 1, dims, lbs, element_type,
											  typlen, typbyval, typalign));
}

static const char *
field_session(QueuedActivity *row)
{
	return row->session_id;
}

static const char *
field_user(QueuedActivity *row)
{
	return row->user_id[0] ? row->user_id : NULL;
}

static const char *
field_type(QueuedActivity *row)
{
	return row->activity_type;
}

static const char *
field_details(QueuedActivity *row)
{
	return row->details;
}

static const char *
field_ip(QueuedActivity *row)
{
	return row->ip[0] ? row->ip : NULL;
}

static const char *
field_user_agent(QueuedActivity *row)
{
	return row->user_agent[0] ? row->user_agent : NULL;
}

static const char *
field_created(QueuedActivity *row)
{
	static char timestamp[64];
	pg_time_t	seconds = (pg_time_t) (row->created_ms / 1000);
	size_t		n = pg_strftime(timestamp, sizeof(timestamp), "%Y-%m-%d %H:%M:%S", pg_gmtime(&seconds));

	snprintf(timestamp + n, sizeof(timestamp) - n, ".%03d+00", (int) (row->created_ms % 1000));
	return timestamp;
}

/* Inserts one batch and records the new ids in the queued rows. */
static DbResult
insert_batch_work(void *arg)
{
	static SPIPlanPtr plan = NULL;
	FlushBatch *batch = arg;
	Oid			types[BATCH_COLUMNS] = {TEXTARRAYOID, UUIDARRAYOID, TEXTARRAYOID, JSONBARRAYOID,
	INETARRAYOID, TEXTARRAYOID, TIMESTAMPTZARRAYOID};
	Datum		args[BATCH_COLUMNS];
	int			ret;

	args[0] = text_array(batch, TEXTOID, field_session);
	args[1] = text_array(batch, UUIDOID, field_user);
	args[2] = text_array(batch, TEXTOID, field_type);
	args[3] = text_array(batch, JSONBOID, field_details);
	args[4] = text_array(batch, INETOID, field_ip);
	args[5] = text_array(batch, TEXTOID, field_user_agent);
	args[6] = text_array(batch, TIMESTAMPTZOID, field_created);
	if (plan == NULL)
	{
		plan = SPI_prepare("SELECT id::text FROM presence.log_activity_batch($1, $2, $3, $4, $5, $6, $7) AS id",
						   BATCH_COLUMNS, types);
		if (plan == NULL)
			elog(ERROR, "presence: could not prepare the activity insert");
		SPI_keepplan(plan);
	}
	ret = SPI_execute_plan(plan, args, NULL, false, 0);
	if (ret != SPI_OK_SELECT || SPI_processed != (uint64) batch->count)
		elog(ERROR, "presence: activity insert returned %d rows for %d", (int) SPI_processed, batch->count);
	for (int i = 0; i < batch->count; i++)
		strlcpy(QUEUE_AT(batch->first + i)->id,
				SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1), PRESENCE_UUID_LEN + 1);
	return DB_OK;
}

/* After commit: ack the requester, announce to the session, free the row. */
static void
row_committed(QueuedActivity *row)
{
	if (row->announce)
	{
		json_t	   *details = row->details ? json_loads(row->details, 0, NULL) : protocol_object();
		json_t	   *event = json_pack("{s:s, s:s, s:{s:s, s:s?, s:s, s:o, s:I}}",
									  "type", "activity", "sessionId", row->session_id, "activity",
									  "id", row->id, "userId", row->user_id[0] ? row->user_id : NULL,
									  "activityType", row->activity_type, "details", details,
									  "createdAt", (json_int_t) row->created_ms);

		if (event)
		{
			live_send_to_session(row->session_id, event);
			json_decref(event);
		}
	}
	if (row->requester && row->ref && row->requester->wsi)
	{
		json_t	   *ack = protocol_reply("ack", row->ref);

		if (ack)
		{
			json_object_set_new(ack, "activityId", json_string(row->id));
			ws_send_json(row->requester, ack);
		}
	}
}

/* A row the database refused: the requester hears so, the row goes. */
static void
row_refused(QueuedActivity *row)
{
	ereport(WARNING,
			(errmsg("presence: dropped activity \"%s\" for session \"%s\": the database refused it",
					row->activity_type, row->session_id)));
	if (row->requester && row->requester->wsi)
		ws_send_json(row->requester, protocol_error(row->ref, "bad_request", "the activity was refused"));
}

static void
rows_release(int count)
{
	for (int i = 0; i < count; i++)
	{
		QueuedActivity *row = QUEUE_AT(i);

		free(row->details);
		if (row->ref)
			json_decref(row->ref);
		if (row->requester)
			connection_release(row->requester);
	}
	queue_head = (queue_head + count) % Max(queue_capacity, 1);
	queue_count -= count;
	if (queue_count > 0)
		oldest_queued_ms = QUEUE_AT(0)->created_ms;
}

/* A Postgres array literal of one column of the first count rows (malloc'd). */
static char *
array_literal(int count, const char *(*field) (QueuedActivity *))
{
	size_t		capacity = 64,
				len = 0;
	char	   *literal = malloc(capacity);

	for (int i = 0; literal && i < count; i++)
	{
		const char *value = field(QUEUE_AT(i));
		size_t		needed = (value ? 2 * strlen(value) + 3 : 4) + 3;

		if (len + needed >= capacity)
		{
			char	   *grown = realloc(literal, capacity = Max(capacity * 2, len + needed + 1));

			if (grown == NULL)
			{
				free(literal);
				return NULL;
			}
			literal = grown;
		}
		literal[len++] = i == 0 ? '{' : ',';
		if (value == NULL)
		{
			memcpy(literal + len, "NULL", 4);
			len += 4;
			continue;
		}
		literal[len++] = '"';
		for (const char *c = value; *c; c++)
		{
			if (*c == '"' || *c == '\\')
				literal[len++] = '\\';
			literal[len++] = *c;
		}
		literal[len++] = '"';
	}
	if (literal)
	{
		if (count == 0)
			literal[len++] = '{';
		literal[len++] = '}';
		literal[len] = '\0';
	}
	return literal;
}

/* The primary answered a batch (result NULL: the connection failed). */
static void
remote_flush_done(PGresult *result, void *context)
{
	int			count = remote_in_flight;

	remote_in_flight = 0;
	if (result && PQresultStatus(result) == PGRES_TUPLES_OK && PQntuples(result) == count)
	{
		for (int i = 0; i < count; i++)
		{
			strlcpy(QUEUE_AT(i)->id, PQgetvalue(result, i, 0), PRESENCE_UUID_LEN + 1);
			row_committed(QUEUE_AT(i));
		}
		presence_count(CTR_ACTIVITY_WRITTEN, count);
		rows_release(count);
		remote_isolate = Max(remote_isolate - count, 0);
		return;
	}
	if (result && primary_result_refused(result))
	{
		if (count == 1)
		{
			row_refused(QUEUE_AT(0));
			rows_release(1);
			remote_isolate = Max(remote_isolate - 1, 0);
		}
		else
			remote_isolate = count;
		return;
	}
	retry_after_ms = presence_now_ms() + presence_log_flush_interval_ms;
}

/* The standby's flush: the next batch goes to the primary; the answer comes later. */
static bool
flush_to_primary(void)
{
	static const char *(*const columns[BATCH_COLUMNS]) (QueuedActivity *) = {
		field_session, field_user, field_type, field_details, field_ip, field_user_agent, field_created
	};
	int			count = remote_isolate > 0 ? 1 : Min(queue_count, FLUSH_BATCH_ROWS);
	char	   *params[BATCH_COLUMNS];
	bool		sent;

	for (int i = 0; i < BATCH_COLUMNS; i++)
		params[i] = array_literal(count, columns[i]);
	sent = params[BATCH_COLUMNS - 1] != NULL &&
		primary_link_send("SELECT id::text FROM presence.log_activity_batch($1::text[], $2::uuid[], $3::text[],"
						  " $4::jsonb[], $5::inet[], $6::text[], $7::timestamptz[]) AS id",
						  BATCH_COLUMNS, (const char *const *) params, remote_flush_done, NULL);
	for (int i = 0; i < BATCH_COLUMNS; i++)
		free(params[i]);
	if (sent)
		remote_in_flight = count;
	return sent;
}

/*
 * Writes the queue.  Runs in the worker's main loop, never inside a
 * library callback, at the end of a pass when activity_flush_due().
 * Returns false when the database could not take the rows; they stay
 * queued and the next attempt waits a flush interval.
 */
bool
activity_flush(void)
{
	ack_waiting = false;
	if (primary_link_needed())
		return flush_to_primary();
	while (queue_count > 0)
	{
		FlushBatch	batch = {0, Min(queue_count, FLUSH_BATCH_ROWS)};
		DbResult	result = db_run("presence: writing activity", insert_batch_work, &batch);

		if (result == DB_OK)
		{
			for (int i = 0; i < batch.count; i++)
				row_committed(QUEUE_AT(i));
			presence_count(CTR_ACTIVITY_WRITTEN, batch.count);
			rows_release(batch.count);
			continue;
		}
		if (result == DB_FAILED)
		{
			/* transient: keep everything, retry after an interval */
			retry_after_ms = presence_now_ms() + presence_log_flush_interval_ms;
			return false;
		}

		/* some row was refused: find it by writing one row at a time */
		for (int i = 0; i < batch.count; i++)
		{
			FlushBatch	single = {0, 1};

			result = db_run("presence: writing activity", insert_batch_work, &single);
			if (result == DB_FAILED)
			{
				retry_after_ms = presence_now_ms() + presence_log_flush_interval_ms;
				return false;
			}
			if (result == DB_OK)
			{
				row_committed(QUEUE_AT(0));
				presence_count(CTR_ACTIVITY_WRITTEN, 1);
			}
			else
				row_refused(QUEUE_AT(0));
			rows_release(1);
		}
	}
	return true;
}
