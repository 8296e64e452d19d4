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
 * On a hot standby the same statement goes to the primary
 * (db_write.c), asynchronously: the rows stay queued, and the refs
 * unacknowledged, until the primary has committed them.  A standby
 * cannot split a batch within one flush, so it narrows the next one
 * instead (remote_scope), to one session or one row.
 *
 * What a written or refused row means to clients is not decided here:
 * the ActivityHandlers the worker gave (requests.c) are told.
 *
 * The queue is bounded in rows (presence.max_pending_activity) and bytes
 * (presence.max_pending_activity_memory): past either, new activity is
 * refused with "unavailable", never dropped silently.
 *-------------------------------------------------------------------------
 */
#include "presence.h"

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "storage/lmgr.h"
#include "utils/fmgroids.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/uuid.h"
#include "pgtime.h"

#include "activity.h"
#include "audit_chain.h"
#include "clock.h"
#include "db_write.h"
#include "growable.h"
#include "shmem.h"

/* Most rows one statement carries; a longer queue takes several. */
#define FLUSH_BATCH_ROWS 5000
#define BATCH_COLUMNS DB_STATEMENT_MAX_PARAMS
/*
 * How soon a put-off session is tried again: soon, so that its rows
 * follow the lock holder's closely (another worker may write the same
 * session meanwhile, and the chain is in commit order).
 */
#define PUT_OFF_RETRY_MS 100

typedef struct QueuedActivity
{
	char		session_id[PRESENCE_SESSION_ID_MAX + 1];
	char		user_id[PRESENCE_UUID_LEN + 1];	/* "" for system rows */
	char		activity_type[PRESENCE_ACTIVITY_TYPE_MAX + 1];
	char	   *details;		/* JSON object text, malloc'd, or NULL */
	char		ip[CONNECTION_IP_MAX + 1];
	char		user_agent[CONNECTION_USER_AGENT_MAX + 1];
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
	bool		tables_busy;	/* a table lock was not free: nothing was tried */
} FlushBatch;

/* Which ready rows the next batch takes: all, one session's, or one. */
typedef enum BatchScope
{
	BATCH_ALL,
	BATCH_ONE_SESSION,
	BATCH_ONE_ROW
} BatchScope;

/*
 * The queue is a ring, oldest first.  Rows leave it from the head only,
 * so rows written behind a put-off row are holes (done) until the head
 * passes them; the ring is compacted when holes are most of it.
 */
static const ActivityHandlers *activity_handlers;
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
static BatchScope remote_scope = BATCH_ALL;	/* narrowed after a batch failed */
static int	remote_scope_rows;	/* rows still to send narrowed */

#define QUEUE_AT(i) (&queue[(queue_head + (i)) % queue_capacity])

/* Who hears of rows once they are written or refused. */
void
activity_init(const ActivityHandlers *handlers)
{
	activity_handlers = handlers;
}

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

