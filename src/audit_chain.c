/*-------------------------------------------------------------------------
 * audit_chain.c
 *	  The tamper-evident activity log: a SHA-256 hash chain per session,
 *	  the append-only guard, chain verification and the one sanctioned
 *	  way to delete (purge with an anchor).
 *
 * Row n of a session stores chain_seq = n, prev_hash = row_hash of row n-1
 * (32 zero bytes for the first row, or the anchor left by a purge) and
 *
 *	 row_hash = SHA-256(prev_hash || F(chain_seq) || F(id) || F(session_id)
 *						|| F(user_id) || F(activity_type) || F(details)
 *						|| F(ip_address) || F(user_agent) || F(created_at))
 *
 * where F(x) is x's text output as 4-byte big-endian length + bytes
 * (0xFFFFFFFF for NULL) and created_at is microseconds since the Unix
 * epoch in decimal.  docs/sql-reference.md gives the same recipe so an
 * auditor can check an export without trusting this code.
 *
 * Appends to one session are serialised by a transaction-level lock on
 * the session, so concurrent writers cannot fork the chain.  Within a
 * transaction the last link of each session is cached: a bulk insert of
 * many rows then costs one index probe per session, not per row.  The
 * cache is dropped at every transaction end, and a subtransaction's abort
 * drops the links that subtransaction set: exactly when the lock or the
 * rows they describe may be gone.
 *-------------------------------------------------------------------------
 */
#include "presence.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "common/cryptohash.h"
#include "common/sha2.h"
#include "datatype/timestamp.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "storage/lock.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/uuid.h"

#include "audit_chain.h"
#include "audit_checkpoint.h"

/* Random bytes drawn at a time for activity ids (512 ids of 8 bytes). */
#define ID_POOL_BYTES 4096
#define ID_RANDOM_BYTES 8

/* Distinguishes our per-session chain locks from user advisory locks. */
#define CHAIN_LOCK_FIELD4 0x5052

/* Columns the hash covers, in hashing order. */
static const char *const chain_hashed_columns[AUDIT_CHAIN_FIELDS] = {
	"id", "session_id", "user_id", "activity_type", "details",
	"ip_address", "user_agent"
};

typedef struct ChainLink
{
	pg_uuid_t	session;		/* hash key */
	int64		seq;
	uint8		hash[PG_SHA256_DIGEST_LENGTH];
	SubTransactionId subid;		/* the subtransaction that last set seq and hash */
} ChainLink;

static HTAB *chain_link_cache = NULL;
static bool chain_callbacks_registered = false;
static bool purge_in_progress = false;
static SPIPlanPtr last_link_plan = NULL;
static uint8 id_pool[ID_POOL_BYTES];
static int	id_pool_used = ID_POOL_BYTES;
static int	id_pool_pid = 0;

static void chain_hash(const uint8 *prev_hash, int64 seq, const char *const *fields,
					   const TimestampTz *created_at, uint8 *result);
static void audit_chain_row_hash(HeapTuple tuple, TupleDesc tupdesc, int64 seq,
								 const uint8 *prev_hash, uint8 *result);
static void chain_forget_links(void);
static void chain_xact_callback(XactEvent event, void *arg);
static void chain_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
								   SubTransactionId parentSubid, void *arg);
static bool chain_link_supplied(HeapTuple tuple, TupleDesc tupdesc);
static void chain_lock_session(const pg_uuid_t *session);
static void chain_last_link(const pg_uuid_t *session, int64 *seq, uint8 *hash);
static void hash_text_field(pg_cryptohash_ctx *ctx, const char *value);
static int	column_number(TupleDesc tupdesc, const char *name);

/*
 * Computes a row hash from the row's text: fields are the text of the
 * hashed columns in chain_hashed_columns' order (NULL for SQL NULL),
 * created_at NULL for a NULL timestamp.  Every writer and the verifier
 * come here, so they can never disagree on the recipe.
 */
