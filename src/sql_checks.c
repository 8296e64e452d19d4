/*-------------------------------------------------------------------------
 * sql_checks.c
 *	  The argument checks of the SQL API (presence._require*), and the
 *	  whole-batch check of log_activity_batch().
 *
 * Every SQL function checks its arguments through these, so a rule (what
 * an activity type looks like, how large details may be) is written once
 * and raises the same SQLSTATE wherever it applies: 22004 for a NULL,
 * 22023 for a malformed value, 22001 for an overlong string, 54000 for an
 * oversized JSON document, P0002 for a session or user that does not
 * exist.  They are C, not PL/pgSQL, because the activity paths run them
 * for every row: a PL/pgSQL call with SET search_path costs more than the
 * check itself, and a regular expression with a bounded repeat such as
 * {0,63} costs microseconds a match.  Being C they also do not depend on
 * the caller's search_path.
 *-------------------------------------------------------------------------
 */
#include "presence.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "utils/array.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/uuid.h"

#include "audit_chain.h"
#include "sql_checks.h"

/* Limits of an activity row (the activity_log constraints repeat them). */
#define ACTIVITY_TYPE_MAX	64
#define DETAILS_MAX_BYTES	65536
#define USER_AGENT_MAX		512

/* Characters of a rejected value quoted back in an error message. */
#define QUOTED_MAX			100

PG_FUNCTION_INFO_V1(presence_require);
PG_FUNCTION_INFO_V1(presence_require_length);
PG_FUNCTION_INFO_V1(presence_require_object);
PG_FUNCTION_INFO_V1(presence_require_activity_type);
PG_FUNCTION_INFO_V1(presence_valid_activity_type);
PG_FUNCTION_INFO_V1(presence_check_activity_rows);

/* A session id of the batch and its row id, if the session exists. */
typedef struct SessionEntry
{
	char		session_id[PRESENCE_SESSION_ID_MAX + 1];	/* hash key */
	bool		exists;
	pg_uuid_t	id;
} SessionEntry;

/* A user id of the batch, and whether the user exists. */
typedef struct UserEntry
{
	pg_uuid_t	id;				/* hash key */
	bool		exists;
} UserEntry;

/* The text of value, cut to max_chars characters for a message. */
static char *
quoted(text *value, int max_chars)
{
	const char *data = VARDATA_ANY(value);

	return pnstrdup(data, pg_mbcharcliplen(data, VARSIZE_ANY_EXHDR(value), max_chars));
}

/* An argument's name in a message: "details", or "details[3]" for a batch row. */
static char *
arg_label(const char *argname, int row)
{
	return row > 0 ? psprintf("%s[%d]", argname, row) : pstrdup(argname);
}

/*
 * An activity type is a lower-case letter followed by at most 63 of
 * [a-z0-9_.]; the activity_log CHECK constraint applies the same test.
 */
static bool
activity_type_valid(const char *value, int len)
{
	if (len < 1 || len > ACTIVITY_TYPE_MAX || value[0] < 'a' || value[0] > 'z')
		return false;
	for (int i = 1; i < len; i++)
	{
		char		c = value[i];

		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.'))
			return false;
	}
	return true;
}

static void
require_not_null(bool isnull, const char *argname)
{
	if (isnull)
		ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						errmsg("presence: %s must not be null", argname)));
}

static void
require_activity_type(text *value)
{
	if (!activity_type_valid(VARDATA_ANY(value), VARSIZE_ANY_EXHDR(value)))
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("presence: invalid activity_type \"%s\"", quoted(value, QUOTED_MAX)),
						errhint("An activity type is a lower-case letter followed by at most 63 of [a-z0-9_.].")));
}

/*
 * A JSON object of at most max_bytes bytes as text.  row > 0 names an
 * element of a batch argument in messages.
 */