/* Puts a session's rows off for a while (PUT_OFF_RETRY_MS). */
static void
put_off_session(const char *session_id, int64 now_ms)
{
	PutOffSession *entry = put_off_find(session_id);

	if (entry == NULL)
	{
		PutOffSession *grown = growable_reserve(put_off, &put_off_capacity, put_off_count,
												sizeof(PutOffSession), 8);

		/* without room the session simply stays ready and is tried again */
		if (grown == NULL)
			return;
		put_off = grown;
		entry = &put_off[put_off_count++];
		strlcpy(entry->session_id, session_id, sizeof(entry->session_id));
	}
	entry->retry_at_ms = now_ms + Min(presence_log_flush_interval_ms, PUT_OFF_RETRY_MS);
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

	/* a batch at the primary: its answer wakes the loop */
	if (queue_ready == 0 || remote_in_flight > 0)
		return next;
	if (ack_waiting || queue_ready >= presence_log_flush_max)
		return Min(next, retry_after_ms);
	return Min(next, Max(retry_after_ms, oldest_ready_ms + presence_log_flush_interval_ms));
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

/* The batch's columns, in DB_LOG_ACTIVITY_BATCH's order. */
static const char *(*const batch_columns[BATCH_COLUMNS]) (QueuedActivity *) = {
	field_session, field_user, field_type, field_details, field_ip, field_user_agent, field_created
};

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

static void
batch_params_free(const char **params)
{
	for (int i = 0; i < BATCH_COLUMNS; i++)
	{
		free((char *) params[i]);
		params[i] = NULL;
	}
}

/* The statement's parameters for the batch's rows; false when out of memory. */
static bool
batch_params(FlushBatch *batch, const char **params)
{
	bool		complete = true;

	for (int i = 0; i < BATCH_COLUMNS; i++)
		complete &= (params[i] = array_literal(batch, batch_columns[i])) != NULL;
	if (!complete)
		batch_params_free(params);
	return complete;
}

/* Whether a table of ours can be locked in mode now. */
static bool
table_free(const char *name, LOCKMODE mode)
{
	Oid			relid = get_relname_relid(name, get_namespace_oid("presence", false));

	return OidIsValid(relid) && ConditionalLockRelationOid(relid, mode);
}

/* A session of the batch being locked, and what became of it. */
typedef enum SessionLock
{
	SESSION_UNKNOWN,			/* not found (yet): its rows stay for the insert to refuse */
	SESSION_LOCKED,
	SESSION_BUSY				/* another transaction holds it: put off */
} SessionLock;

typedef struct BatchSession
{
	char		session_id[PRESENCE_SESSION_ID_MAX + 1];	/* hash key */
	SessionLock state;
} BatchSession;

/* A batch on its way to the database, and how it came back. */
typedef struct BatchWrite
{
	FlushBatch *batch;
	DbResult	result;
} BatchWrite;

/*
 * Before a primary's insert, in its transaction (a DbBeforeWrite): takes,
 * if they are free now, everything the insert would otherwise wait for:
 * the two tables (not free during CREATE INDEX, LOCK TABLE and the like:
 * then nothing is tried and the whole flush waits), the row of every
 * session of the batch (an application's SELECT ... FOR UPDATE) and its
 * chain lock (an application's uncommitted activity), in one order, by
 * session uuid.  The rows of the sessions that are not free leave the
 * batch and are put off, and the parameters are made again for the rows
 * left; rows of a session that does not exist stay, for the insert to
 * refuse.
 */
static bool
lock_batch_sessions(const char **params, void *arg)
{
	static SPIPlanPtr lock_plan = NULL;
	static SPIPlanPtr exists_plan = NULL;
	BatchWrite *write = arg;
	FlushBatch *batch = write->batch;
	HASHCTL		ctl = {.keysize = PRESENCE_SESSION_ID_MAX + 1, .entrysize = sizeof(BatchSession),
	.hcxt = CurrentMemoryContext};
	HTAB	   *sessions = hash_create("presence batch sessions", 64, &ctl,
									   HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	Oid			types[1] = {TEXTARRAYOID};
	/* typed once here: a text parameter cast in the query would be parsed again for every row */
	Datum		args[1] = {OidInputFunctionCall(F_ARRAY_IN, (char *) params[0], TEXTOID, -1)};
	int			kept = 0;

	if (!table_free("activity_log", RowExclusiveLock) ||
		!table_free("collaboration_sessions", RowShareLock))
	{
		batch->tables_busy = true;
		batch->count = 0;
		return false;
	}
	for (int i = 0; i < batch->count; i++)
	{
		bool		found;
		BatchSession *session = hash_search(sessions, QUEUE_AT(batch->rows[i])->session_id, HASH_ENTER, &found);

		if (!found)
			session->state = SESSION_UNKNOWN;
	}
	db_execute(db_prepared(&lock_plan,
						   "SELECT s.id, s.session_id FROM presence.collaboration_sessions s"
						   " WHERE s.session_id = ANY ($1) ORDER BY s.id"
						   " FOR KEY SHARE SKIP LOCKED", 1, types),
			   args, NULL, false);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		Datum		id = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);
		BatchSession *session = hash_search(sessions, SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2),
											HASH_FIND, NULL);

		if (session == NULL || session->state != SESSION_UNKNOWN)
			continue;
		session->state = audit_chain_try_lock_session(DatumGetUUIDP(id)) ? SESSION_LOCKED : SESSION_BUSY;
	}
	/* sessions the first query skipped exist, but someone holds their row */
	if ((long) SPI_processed < hash_get_num_entries(sessions))
	{
		db_execute(db_prepared(&exists_plan,
							   "SELECT s.session_id FROM presence.collaboration_sessions s"
							   " WHERE s.session_id = ANY ($1)", 1, types),
				   args, NULL, true);
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			BatchSession *session = hash_search(sessions, SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1),
												HASH_FIND, NULL);

			if (session && session->state == SESSION_UNKNOWN)
				session->state = SESSION_BUSY;
		}
	}
	for (int i = 0; i < batch->count; i++)
	{
		BatchSession *session = hash_search(sessions, QUEUE_AT(batch->rows[i])->session_id, HASH_FIND, NULL);

		if (session->state == SESSION_BUSY)
			put_off_session(session->session_id, presence_now_ms());
		else
			batch->rows[kept++] = batch->rows[i];
	}
	if (kept == batch->count)
		return true;
	batch->count = kept;
	batch_params_free(params);
	if (kept > 0 && !batch_params(batch, params))
		elog(ERROR, "presence: out of memory");
	return kept > 0;
}