static void
chain_hash(const uint8 *prev_hash, int64 seq, const char *const *fields,
		   const TimestampTz *created_at, uint8 *result)
{
	pg_cryptohash_ctx *ctx = pg_cryptohash_create(PG_SHA256);
	char		number[32];

	if (pg_cryptohash_init(ctx) < 0 ||
		pg_cryptohash_update(ctx, prev_hash, PG_SHA256_DIGEST_LENGTH) < 0)
		elog(ERROR, "presence: could not compute SHA-256: %s", pg_cryptohash_error(ctx));

	snprintf(number, sizeof(number), INT64_FORMAT, seq);
	hash_text_field(ctx, number);
	for (int i = 0; i < AUDIT_CHAIN_FIELDS; i++)
		hash_text_field(ctx, fields[i]);

	if (created_at == NULL)
		hash_text_field(ctx, NULL);
	else
	{
		int64		unix_us = *created_at +
			(POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY;

		snprintf(number, sizeof(number), INT64_FORMAT, unix_us);
		hash_text_field(ctx, number);
	}

	if (pg_cryptohash_final(ctx, result, PG_SHA256_DIGEST_LENGTH) < 0)
		elog(ERROR, "presence: could not compute SHA-256: %s", pg_cryptohash_error(ctx));
	pg_cryptohash_free(ctx);
}

/*
 * Computes the row hash of an activity row as stored (or about to be
 * stored) in tuple: its columns' text as their output functions give it.
 */
static void
audit_chain_row_hash(HeapTuple tuple, TupleDesc tupdesc, int64 seq,
					 const uint8 *prev_hash, uint8 *result)
{
	const char *fields[AUDIT_CHAIN_FIELDS];
	bool		isnull;
	Datum		created_at;
	TimestampTz stamp;

	for (int i = 0; i < AUDIT_CHAIN_FIELDS; i++)
		fields[i] = SPI_getvalue(tuple, tupdesc, column_number(tupdesc, chain_hashed_columns[i]));
	created_at = heap_getattr(tuple, column_number(tupdesc, "created_at"), tupdesc, &isnull);
	stamp = isnull ? 0 : DatumGetTimestampTz(created_at);
	chain_hash(prev_hash, seq, fields, isnull ? NULL : &stamp, result);
}

/* Feeds one length-prefixed field into the hash; NULL has its own marker. */
static void
hash_text_field(pg_cryptohash_ctx *ctx, const char *value)
{
	uint32		len = value ? (uint32) strlen(value) : 0xFFFFFFFF;
	uint8		prefix[4] = {len >> 24, len >> 16, len >> 8, len};

	if (pg_cryptohash_update(ctx, prefix, sizeof(prefix)) < 0 ||
		(value && pg_cryptohash_update(ctx, (const uint8 *) value, len) < 0))
		elog(ERROR, "presence: could not compute SHA-256: %s", pg_cryptohash_error(ctx));
}

/* A bytea of len bytes; the checkpoints store hashes and keys with it too. */
bytea *
bytea_from_bytes(const uint8 *bytes, size_t len)
{
	bytea	   *result = palloc(VARHDRSZ + len);

	SET_VARSIZE(result, VARHDRSZ + len);
	memcpy(VARDATA(result), bytes, len);
	return result;
}

static int
column_number(TupleDesc tupdesc, const char *name)
{
	int			attnum = SPI_fnumber(tupdesc, name);

	if (attnum <= 0)
		elog(ERROR, "presence: activity row has no column \"%s\"", name);
	return attnum;
}

/*
 * _activity_id() -> uuid: a time-ordered UUID, version 7 (RFC 9562), the
 * default of activity_log.id.  48 bits of Unix time in milliseconds, then
 * 12 bits of the millisecond's fraction (RFC 9562's method 3), then 62
 * random bits; within a process every id is greater than the one before
 * (the fraction is stepped when the clock has not moved).  The primary
 * key's B-tree then grows at its right edge, as a bigserial's would: a
 * random id lands on a random leaf page, which must be read, split half
 * empty and logged whole after every checkpoint, and that was the costliest
 * part of an insert into the log.  The time an id shows is no secret: the
 * row's created_at says as much.
 *
 * The random bits come from the strong random source gen_random_uuid()
 * uses, drawn ID_POOL_BYTES at a time: gen_random_uuid() asks OpenSSL for
 * 16 bytes a call, and OpenSSL checks getpid() on every request, a system
 * call that costs a tenth of a bulk insert's time per row.  The pool is
 * refilled after a fork, so no two processes share bytes.
 */
PG_FUNCTION_INFO_V1(presence_activity_id);
Datum
presence_activity_id(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *id = palloc(sizeof(pg_uuid_t));

	audit_chain_new_id(id);
	PG_RETURN_UUID_P(id);
}

/* The next activity id of this process, as _activity_id() describes. */
void
audit_chain_new_id(pg_uuid_t *id)
{
	static uint64 last_stamp = 0;	/* ms << 12 | fraction of the last id */
	int64		unix_us = GetCurrentTimestamp() +
		(POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY;
	uint64		stamp = ((uint64) (unix_us / 1000) << 12) | (uint64) ((unix_us % 1000) * 4096 / 1000);

	if (id_pool_used + ID_RANDOM_BYTES > ID_POOL_BYTES || id_pool_pid != MyProcPid)
	{
		if (!pg_strong_random(id_pool, ID_POOL_BYTES))
			ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR),
							errmsg("presence: could not generate random values")));
		id_pool_used = 0;
		id_pool_pid = MyProcPid;
	}
	if (stamp <= last_stamp)
		stamp = last_stamp + 1;
	last_stamp = stamp;

	for (int i = 0; i < 6; i++)
		id->data[i] = (uint8) (stamp >> (12 + 8 * (5 - i)));
	id->data[6] = 0x70 | (uint8) ((stamp >> 8) & 0x0f);	/* version 7 */
	id->data[7] = (uint8) stamp;
	memcpy(id->data + 8, id_pool + id_pool_used, ID_RANDOM_BYTES);
	id_pool_used += ID_RANDOM_BYTES;
	id->data[8] = (id->data[8] & 0x3f) | 0x80;	/* RFC 9562 variant */
}