static void
require_object(Jsonb *value, const char *argname, int row, int max_bytes)
{
	int			bytes;

	if (!JB_ROOT_IS_OBJECT(value))
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("presence: %s must be a JSON object, not %s", arg_label(argname, row),
							   TextDatumGetCString(DirectFunctionCall1(jsonb_typeof,
																	   JsonbPGetDatum(value))))));
	bytes = strlen(JsonbToCString(NULL, &value->root, VARSIZE(value)));
	if (bytes > max_bytes)
		ereport(ERROR, (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
						errmsg("presence: %s is too large (%d bytes, at most %d)",
							   arg_label(argname, row), bytes, max_bytes)));
}

/* At most max_length characters; row as for require_object(). */
static void
require_length(text *value, const char *argname, int row, int max_length)
{
	int			length = pg_mbstrlen_with_len(VARDATA_ANY(value), VARSIZE_ANY_EXHDR(value));

	if (length > max_length)
		ereport(ERROR, (errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
						errmsg("presence: %s is too long (%d characters, at most %d)",
							   arg_label(argname, row), length, max_length)));
}

/* _require(value anyelement, argname text) -> value, or 22004 for NULL. */
Datum
presence_require(PG_FUNCTION_ARGS)
{
	require_not_null(PG_ARGISNULL(0), text_to_cstring(PG_GETARG_TEXT_PP(1)));
	PG_RETURN_DATUM(PG_GETARG_DATUM(0));
}

/* _require_length(value text, argname text, max_length int) -> value; NULL passes. */
Datum
presence_require_length(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	require_length(PG_GETARG_TEXT_PP(0), text_to_cstring(PG_GETARG_TEXT_PP(1)), 0, PG_GETARG_INT32(2));
	PG_RETURN_DATUM(PG_GETARG_DATUM(0));
}

/* _require_object(value jsonb, argname text, max_bytes int) -> value. */
Datum
presence_require_object(PG_FUNCTION_ARGS)
{
	char	   *argname = text_to_cstring(PG_GETARG_TEXT_PP(1));

	require_not_null(PG_ARGISNULL(0), argname);
	require_object(PG_GETARG_JSONB_P(0), argname, 0, PG_GETARG_INT32(2));
	PG_RETURN_DATUM(PG_GETARG_DATUM(0));
}

/* _require_activity_type(value text) -> value. */
Datum
presence_require_activity_type(PG_FUNCTION_ARGS)
{
	require_not_null(PG_ARGISNULL(0), "activity_type");
	require_activity_type(PG_GETARG_TEXT_PP(0));
	PG_RETURN_DATUM(PG_GETARG_DATUM(0));
}

/* _valid_activity_type(value text) -> boolean, for the CHECK constraint. */
Datum
presence_valid_activity_type(PG_FUNCTION_ARGS)
{
	text	   *value = PG_GETARG_TEXT_PP(0);

	PG_RETURN_BOOL(activity_type_valid(VARDATA_ANY(value), VARSIZE_ANY_EXHDR(value)));
}

/*
 * Splits argument argno, an array (read flat, whatever its dimensions) or
 * NULL, into its elements; a NULL required argument raises 22004.
 */
static void
batch_array(FunctionCallInfo fcinfo, int argno, const char *name, bool required,
			BatchArray *array)
{
	ArrayType  *value;
	int16		elmlen;
	bool		elmbyval;
	char		elmalign;

	array->name = name;
	array->values = NULL;
	array->nulls = NULL;
	array->count = 0;
	if (PG_ARGISNULL(argno))
	{
		if (required)
			require_not_null(true, name);
		return;
	}
	value = PG_GETARG_ARRAYTYPE_P(argno);
	get_typlenbyvalalign(ARR_ELEMTYPE(value), &elmlen, &elmbyval, &elmalign);
	deconstruct_array(value, ARR_ELEMTYPE(value), elmlen, elmbyval, elmalign,
					  &array->values, &array->nulls, &array->count);
}

/* qsort order of uuids: their bytes, as the uuid type compares them. */
static int
uuid_order(const void *a, const void *b)
{
	return memcmp(a, b, UUID_LEN);
}

