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
 * Nothing here waits for another transaction.  Before writing, a flush
 * takes the chain lock of every session of the batch if it is free
 * (audit_chain.c); a session an application transaction holds is put
 * off for a flush interval, its rows stay queued in order, and the other
 * sessions' rows are written now.  Anything else that cannot be had in
 * time (presence.db_lock_timeout, presence.db_statement_timeout) splits
 * the batch by session the same way, and a batch the database refuses
 * is split down to the row that is refused, so one bad row or one held
 * session never holds up the rest.  A flush that fails for any other
 * reason keeps every row and is retried.
 *
 * On a hot standby the same statement goes to the primary over libpq
 * (primary_link.c), asynchronously: the rows stay queued, and the refs
 * unacknowledged, until the primary has committed them.
 *
 * The queue is bounded in rows (presence.max_pending_activity) and bytes
 * (presence.max_pending_activity_memory): past either, new activity is
 * refused with "unavailable", never dropped silently.
 *-------------------------------------------------------------------------
 */
#include "presence.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/uuid.h"
#include "pgtime.h"

#include "activity.h"
#include "audit_chain.h"
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
	bool		done;			/* written or refused: a hole until the head passes it */
	bool		put_off;		/* its session is put off (see below) */
	char		id[PRESENCE_UUID_LEN + 1];	/* filled by the flush */
} QueuedActivity;

/*
 * A session whose rows wait because its chain lock was taken, or its
 * write ran out of time, until retry_at_ms.  Few at a time: a linear
 * list is enough.
 */
typedef struct PutOffSession
{
	char		session_id[PRESENCE_SESSION_ID_MAX + 1];
	int64		retry_at_ms;
} PutOffSession;

/* Queue offsets (from the head) of the rows one statement writes. */
typedef struct FlushBatch
{
	int		   *rows;
	int			count;
} FlushBatch;

/*
 * The queue is a ring, oldest first.  Rows leave it from the head only,
 * so rows written behind a put-off row are holes (done) until the head
 * passes them; the ring is compacted when holes are most of it.
 */
static QueuedActivity *queue;
static int	queue_head;
static int	queue_count;		/* entries, holes included */
static int	queue_capacity;
static int	queue_rows;			/* rows waiting: not done */
static int	queue_ready;		/* rows waiting whose session is not put off */
static size_t queue_bytes;		/* memory of the rows waiting */
static int64 oldest_ready_ms;	/* created_ms of the oldest ready row */
static bool ack_waiting;		/* a queued row has a ref: flush this pass */
static int64 retry_after_ms;	/* after a failed flush, not before this */
static PutOffSession *put_off;
static int	put_off_count;
static int	put_off_capacity;
static bool flush_in_progress;
static int	remote_in_flight;	/* rows sent to the primary, not yet answered */
static int *remote_rows;		/* their offsets */
static int	remote_isolate;		/* rows still to send one at a time after a refusal */

#define QUEUE_AT(i) (&queue[(queue_head + (i)) % queue_capacity])

static size_t
row_bytes(const QueuedActivity *row)
{
	return sizeof(QueuedActivity) + (row->details ? strlen(row->details) + 1 : 0);
}

/*
 * Moves the queue to the front of a ring of the given capacity, without
 * its holes unless rows are being written: a flush, and a batch sent to
 * the primary, hold queue offsets that must stay valid.
 */
static bool
queue_rebuild(int capacity)
{
	QueuedActivity *rebuilt = malloc(Max(capacity, 1) * sizeof(QueuedActivity));
	bool		keep_holes = flush_in_progress || remote_in_flight > 0;
	int			kept = 0;

	if (rebuilt == NULL)
		return false;
	for (int i = 0; i < queue_count; i++)
		if (keep_holes || !QUEUE_AT(i)->done)
			rebuilt[kept++] = *QUEUE_AT(i);
	free(queue);
	queue = rebuilt;
	queue_capacity = capacity;
	queue_head = 0;
	queue_count = kept;
	return true;
}

static bool
queue_reserve(void)
{
	if (queue_count < queue_capacity)
		return true;
	/* mostly holes: squeeze them out instead of growing */
	if (queue_rows < queue_count / 2 && !flush_in_progress && remote_in_flight == 0)
		return queue_rebuild(queue_capacity);
	return queue_rebuild(Max(256, queue_capacity * 2));
}

static PutOffSession *
put_off_find(const char *session_id)
{
	for (int i = 0; i < put_off_count; i++)
		if (strcmp(put_off[i].session_id, session_id) == 0)
			return &put_off[i];
	return NULL;
}