/*
 * BEFORE INSERT trigger on presence.activity_log: assigns the next link of
 * the session's chain.  Whatever chain values an ordinary caller supplied
 * are overwritten; the chain is not the caller's to choose.
 */
PG_FUNCTION_INFO_V1(presence_activity_chain);
Datum
presence_activity_chain(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	TupleDesc	tupdesc;
	HeapTuple	tuple;
	bool		isnull;
	pg_uuid_t	session;
	uint8		prev_hash[PG_SHA256_DIGEST_LENGTH];
	uint8		row_hash[PG_SHA256_DIGEST_LENGTH];
	int			columns[3];
	Datum		values[3];
	bool		nulls[3] = {false, false, false};
	Datum		session_datum;
	const char *fields[AUDIT_CHAIN_FIELDS];
	Datum		created_at;
	TimestampTz stamp;
	int64		seq;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) || !TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
		elog(ERROR, "presence: _activity_chain must be a BEFORE INSERT FOR EACH ROW trigger");

	tupdesc = RelationGetDescr(trigdata->tg_relation);
	tuple = trigdata->tg_trigtuple;
	session_datum = heap_getattr(tuple, column_number(tupdesc, "session_id"), tupdesc, &isnull);
	if (isnull)
		ereport(ERROR, (errcode(ERRCODE_NOT_NULL_VIOLATION),
						errmsg("presence: activity needs a session")));
	memcpy(&session, DatumGetUUIDP(session_datum), sizeof(session));

	/*
	 * A superuser's row that brings its whole link keeps it: that is a
	 * restore, pg_dump loading the table after CREATE EXTENSION created
	 * this trigger, and recomputing would re-chain the log in the dump's
	 * order and change every hash an auditor recorded.  verify_audit_chain
	 * checks such rows like any other.  The session's cached link may no
	 * longer be its last, so it goes.
	 */
	if (chain_link_supplied(tuple, tupdesc) && superuser())
	{
		chain_lock_session(&session);
		if (chain_link_cache != NULL)
			hash_search(chain_link_cache, &session, HASH_REMOVE, NULL);
		return PointerGetDatum(tuple);
	}

	for (int i = 0; i < AUDIT_CHAIN_FIELDS; i++)
		fields[i] = SPI_getvalue(tuple, tupdesc, column_number(tupdesc, chain_hashed_columns[i]));
	created_at = heap_getattr(tuple, column_number(tupdesc, "created_at"), tupdesc, &isnull);
	stamp = isnull ? 0 : DatumGetTimestampTz(created_at);
	audit_chain_append(&session, fields, isnull ? NULL : &stamp, &seq, prev_hash, row_hash);

	columns[0] = column_number(tupdesc, "chain_seq");
	values[0] = Int64GetDatum(seq);
	columns[1] = column_number(tupdesc, "prev_hash");
	values[1] = PointerGetDatum(bytea_from_bytes(prev_hash, sizeof(prev_hash)));
	columns[2] = column_number(tupdesc, "row_hash");
	values[2] = PointerGetDatum(bytea_from_bytes(row_hash, sizeof(row_hash)));

	return PointerGetDatum(heap_modify_tuple_by_cols(tuple, tupdesc, 3, columns, values, nulls));
}