/*
 * Marks which of the batch's sessions and users exist, with one query
 * each over the distinct keys.  The plans are generic: a custom plan
 * would estimate "= ANY" element by element on every call.
 *
 * With lock, the rows found are locked FOR KEY SHARE, as the foreign-key
 * check of an inserted row locks the row it references: none of them can
 * be deleted or change its id until this transaction ends, so the rows
 * of the batch may be written without a check of their own.
 */
static void
batch_lookup(HTAB *sessions, HTAB *users, bool lock)
{
	static SPIPlanPtr plans[2][2];	/* [lock][sessions, users] */
	SPIPlanPtr	session_plan;
	SPIPlanPtr	user_plan;
	Oid			text_array[1] = {TEXTARRAYOID};
	Oid			uuid_array[1] = {UUIDARRAYOID};
	Datum	   *keys;
	int			nkeys = 0;
	Datum		param;
	bool		isnull;
	HASH_SEQ_STATUS scan;
	SessionEntry *session;
	UserEntry  *user;

	SPI_connect();
	for (int locking = 0; locking < 2; locking++)
	{
		if (plans[locking][0] != NULL)
			continue;
		session_plan = SPI_prepare_cursor(locking ?
										  "SELECT s.session_id, s.id FROM ONLY presence.collaboration_sessions s"
										  " WHERE s.session_id OPERATOR(pg_catalog.=) ANY ($1) FOR KEY SHARE OF s" :
										  "SELECT s.session_id, s.id FROM presence.collaboration_sessions s"
										  " WHERE s.session_id OPERATOR(pg_catalog.=) ANY ($1)",
										  1, text_array, CURSOR_OPT_GENERIC_PLAN);
		user_plan = SPI_prepare_cursor(locking ?
									   "SELECT u.id FROM ONLY presence.users u WHERE u.id OPERATOR(pg_catalog.=) ANY ($1)"
									   " FOR KEY SHARE OF u" :
									   "SELECT u.id FROM presence.users u WHERE u.id OPERATOR(pg_catalog.=) ANY ($1)",
									   1, uuid_array, CURSOR_OPT_GENERIC_PLAN);
		if (session_plan == NULL || user_plan == NULL)
			elog(ERROR, "presence: could not prepare the batch lookups: %s",
				 SPI_result_code_string(SPI_result));
		SPI_keepplan(session_plan);
		SPI_keepplan(user_plan);
		plans[locking][0] = session_plan;
		plans[locking][1] = user_plan;
	}
	session_plan = plans[lock][0];
	user_plan = plans[lock][1];

	keys = palloc(sizeof(Datum) * Max(hash_get_num_entries(sessions), 1));
	hash_seq_init(&scan, sessions);
	while ((session = hash_seq_search(&scan)) != NULL)
		keys[nkeys++] = CStringGetTextDatum(session->session_id);
	param = PointerGetDatum(construct_array(keys, nkeys, TEXTOID, -1, false, TYPALIGN_INT));

	/*
	 * With lock, the sessions' chain locks first, in uuid order, and their
	 * rows after: the order an INSERT through the chain trigger takes them
	 * (the trigger's chain lock, then the foreign-key check's row lock at
	 * the end of the statement).  The other order deadlocks with a
	 * transaction that logged activity in a session and then locks its
	 * row FOR UPDATE (an application's SELECT): it holds the chain lock
	 * and waits for our row lock, we would wait for its chain lock.
	 */
	if (lock)
	{
		pg_uuid_t  *ids;

		if (SPI_execute_plan(plans[false][0], &param, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "presence: session lookup failed");
		ids = palloc(sizeof(pg_uuid_t) * Max(SPI_processed, 1));
		for (uint64 i = 0; i < SPI_processed; i++)
			memcpy(&ids[i], DatumGetUUIDP(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull)),
				   sizeof(pg_uuid_t));
		qsort(ids, SPI_processed, sizeof(pg_uuid_t), uuid_order);
		for (uint64 i = 0; i < SPI_processed; i++)
			audit_chain_lock_session(&ids[i]);
		pfree(ids);
	}

	if (SPI_execute_plan(session_plan, &param, NULL, !lock, 0) != SPI_OK_SELECT)
		elog(ERROR, "presence: session lookup failed");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	row = SPI_tuptable->vals[i];

		session = hash_search(sessions, TextDatumGetCString(SPI_getbinval(row, SPI_tuptable->tupdesc, 1, &isnull)),
							  HASH_FIND, NULL);
		if (session != NULL)
		{
			session->exists = true;
			memcpy(&session->id, DatumGetUUIDP(SPI_getbinval(row, SPI_tuptable->tupdesc, 2, &isnull)),
				   sizeof(pg_uuid_t));
			/* a session made since the first lookup: its chain lock now (held ones cost nothing) */
			if (lock)
				audit_chain_lock_session(&session->id);
		}
	}

	nkeys = 0;
	keys = repalloc(keys, sizeof(Datum) * Max(hash_get_num_entries(users), 1));
	hash_seq_init(&scan, users);
	while ((user = hash_seq_search(&scan)) != NULL)
		keys[nkeys++] = UUIDPGetDatum(&user->id);
	param = PointerGetDatum(construct_array(keys, nkeys, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR));
	if (SPI_execute_plan(user_plan, &param, NULL, !lock, 0) != SPI_OK_SELECT)
		elog(ERROR, "presence: user lookup failed");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		Datum		id = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);

		user = hash_search(users, DatumGetUUIDP(id), HASH_FIND, NULL);
		if (user != NULL)
			user->exists = true;
	}
	SPI_finish();
}