/* Recounts the ready rows and the oldest of them after put-offs changed. */
static void
recount_ready(void)
{
	queue_ready = 0;
	oldest_ready_ms = INT64_MAX;
	for (int i = 0; i < queue_count; i++)
	{
		QueuedActivity *row = QUEUE_AT(i);

		if (row->done)
			continue;
		row->put_off = put_off_find(row->session_id) != NULL;
		if (row->put_off)
			continue;
		if (queue_ready++ == 0)
			oldest_ready_ms = row->created_ms;
	}
}

/* Puts a session's rows off until a flush interval from now. */
static void
put_off_session(const char *session_id, int64 now_ms)
{
	PutOffSession *entry = put_off_find(session_id);

	if (entry == NULL)
	{
		if (put_off_count == put_off_capacity)
		{
			int			capacity = Max(8, put_off_capacity * 2);
			PutOffSession *grown = realloc(put_off, capacity * sizeof(PutOffSession));

			/* without room the session simply stays ready and is tried again */
			if (grown == NULL)
				return;
			put_off = grown;
			put_off_capacity = capacity;
		}
		entry = &put_off[put_off_count++];
		strlcpy(entry->session_id, session_id, sizeof(entry->session_id));
	}
	entry->retry_at_ms = now_ms + presence_log_flush_interval_ms;
}

/* Ends the put-offs that are due (all of them when forced). */
static void
put_offs_expire(int64 now_ms, bool force)
{
	int			kept = 0;

	for (int i = 0; i < put_off_count; i++)
		if (!force && put_off[i].retry_at_ms > now_ms)
			put_off[kept++] = put_off[i];
	if (kept != put_off_count)
	{
		put_off_count = kept;
		recount_ready();
	}
}

static int64
put_offs_next_ms(void)
{
	int64		next = INT64_MAX;

	for (int i = 0; i < put_off_count; i++)
		next = Min(next, put_off[i].retry_at_ms);
	return next;
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
	char	   *details_text = details ? json_dumps(details, JSON_COMPACT) : NULL;
	size_t		bytes = sizeof(QueuedActivity) + (details_text ? strlen(details_text) + 1 : 0);

	if ((details && details_text == NULL) || queue_rows >= presence_max_pending_activity ||
		queue_bytes + bytes > (size_t) presence_max_pending_activity_kb * 1024 || !queue_reserve())
	{
		free(details_text);
		return false;
	}
	row = QUEUE_AT(queue_count);
	memset(row, 0, sizeof(*row));
	strlcpy(row->session_id, session_id, sizeof(row->session_id));
	strlcpy(row->user_id, user_id ? user_id : "", sizeof(row->user_id));
	strlcpy(row->activity_type, activity_type, sizeof(row->activity_type));
	row->details = details_text;
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
	/* behind a put-off row of its session, so the chain keeps their order */
	row->put_off = put_off_count > 0 && put_off_find(session_id) != NULL;
	if (!row->put_off && queue_ready++ == 0)
		oldest_ready_ms = row->created_ms;
	queue_count++;
	queue_rows++;
	queue_bytes += bytes;
	presence_count(CTR_ACTIVITY_QUEUED, 1);
	return true;
}

int
activity_pending(void)
{
	return queue_rows;
}

bool
activity_flush_due(int64 now_ms, bool force)
{
	if (put_off_count > 0)
		put_offs_expire(now_ms, force);
	return queue_ready > 0 && remote_in_flight == 0 && now_ms >= retry_after_ms &&
		(force || ack_waiting || queue_ready >= presence_log_flush_max ||
		 now_ms - oldest_ready_ms >= presence_log_flush_interval_ms);
}

int64
activity_next_deadline(void)
{
	int64		next = put_offs_next_ms();

	if (queue_ready == 0)
		return next;
	if (ack_waiting || queue_ready >= presence_log_flush_max)
		return Min(next, retry_after_ms);
	return Min(next, Max(retry_after_ms, oldest_ready_ms + presence_log_flush_interval_ms));
}

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
		const char *value = field(QUEUE_AT(batch->rows[i]));
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

/*
 * Takes the chain lock of every session of the batch that is free now,
 * in one order (by session uuid), and drops from the batch the rows of
 * the sessions that are not: they are put off.  Rows of a session that
 * does not exist stay, for the insert to refuse.
 */