/*
 * The next link of a session's chain, for a row whose hashed text is
 * fields and created_at (as for chain_hash): takes the session's chain
 * lock the first time in a transaction, reads its last link then (after
 * that from the cache), and returns the row's chain_seq, prev_hash and
 * row_hash, which the caller must write in this transaction.  The insert
 * trigger and log_activity_batch both append through here, so they share
 * one cache and one lock, whichever order they run in.
 */
void
audit_chain_append(const pg_uuid_t *session, const char *const *fields,
				   const TimestampTz *created_at, int64 *seq, uint8 *prev_hash, uint8 *row_hash)
{
	ChainLink  *link;
	bool		found;

	if (!chain_callbacks_registered)
	{
		RegisterXactCallback(chain_xact_callback, NULL);
		RegisterSubXactCallback(chain_subxact_callback, NULL);
		chain_callbacks_registered = true;
	}
	if (chain_link_cache == NULL)
	{
		HASHCTL		ctl = {.keysize = sizeof(pg_uuid_t), .entrysize = sizeof(ChainLink),
		.hcxt = TopMemoryContext};

		chain_link_cache = hash_create("presence chain links", 64, &ctl,
									   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}

	link = hash_search(chain_link_cache, session, HASH_FIND, &found);
	if (!found)
	{
		int64		last_seq;
		uint8		hash[PG_SHA256_DIGEST_LENGTH];

		chain_lock_session(session);
		chain_last_link(session, &last_seq, hash);
		link = hash_search(chain_link_cache, session, HASH_ENTER, &found);
		link->seq = last_seq;
		memcpy(link->hash, hash, sizeof(hash));
	}

	memcpy(prev_hash, link->hash, PG_SHA256_DIGEST_LENGTH);
	chain_hash(prev_hash, link->seq + 1, fields, created_at, row_hash);
	*seq = ++link->seq;
	memcpy(link->hash, row_hash, PG_SHA256_DIGEST_LENGTH);
	link->subid = GetCurrentSubTransactionId();
}

/* Whether a new row carries chain_seq, prev_hash and row_hash. */
static bool
chain_link_supplied(HeapTuple tuple, TupleDesc tupdesc)
{
	return !heap_attisnull(tuple, column_number(tupdesc, "chain_seq"), tupdesc) &&
		!heap_attisnull(tuple, column_number(tupdesc, "prev_hash"), tupdesc) &&
		!heap_attisnull(tuple, column_number(tupdesc, "row_hash"), tupdesc);
}

/* The advisory lock that serialises appends to one session's chain. */
static void
chain_lock_tag(const pg_uuid_t *session, LOCKTAG *tag)
{
	uint32		key1,
				key2;

	memcpy(&key1, session->data, sizeof(key1));
	memcpy(&key2, session->data + sizeof(key1), sizeof(key2));
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, key1, key2, CHAIN_LOCK_FIELD4);
}