/*
 * Checks the arguments of a log_activity_batch() call (session_ids,
 * user_ids, activity_types, details, ip_addresses, user_agents,
 * created_ats) and resolves the session row id of every row.  The arrays
 * are parallel: the first three are required, the others may be NULL
 * (all defaults) and any element but a session id or activity type may
 * be NULL.  Rows are checked in order and the first bad one raises, with
 * the checks of log_activity() in its order: session id, activity type,
 * details, user agent, then whether the session and the user exist.
 * With lock, the sessions and users are locked as batch_lookup() says.
 */
void
activity_rows_check(FunctionCallInfo fcinfo, bool lock, ActivityRows *rows)
{
	static const char *const names[ACTIVITY_ROW_ARRAYS] = {
		"session_ids", "user_ids", "activity_types", "details",
		"ip_addresses", "user_agents", "created_ats"
	};
	BatchArray *arrays = rows->arrays;
	BatchArray *session_ids = &arrays[ACTIVITY_SESSION_IDS];
	BatchArray *user_ids = &arrays[ACTIVITY_USER_IDS];
	BatchArray *types = &arrays[ACTIVITY_TYPES];
	BatchArray *details = &arrays[ACTIVITY_DETAILS];
	BatchArray *user_agents = &arrays[ACTIVITY_USER_AGENTS];
	HASHCTL		session_ctl = {.keysize = PRESENCE_SESSION_ID_MAX + 1,
	.entrysize = sizeof(SessionEntry),.hcxt = CurrentMemoryContext};
	HASHCTL		user_ctl = {.keysize = sizeof(pg_uuid_t),
	.entrysize = sizeof(UserEntry),.hcxt = CurrentMemoryContext};
	HTAB	   *sessions;
	HTAB	   *users;
	MemoryContext row_context;
	int			n;

	for (int i = 0; i < ACTIVITY_ROW_ARRAYS; i++)
		batch_array(fcinfo, i, names[i], i < 3, &arrays[i]);
	n = session_ids->count;
	for (int i = 1; i < ACTIVITY_ROW_ARRAYS; i++)
		if (arrays[i].count != n && !PG_ARGISNULL(i))
			ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							errmsg("presence: log_activity_batch arrays must all have %d elements", n),
							errdetail("%s has %d.", arrays[i].name, arrays[i].count)));
	rows->count = n;

	sessions = hash_create("presence batch sessions", Max(n, 1), &session_ctl,
						   HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	users = hash_create("presence batch users", Max(n, 1), &user_ctl,
						HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	for (int i = 0; i < n; i++)
	{
		if (!session_ids->nulls[i] &&
			VARSIZE_ANY_EXHDR(DatumGetPointer(session_ids->values[i])) <= PRESENCE_SESSION_ID_MAX)
		{
			SessionEntry *entry = hash_search(sessions, TextDatumGetCString(session_ids->values[i]),
											  HASH_ENTER, NULL);

			entry->exists = false;
		}
		if (!user_ids->nulls[i])
		{
			UserEntry  *entry = hash_search(users, DatumGetUUIDP(user_ids->values[i]), HASH_ENTER, NULL);

			entry->exists = false;
		}
	}
	if (n > 0)
		batch_lookup(sessions, users, lock);

	rows->sessions = palloc(sizeof(pg_uuid_t) * Max(n, 1));
	row_context = AllocSetContextCreate(CurrentMemoryContext, "presence batch row",
										ALLOCSET_SMALL_SIZES);
	for (int i = 0; i < n; i++)
	{
		MemoryContext caller_context = MemoryContextSwitchTo(row_context);
		text	   *session_id;
		SessionEntry *session = NULL;

		require_not_null(session_ids->nulls[i], "session_id");
		require_not_null(types->nulls[i], "activity_type");
		require_activity_type(DatumGetTextPP(types->values[i]));
		if (details->count > 0 && !details->nulls[i])
			require_object(DatumGetJsonbP(details->values[i]), "details", i + 1, DETAILS_MAX_BYTES);
		if (user_agents->count > 0 && !user_agents->nulls[i])
			require_length(DatumGetTextPP(user_agents->values[i]), "user_agents", i + 1, USER_AGENT_MAX);

		session_id = DatumGetTextPP(session_ids->values[i]);
		if (VARSIZE_ANY_EXHDR(session_id) <= PRESENCE_SESSION_ID_MAX)
			session = hash_search(sessions, text_to_cstring(session_id), HASH_FIND, NULL);
		if (session == NULL || !session->exists)
			ereport(ERROR, (errcode(ERRCODE_NO_DATA_FOUND),
							errmsg("presence: session \"%s\" does not exist",
								   quoted(session_id, PRESENCE_SESSION_ID_MAX))));
		if (!user_ids->nulls[i] &&
			!((UserEntry *) hash_search(users, DatumGetUUIDP(user_ids->values[i]), HASH_FIND, NULL))->exists)
			ereport(ERROR, (errcode(ERRCODE_NO_DATA_FOUND),
							errmsg("presence: user %s does not exist",
								   DatumGetCString(DirectFunctionCall1(uuid_out, user_ids->values[i])))));
		rows->sessions[i] = session->id;
		MemoryContextSwitchTo(caller_context);
		MemoryContextReset(row_context);
	}
	MemoryContextDelete(row_context);
	hash_destroy(sessions);
	hash_destroy(users);
}

/*
 * _check_activity_rows(session_ids, user_ids, activity_types, details,
 *						ip_addresses, user_agents, created_ats) -> uuid[]
 *
 * The session row id of every row of a log_activity_batch() call, after
 * activity_rows_check(): what log_activity_batch 1.2 inserts with.
 */
Datum
presence_check_activity_rows(PG_FUNCTION_ARGS)
{
	ActivityRows rows;
	Datum	   *result;

	activity_rows_check(fcinfo, false, &rows);
	result = palloc(sizeof(Datum) * Max(rows.count, 1));
	for (int i = 0; i < rows.count; i++)
		result[i] = UUIDPGetDatum(&rows.sessions[i]);
	PG_RETURN_ARRAYTYPE_P(construct_array(result, rows.count, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR));
}