static void
lock_batch_sessions(FlushBatch *batch, int64 now_ms)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[1] = {TEXTARRAYOID};
	Datum		args[1] = {text_array(batch, TEXTOID, field_session)};
	bool		busy_any = false;
	int			kept = 0;

	if (plan == NULL)
	{
		plan = SPI_prepare("SELECT s.id, s.session_id FROM presence.collaboration_sessions s"
						   " WHERE s.session_id OPERATOR(pg_catalog.=) ANY ($1) ORDER BY s.id",
						   1, types);
		if (plan == NULL)
			elog(ERROR, "presence: could not prepare the session lock query");
		SPI_keepplan(plan);
	}
	if (SPI_execute_plan(plan, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "presence: could not look up the sessions of an activity batch");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		Datum		id = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);

		if (!audit_chain_try_lock_session(DatumGetUUIDP(id)))
		{
			put_off_session(SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2), now_ms);
			busy_any = true;
		}
	}
	if (!busy_any)
		return;
	for (int i = 0; i < batch->count; i++)
		if (put_off_find(QUEUE_AT(batch->rows[i])->session_id) == NULL)
			batch->rows[kept++] = batch->rows[i];
	batch->count = kept;
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

	lock_batch_sessions(batch, presence_now_ms());
	if (batch->count == 0)
		return DB_OK;
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
		strlcpy(QUEUE_AT(batch->rows[i])->id,
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

/* A row leaves the queue (written or refused): free what it holds. */
static void
row_done(QueuedActivity *row)
{
	queue_bytes -= row_bytes(row);
	free(row->details);
	row->details = NULL;
	if (row->ref)
		json_decref(row->ref);
	row->ref = NULL;
	if (row->requester)
		connection_release(row->requester);
	row->requester = NULL;
	row->done = true;
	queue_rows--;
	if (!row->put_off)
		queue_ready--;
}

static void
batch_committed(FlushBatch *batch)
{
	for (int i = 0; i < batch->count; i++)
	{
		row_committed(QUEUE_AT(batch->rows[i]));
		row_done(QUEUE_AT(batch->rows[i]));
	}
	presence_count(CTR_ACTIVITY_WRITTEN, batch->count);
}

/* Advances the head past the rows that are done; recounts the ready ones. */
static void
queue_settle(void)
{
	while (queue_count > 0 && QUEUE_AT(0)->done)
	{
		queue_head = (queue_head + 1) % queue_capacity;
		queue_count--;
	}
	recount_ready();
}

/*
 * Writes a batch, splitting it when it cannot be written whole: by
 * session when it spans several (a held lock or a refused row is then
 * confined to its session), else row by row when the database refused
 * it, down to the one row that is dropped.  A session that cannot be
 * written in time is put off.  Returns false when the database failed
 * and everything must wait.
 */
static bool
write_batch(FlushBatch *batch, int64 now_ms)
{
	DbResult	result = db_run("presence: writing activity", insert_batch_work, batch);
	const char *first_session;
	bool		one_session = true;
	FlushBatch	part;

	if (result == DB_OK)
	{
		batch_committed(batch);
		return true;
	}
	if (result == DB_FAILED)
		return false;
	first_session = QUEUE_AT(batch->rows[0])->session_id;
	for (int i = 1; i < batch->count && one_session; i++)
		one_session = strcmp(QUEUE_AT(batch->rows[i])->session_id, first_session) == 0;
	if (result == DB_BUSY && one_session)
	{
		put_off_session(first_session, now_ms);
		return true;
	}
	if (batch->count == 1)
	{
		row_refused(QUEUE_AT(batch->rows[0]));
		row_done(QUEUE_AT(batch->rows[0]));
		return true;
	}
	part.rows = palloc(batch->count * sizeof(int));
	if (one_session)
	{
		for (int i = 0; i < batch->count; i++)
		{
			part.rows[0] = batch->rows[i];
			part.count = 1;
			if (put_off_find(first_session) != NULL)
				break;
			if (!write_batch(&part, now_ms))
			{
				pfree(part.rows);
				return false;
			}
		}
		pfree(part.rows);
		return true;
	}
	for (int i = 0; i < batch->count; i++)
	{
		QueuedActivity *row = QUEUE_AT(batch->rows[i]);

		/* each session once, at its first row, with all of its rows */
		if (row->done || put_off_find(row->session_id) != NULL)
			continue;
		part.count = 0;
		for (int j = i; j < batch->count; j++)
			if (strcmp(QUEUE_AT(batch->rows[j])->session_id, row->session_id) == 0)
				part.rows[part.count++] = batch->rows[j];
		if (!write_batch(&part, now_ms))
		{
			pfree(part.rows);
			return false;
		}
	}
	pfree(part.rows);
	return true;
}

/* The next batch: the oldest ready rows, up to FLUSH_BATCH_ROWS. */
static void
next_batch(FlushBatch *batch)
{
	batch->count = 0;
	for (int i = 0; i < queue_count && batch->count < FLUSH_BATCH_ROWS; i++)
	{
		QueuedActivity *row = QUEUE_AT(i);

		if (!row->done && !row->put_off && put_off_find(row->session_id) == NULL)
			batch->rows[batch->count++] = i;
	}
}

/* A Postgres array literal of one column of the batch's rows (malloc'd). */
static char *
array_literal(FlushBatch *batch, const char *(*field) (QueuedActivity *))
{
	size_t		capacity = 64,
				len = 0;
	char	   *literal = malloc(capacity);

	for (int i = 0; literal && i < batch->count; i++)
	{
		const char *value = field(QUEUE_AT(batch->rows[i]));
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
		if (batch->count == 0)
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
	FlushBatch	batch = {remote_rows, remote_in_flight};
	DbResult	outcome = result == NULL ? DB_FAILED :
		PQresultStatus(result) == PGRES_TUPLES_OK ? DB_OK :
		db_classify_sqlstate(PQresultErrorField(result, PG_DIAG_SQLSTATE));

	remote_in_flight = 0;
	if (outcome == DB_OK && PQntuples(result) == batch.count)
	{
		for (int i = 0; i < batch.count; i++)
			strlcpy(QUEUE_AT(batch.rows[i])->id, PQgetvalue(result, i, 0), PRESENCE_UUID_LEN + 1);
		batch_committed(&batch);
		remote_isolate = Max(remote_isolate - batch.count, 0);
	}
	else if (outcome != DB_OK && outcome != DB_FAILED && outcome != DB_BUSY)
	{
		if (batch.count == 1)
		{
			row_refused(QUEUE_AT(batch.rows[0]));
			row_done(QUEUE_AT(batch.rows[0]));
			remote_isolate = Max(remote_isolate - 1, 0);
		}
		else
			remote_isolate = batch.count;
	}
	else
		retry_after_ms = presence_now_ms() + presence_log_flush_interval_ms;
	queue_settle();
}

/*
 * The standby's flush: the next batch goes to the primary, whose own
 * backend may wait for locks without stopping this loop; the answer
 * comes later.
 */
static bool
flush_to_primary(void)
{
	static const char *(*const columns[BATCH_COLUMNS]) (QueuedActivity *) = {
		field_session, field_user, field_type, field_details, field_ip, field_user_agent, field_created
	};
	FlushBatch	batch;
	char	   *params[BATCH_COLUMNS];
	bool		sent;

	if (remote_rows == NULL && (remote_rows = malloc(FLUSH_BATCH_ROWS * sizeof(int))) == NULL)
		return false;
	batch.rows = remote_rows;
	next_batch(&batch);
	if (remote_isolate > 0)
		batch.count = Min(batch.count, 1);
	for (int i = 0; i < BATCH_COLUMNS; i++)
		params[i] = array_literal(&batch, columns[i]);
	sent = params[BATCH_COLUMNS - 1] != NULL &&
		primary_link_send("SELECT id::text FROM presence.log_activity_batch($1::text[], $2::uuid[], $3::text[],"
						  " $4::jsonb[], $5::inet[], $6::text[], $7::timestamptz[]) AS id",
						  BATCH_COLUMNS, (const char *const *) params, remote_flush_done, NULL);
	for (int i = 0; i < BATCH_COLUMNS; i++)
		free(params[i]);
	if (sent)
		remote_in_flight = batch.count;
	return sent;
}

/*
 * Writes the oldest ready rows, one statement's worth, so a long queue
 * is written over several loop passes with clients served in between.
 * Runs in the worker's main loop, never inside a library callback, at
 * the end of a pass when activity_flush_due().  Returns false when the
 * database could not take the rows; they stay queued and the next
 * attempt waits a flush interval.  Rows of a session that is put off
 * stay queued and are not a failure.
 */
bool
activity_flush(void)
{
	int64		now_ms = presence_now_ms();
	FlushBatch	batch;
	bool		written = true;
	bool		full;

	ack_waiting = false;
	if (primary_link_needed())
		return flush_to_primary();
	batch.rows = palloc(Max(Min(queue_count, FLUSH_BATCH_ROWS), 1) * sizeof(int));
	next_batch(&batch);
	full = batch.count == FLUSH_BATCH_ROWS;
	flush_in_progress = true;
	if (batch.count > 0)
		written = write_batch(&batch, now_ms);
	flush_in_progress = false;
	pfree(batch.rows);
	if (!written)
		retry_after_ms = now_ms + presence_log_flush_interval_ms;
	queue_settle();
	/* more ready rows than one statement takes: the next pass goes on */
	ack_waiting |= written && full && queue_ready > 0;
	return written;
}