/* Serialises appends to one session's chain until this transaction ends. */
static void
chain_lock_session(const pg_uuid_t *session)
{
	LOCKTAG		tag;

	chain_lock_tag(session, &tag);
	(void) LockAcquire(&tag, ExclusiveLock, false, false);
}

/*
 * Takes a session's chain lock for this transaction, waiting for it: what
 * the insert trigger does before it reads the chain's head.
 * log_activity_batch takes the locks of all its sessions this way before
 * it locks their rows, in the order a trigger-driven INSERT takes them
 * (chain lock, then the foreign-key check's row lock).
 */
void
audit_chain_lock_session(const pg_uuid_t *session)
{
	chain_lock_session(session);
}

/*
 * Takes a session's chain lock for this transaction if it is free now.
 * The ws workers lock every session of a batch this way before writing
 * it, so a session another transaction holds is put off instead of
 * stopping the worker's loop, and workers never wait on each other.
 */
bool
audit_chain_try_lock_session(const pg_uuid_t *session)
{
	LOCKTAG		tag;

	chain_lock_tag(session, &tag);
	return LockAcquire(&tag, ExclusiveLock, false, true) != LOCKACQUIRE_NOT_AVAIL;
}

/*
 * The head of a session's chain and the time it was the head: read under
 * the chain lock, so no append is halfway, and the lock let go at once
 * (unless this transaction held it already).  Holding it to the end of
 * the transaction would let whoever may sign a checkpoint, the auditor
 * role, stop every append to the chain by keeping a transaction open.
 */
void
audit_chain_head_at(const pg_uuid_t *session, int64 *seq, uint8 *hash, TimestampTz *at)
{
	LOCKTAG		tag;

	chain_lock_tag(session, &tag);
	(void) LockAcquire(&tag, ExclusiveLock, false, false);
	chain_last_link(session, seq, hash);
	*at = GetCurrentTimestamp();
	LockRelease(&tag, ExclusiveLock, false);
}

/*
 * The newest link of a session: its last row, else the anchor a purge
 * left, else the genesis link (seq 0, zero hash).
 */
static void
chain_last_link(const pg_uuid_t *session, int64 *seq, uint8 *hash)
{
	Oid			argtypes[1] = {UUIDOID};
	Datum		args[1] = {UUIDPGetDatum((pg_uuid_t *) session)};
	int			ret;

	/*
	 * The trigger runs under the inserting role's search_path: the
	 * operator is named, so one in a schema ahead of pg_catalog is not
	 * called (as that role).
	 */
	SPI_connect();
	if (last_link_plan == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare(
									   "SELECT chain_seq, row_hash FROM ("
									   " (SELECT chain_seq, row_hash FROM presence.activity_log"
									   "   WHERE session_id OPERATOR(pg_catalog.=) $1 ORDER BY chain_seq DESC LIMIT 1)"
									   " UNION ALL"
									   " (SELECT chain_seq, row_hash FROM presence.audit_chain_anchors"
									   "   WHERE session_id OPERATOR(pg_catalog.=) $1)) last_link"
									   " ORDER BY chain_seq DESC LIMIT 1",
									   1, argtypes);

		if (plan == NULL)
			elog(ERROR, "presence: could not prepare chain lookup: %s",
				 SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		last_link_plan = plan;
	}
	ret = SPI_execute_plan(last_link_plan, args, NULL, false, 1);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "presence: chain lookup failed: %s", SPI_result_code_string(ret));

	*seq = 0;
	memset(hash, 0, PG_SHA256_DIGEST_LENGTH);
	if (SPI_processed == 1)
	{
		bool		isnull;
		HeapTuple	row = SPI_tuptable->vals[0];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bytea	   *stored;

		*seq = DatumGetInt64(SPI_getbinval(row, desc, 1, &isnull));
		stored = DatumGetByteaPP(SPI_getbinval(row, desc, 2, &isnull));
		if (VARSIZE_ANY_EXHDR(stored) == PG_SHA256_DIGEST_LENGTH)
			memcpy(hash, VARDATA_ANY(stored), PG_SHA256_DIGEST_LENGTH);
		/* a malformed stored hash chains from zeros; verify reports that row */
	}
	SPI_finish();
}