/* What the rows' handlers see of them. */
static void
row_view(QueuedActivity *row, ActivityRow *view)
{
	view->id = row->id;
	view->session_id = row->session_id;
	view->user_id = row->user_id[0] ? row->user_id : NULL;
	view->activity_type = row->activity_type;
	view->details = row->details;
	view->created_ms = row->created_ms;
	view->announce = row->announce;
}

/* After commit: the handlers ack the requester and announce the row. */
static void
row_committed(QueuedActivity *row)
{
	ActivityRow view;

	row_view(row, &view);
	activity_handlers->committed(&view, row->requester, row->ref);
}

/* A row the database refused: logged, the handlers tell the requester. */
static void
row_refused(QueuedActivity *row)
{
	ActivityRow view;

	ereport(WARNING,
			(errmsg("presence: dropped activity \"%s\" for session \"%s\": the database refused it",
					row->activity_type, row->session_id)));
	row_view(row, &view);
	activity_handlers->refused(&view, row->requester, row->ref);
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

/*
 * The database's answer to a batch: DB_OK with one id per row (its rows
 * are committed), or why not.  A DB_OK with no rows at all is a batch
 * the lock step emptied.
 */
static DbResult
batch_answered(FlushBatch *batch, const DbReply *reply)
{
	if (reply->result != DB_OK)
		return reply->result;
	if (reply->rows != batch->count)
	{
		ereport(WARNING,
				(errmsg("presence: activity insert returned %d rows for %d", reply->rows, batch->count)));
		return DB_FAILED;
	}
	for (int i = 0; i < batch->count; i++)
	{
		QueuedActivity *row = QUEUE_AT(batch->rows[i]);
		const char *id = db_reply_value(reply, i);

		strlcpy(row->id, id ? id : "", sizeof(row->id));
		row_committed(row);
		row_done(row);
	}
	presence_count(CTR_ACTIVITY_WRITTEN, batch->count);
	return DB_OK;
}

static void
local_batch_answered(const DbReply *reply, void *arg)
{
	BatchWrite *write = arg;

	write->result = batch_answered(write->batch, reply);
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

/* What became of a batch, and whether the flush may go on. */
typedef enum WriteOutcome
{
	WRITE_DONE,					/* written, refused or partly put off: go on */
	WRITE_WAITS,				/* something must be waited for: end this flush */
	WRITE_FAILED				/* the database failed: everything waits */
} WriteOutcome;

static WriteOutcome write_batch(FlushBatch *batch, int64 now_ms);

/*
 * Writes a batch part by part: by session when it spans several, else
 * row by row.  The first part that must wait ends the split, so a flush
 * costs at most about two lock timeouts whatever holds the database; the
 * parts not tried stay ready for the next pass.
 */
static WriteOutcome
write_parts(FlushBatch *batch, bool by_session, int64 now_ms)
{
	FlushBatch	part = {palloc(batch->count * sizeof(int)), 0, false};
	WriteOutcome outcome = WRITE_DONE;

	for (int i = 0; i < batch->count && outcome == WRITE_DONE; i++)
	{
		QueuedActivity *row = QUEUE_AT(batch->rows[i]);

		/* by session: each once, at its first row, with all of its rows */
		if (row->done || put_off_find(row->session_id) != NULL)
			continue;
		part.count = 0;
		part.tables_busy = false;
		for (int j = i; j < (by_session ? batch->count : i + 1); j++)
			if (strcmp(QUEUE_AT(batch->rows[j])->session_id, row->session_id) == 0)
				part.rows[part.count++] = batch->rows[j];
		outcome = write_batch(&part, now_ms);
	}
	pfree(part.rows);
	return outcome;
}

static bool
batch_in_one_session(FlushBatch *batch)
{
	for (int i = 1; i < batch->count; i++)
		if (strcmp(QUEUE_AT(batch->rows[i])->session_id, QUEUE_AT(batch->rows[0])->session_id) != 0)
			return false;
	return true;
}

/*
 * A primary writes a batch, splitting it when it cannot be written
 * whole: by session when it spans several (a held lock or a refused row
 * is then confined to its session), else row by row when the database
 * refused it, down to the one row that is dropped.  A session that
 * cannot be written in time is put off.
 */
static WriteOutcome
write_batch(FlushBatch *batch, int64 now_ms)
{
	const char *params[BATCH_COLUMNS];
	BatchWrite	write = {batch, DB_FAILED};
	bool		one_session;

	if (!batch_params(batch, params))
		return WRITE_FAILED;
	/* on a primary the answer comes before db_submit returns */
	if (!db_submit(DB_LOG_ACTIVITY_BATCH, params, lock_batch_sessions, local_batch_answered, &write))
		write.result = DB_FAILED;
	batch_params_free(params);
	if (write.result == DB_OK)
		return batch->tables_busy ? WRITE_WAITS : WRITE_DONE;
	if (write.result == DB_FAILED)
		return WRITE_FAILED;
	one_session = batch_in_one_session(batch);
	if (write.result == DB_BUSY && one_session)
	{
		put_off_session(QUEUE_AT(batch->rows[0])->session_id, now_ms);
		return WRITE_WAITS;
	}
	if (batch->count == 1)
	{
		row_refused(QUEUE_AT(batch->rows[0]));
		row_done(QUEUE_AT(batch->rows[0]));
		return WRITE_DONE;
	}
	return write_parts(batch, !one_session, now_ms);
}

/*
 * The next batch: the oldest ready rows, up to FLUSH_BATCH_ROWS; with a
 * narrower scope only those of the oldest ready row's session, or only
 * that row.
 */
static void
next_batch(FlushBatch *batch, BatchScope scope)
{
	const char *session_id = NULL;
	int			limit = scope == BATCH_ONE_ROW ? 1 : FLUSH_BATCH_ROWS;

	batch->count = 0;
	batch->tables_busy = false;
	for (int i = 0; i < queue_count && batch->count < limit; i++)
	{
		QueuedActivity *row = QUEUE_AT(i);

		if (row->done || row->put_off || put_off_find(row->session_id) != NULL)
			continue;
		if (session_id == NULL)
			session_id = row->session_id;
		else if (scope == BATCH_ONE_SESSION && strcmp(row->session_id, session_id) != 0)
			continue;
		batch->rows[batch->count++] = i;
	}
}

/*
 * The primary answered a standby's batch.  A batch it could not write in
 * time is narrowed to one session, and a session that cannot be written
 * in time is put off; a batch it refused is narrowed to one row, down to
 * the row that is dropped.  A refusal of privileges is no verdict on the
 * rows (the link's role lacks grants): they wait, like every row after a
 * failure.
 */
static void
remote_batch_answered(const DbReply *reply, void *context)
{
	FlushBatch	batch = {remote_rows, remote_in_flight, false};
	DbResult	outcome = batch_answered(&batch, reply);
	bool		one_session = batch_in_one_session(&batch);

	remote_in_flight = 0;
	if (outcome == DB_OK)
		remote_scope_rows -= batch.count;
	else if (outcome == DB_BUSY && one_session)
	{
		put_off_session(QUEUE_AT(batch.rows[0])->session_id, presence_now_ms());
		remote_scope_rows -= batch.count;
	}
	else if (outcome == DB_BUSY)
	{
		remote_scope = BATCH_ONE_SESSION;
		remote_scope_rows = batch.count;
	}
	else if (outcome == DB_INVALID || outcome == DB_NOT_FOUND || outcome == DB_CONFLICT)
	{
		if (batch.count == 1)
		{
			row_refused(QUEUE_AT(batch.rows[0]));
			row_done(QUEUE_AT(batch.rows[0]));
			remote_scope_rows--;
		}
		else
		{
			remote_scope = BATCH_ONE_ROW;
			remote_scope_rows = batch.count;
		}
	}
	else
		retry_after_ms = presence_now_ms() + presence_log_flush_interval_ms;
	if (remote_scope_rows <= 0)
		remote_scope = BATCH_ALL;
	queue_settle();
}

/*
 * A standby's flush: the next batch goes to the primary, whose own
 * backend waits for locks at most the lock timeout (primary_link.c)
 * without stopping this loop; the answer comes later.
 */
static bool
flush_to_primary(void)
{
	FlushBatch	batch;
	const char *params[BATCH_COLUMNS];
	bool		sent;

	if (remote_rows == NULL && (remote_rows = malloc(FLUSH_BATCH_ROWS * sizeof(int))) == NULL)
		return false;
	batch.rows = remote_rows;
	next_batch(&batch, remote_scope);
	if (!batch_params(&batch, params))
		return false;
	/* before: had the server just been promoted, the answer comes at once */
	remote_in_flight = batch.count;
	sent = db_submit(DB_LOG_ACTIVITY_BATCH, params, NULL, remote_batch_answered, NULL);
	batch_params_free(params);
	if (!sent)
		remote_in_flight = 0;
	return sent;
}

/*
 * Writes the oldest ready rows, one statement's worth, so a long queue
 * is written over several loop passes with clients served in between.
 * Runs in the worker's main loop, never inside a library callback, at
 * the end of a pass when activity_flush_due().  Returns false when the
 * database could not take the rows; they stay queued and the next
 * attempt waits a flush interval.  Rows of a session that is put off,
 * or that wait for a table lock, stay queued and are not a failure.
 */
bool
activity_flush(void)
{
	int64		now_ms = presence_now_ms();
	FlushBatch	batch;
	WriteOutcome outcome = WRITE_DONE;
	bool		full;

	ack_waiting = false;
	if (db_writes_go_to_primary())
		return flush_to_primary();
	batch.rows = palloc(Max(Min(queue_count, FLUSH_BATCH_ROWS), 1) * sizeof(int));
	next_batch(&batch, BATCH_ALL);
	full = batch.count == FLUSH_BATCH_ROWS;
	flush_in_progress = true;
	if (batch.count > 0)
		outcome = write_batch(&batch, now_ms);
	flush_in_progress = false;
	if (outcome == WRITE_FAILED)
		retry_after_ms = now_ms + presence_log_flush_interval_ms;
	else if (batch.tables_busy)
		retry_after_ms = now_ms + Min(presence_log_flush_interval_ms, PUT_OFF_RETRY_MS);
	pfree(batch.rows);
	queue_settle();
	/* more ready rows than one statement takes: the next pass goes on */
	ack_waiting |= outcome == WRITE_DONE && full && queue_ready > 0;
	return outcome != WRITE_FAILED;
}