static void
chain_forget_links(void)
{
	if (chain_link_cache != NULL)
	{
		hash_destroy(chain_link_cache);
		chain_link_cache = NULL;
	}
}

static void
chain_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			chain_forget_links();
			purge_in_progress = false;
			break;
		default:
			break;
	}
}

/*
 * A subtransaction's abort forgets the links it (or a subtransaction of
 * it: those have greater ids) set, and only those: their rows, and the
 * chain lock if it was taken there, are gone.  A link set before it
 * began still describes rows that stay, under a lock an enclosing
 * transaction holds.  Forgetting every link would be wrong as well as
 * slow: log_activity_batch holds links for up to BATCH_FLUSH_ROWS rows
 * it has not written yet, and a subtransaction that aborts while it
 * checks a row (a CHECK constraint calling a function with an EXCEPTION
 * block) would make the next row read the head from the table without
 * them, and fork the chain.
 */
static void
chain_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
					   SubTransactionId parentSubid, void *arg)
{
	HASH_SEQ_STATUS scan;
	ChainLink  *link;

	if (event != SUBXACT_EVENT_ABORT_SUB || chain_link_cache == NULL)
		return;
	hash_seq_init(&scan, chain_link_cache);
	while ((link = hash_seq_search(&scan)) != NULL)
		if (link->subid >= mySubid)
			hash_search(chain_link_cache, &link->session, HASH_REMOVE, NULL);
}

/*
 * The append-only guard: refuses UPDATE, DELETE and TRUNCATE on the log
 * and on the anchors, except the deletes and anchor updates that
 * purge_activity itself makes.  The permission lives in this process's
 * memory, so no setting a SQL user can change opens the table.
 */
PG_FUNCTION_INFO_V1(presence_activity_guard);
Datum
presence_activity_guard(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		elog(ERROR, "presence: _activity_guard must be called as a trigger");

	if (purge_in_progress && TRIGGER_FIRED_FOR_ROW(trigdata->tg_event))
	{
		if (TRIGGER_FIRED_BY_DELETE(trigdata->tg_event))
			return PointerGetDatum(trigdata->tg_trigtuple);
		if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
			return PointerGetDatum(trigdata->tg_newtuple);
	}
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("presence: %s is append-only", RelationGetRelationName(trigdata->tg_relation)),
			 errhint("Old activity is removed with presence.purge_activity(interval).")));
	PG_RETURN_NULL();
}

/*
 * verify_audit_chain(session_id text) -> (ok, rows_checked, first_bad_id,
 *										   checkpoints_checked, first_bad_checkpoint)
 *
 * Walks the session's rows in chain order and checks that each has the
 * next sequence number, links to the previous row's hash and hashes to
 * its stored value.  The first row that fails is reported: an edited row
 * itself, the row after a deleted one, an inserted row.  Rows are read
 * through a cursor, so a long chain needs no more memory than a short one.
 * Then the session's signed checkpoints are checked against the chain
 * (audit_checkpoints_verify), which catches what the walk cannot: the
 * newest rows cut off, or the chain recomputed from some row on.
 */
PG_FUNCTION_INFO_V1(presence_verify_audit_chain);
Datum
presence_verify_audit_chain(PG_FUNCTION_ARGS)
{
	text	   *session_text;
	TupleDesc	result_desc;
	Datum		result[5];
	bool		result_nulls[5] = {false, false, true, false, true};
	int64		checkpoints_checked;
	int64		first_bad_checkpoint = 0;
	bool		checkpoints_ok;
	Oid			argtypes[1] = {TEXTOID};
	Datum		args[1];
	Datum		session_uuid;
	int64		expected_seq = 1;
	uint8		expected_prev[PG_SHA256_DIGEST_LENGTH] = {0};
	int64		rows_checked = 0;
	bool		ok = true;
	bool		isnull;
	Portal		portal;
	MemoryContext row_context;

	if (PG_ARGISNULL(0))
		ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						errmsg("presence: session_id must not be null")));
	session_text = PG_GETARG_TEXT_PP(0);
	args[0] = PointerGetDatum(session_text);
	if (get_call_result_type(fcinfo, NULL, &result_desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "presence: verify_audit_chain must return a record");
	result_desc = BlessTupleDesc(result_desc);

	SPI_connect();
	if (SPI_execute_with_args("SELECT id FROM presence.collaboration_sessions WHERE session_id = $1",
							  1, argtypes, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "presence: session lookup failed");
	if (SPI_processed == 0)
		ereport(ERROR, (errcode(ERRCODE_NO_DATA_FOUND),
						errmsg("presence: session \"%s\" does not exist",
							   text_to_cstring(session_text))));
	session_uuid = SPI_datumTransfer(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull),
									 false, UUID_LEN);

	argtypes[0] = UUIDOID;
	args[0] = session_uuid;
	if (SPI_execute_with_args("SELECT chain_seq, row_hash FROM presence.audit_chain_anchors WHERE session_id = $1",
							  1, argtypes, args, NULL, true, 1) == SPI_OK_SELECT && SPI_processed == 1)
	{
		bytea	   *anchor_hash;

		expected_seq = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)) + 1;
		anchor_hash = DatumGetByteaPP(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
		if (VARSIZE_ANY_EXHDR(anchor_hash) == PG_SHA256_DIGEST_LENGTH)
			memcpy(expected_prev, VARDATA_ANY(anchor_hash), PG_SHA256_DIGEST_LENGTH);
	}

	portal = SPI_cursor_open_with_args(NULL,
									   "SELECT * FROM presence.activity_log WHERE session_id = $1"
									   " ORDER BY chain_seq, id",
									   1, argtypes, args, NULL, true, 0);
	row_context = AllocSetContextCreate(CurrentMemoryContext, "presence chain row",
										ALLOCSET_SMALL_SIZES);
	while (ok)
	{
		SPI_cursor_fetch(portal, true, 1000);
		if (SPI_processed == 0)
			break;
		for (uint64 i = 0; i < SPI_processed && ok; i++)
		{
			HeapTuple	row = SPI_tuptable->vals[i];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			Datum		seq_datum = SPI_getbinval(row, desc, column_number(desc, "chain_seq"), &isnull);
			bytea	   *prev = DatumGetByteaPP(SPI_getbinval(row, desc, column_number(desc, "prev_hash"), &isnull));
			bytea	   *stored = DatumGetByteaPP(SPI_getbinval(row, desc, column_number(desc, "row_hash"), &isnull));
			uint8		computed[PG_SHA256_DIGEST_LENGTH];
			MemoryContext caller_context = MemoryContextSwitchTo(row_context);

			rows_checked++;
			audit_chain_row_hash(row, desc, DatumGetInt64(seq_datum), expected_prev, computed);
			MemoryContextSwitchTo(caller_context);
			MemoryContextReset(row_context);

			if (DatumGetInt64(seq_datum) != expected_seq ||
				VARSIZE_ANY_EXHDR(prev) != PG_SHA256_DIGEST_LENGTH ||
				memcmp(VARDATA_ANY(prev), expected_prev, PG_SHA256_DIGEST_LENGTH) != 0 ||
				VARSIZE_ANY_EXHDR(stored) != PG_SHA256_DIGEST_LENGTH ||
				memcmp(VARDATA_ANY(stored), computed, PG_SHA256_DIGEST_LENGTH) != 0)
			{
				ok = false;
				result[2] = SPI_datumTransfer(SPI_getbinval(row, desc, column_number(desc, "id"), &isnull),
											  false, UUID_LEN);
				result_nulls[2] = false;
			}
			expected_seq++;
			memcpy(expected_prev, computed, sizeof(computed));
		}
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(portal);
	/* before 1.4 there are no checkpoints to check, nor columns to say so */
	checkpoints_checked = 0;
	checkpoints_ok = true;
	if (result_desc->natts >= 5)
		audit_checkpoints_verify(session_uuid, text_to_cstring(session_text),
								 &checkpoints_checked, &checkpoints_ok, &first_bad_checkpoint);
	SPI_finish();

	result[0] = BoolGetDatum(ok && checkpoints_ok);
	result[1] = Int64GetDatum(rows_checked);
	result[3] = Int64GetDatum(checkpoints_checked);
	result[4] = Int64GetDatum(first_bad_checkpoint);
	result_nulls[4] = checkpoints_ok;
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(result_desc, result, result_nulls)));
}

/*
 * purge_activity(older_than interval) -> rows removed
 *
 * Removes, per session, the longest prefix of the chain whose rows are
 * all older than now() - older_than, and records the last removed link
 * as the session's anchor so the remaining rows still verify.  A prefix,
 * because removing rows from the middle of a chain is what tampering
 * looks like.  Only sessions with a row past the cut-off are looked at
 * (activity_log_created_idx finds them), and each is walked in chain
 * order up to its first newer row, so the maintenance worker's periodic
 * call costs what it removes, not the size of the log.
 */
PG_FUNCTION_INFO_V1(presence_purge_activity);
Datum
presence_purge_activity(PG_FUNCTION_ARGS)
{
	Interval   *older_than;
	Oid			argtypes[1] = {INTERVALOID};
	Datum		args[1];
	int64		removed = 0;
	bool		isnull;

	if (PG_ARGISNULL(0))
		ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						errmsg("presence: older_than must not be null")));
	older_than = PG_GETARG_INTERVAL_P(0);
	args[0] = IntervalPGetDatum(older_than);
	if (older_than->time < 0 || older_than->day < 0 || older_than->month < 0)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("presence: purge_activity needs a non-negative interval")));

	SPI_connect();
	chain_forget_links();
	purge_in_progress = true;
	PG_TRY();
	{
		int			ret = SPI_execute_with_args(
												"WITH candidates AS ("
												"  SELECT DISTINCT session_id FROM presence.activity_log"
												"   WHERE created_at < now() - $1"
												"), bounds AS ("
												"  SELECT c.session_id,"
												"         coalesce((SELECT a.chain_seq - 1 FROM presence.activity_log a"
												"                    WHERE a.session_id = c.session_id AND a.created_at >= now() - $1"
												"                    ORDER BY a.chain_seq LIMIT 1),"
												"                  (SELECT max(a.chain_seq) FROM presence.activity_log a"
												"                    WHERE a.session_id = c.session_id)) AS last_purged"
												"    FROM candidates c"
												"), doomed AS ("
												"  DELETE FROM presence.activity_log a USING bounds b"
												"   WHERE a.session_id = b.session_id AND a.chain_seq <= b.last_purged"
												"  RETURNING a.session_id, a.chain_seq, a.row_hash"
												"), cut AS ("
												"  SELECT DISTINCT ON (session_id) session_id, chain_seq, row_hash,"
												"         count(*) OVER (PARTITION BY session_id) AS n"
												"    FROM doomed ORDER BY session_id, chain_seq DESC"
												"), anchored AS ("
												"  INSERT INTO presence.audit_chain_anchors AS x (session_id, chain_seq, row_hash, rows_purged)"
												"  SELECT session_id, chain_seq, row_hash, n FROM cut"
												"  ON CONFLICT (session_id) DO UPDATE SET chain_seq = EXCLUDED.chain_seq,"
												"     row_hash = EXCLUDED.row_hash, rows_purged = x.rows_purged + EXCLUDED.rows_purged,"
												"     purged_at = now()"
												"  RETURNING 1"
												") SELECT coalesce(sum(n), 0)::bigint FROM cut",
												1, argtypes, args, NULL, false, 0);

		if (ret != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "presence: purge failed: %s", SPI_result_code_string(ret));
		removed = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	}
	PG_FINALLY();
	{
		purge_in_progress = false;
	}
	PG_END_TRY();
	SPI_finish();
	PG_RETURN_INT64(removed);
}
