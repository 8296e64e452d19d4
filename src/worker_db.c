/*-------------------------------------------------------------------------
 * worker_db.c
 *	  The reads of a ws worker, and the transaction every SPI call of a
 *	  worker runs in: resolving users at authentication, checking who may
 *	  join or end a session and what a change announced through Redis
 *	  really is.  Writes are db_write.c's; they run through db_run too.
 *
 * db_run() wraps one unit of work in its own transaction, the way
 * contrib's worker_spi does (StartTransactionCommand, SPI_connect,
 * PushActiveSnapshot, ... CommitTransactionCommand), and catches any
 * error: it is logged, the transaction is aborted, and the caller gets a
 * DbResult.  That makes the calls safe inside libwebsockets callbacks,
 * where an escaping longjmp would corrupt lws's frames.
 *-------------------------------------------------------------------------
 */
#include "presence.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/guc.h"
#include "utils/snapmgr.h"
#include "utils/timeout.h"

#include "worker_db.h"

/*
 * What a failed statement means to its caller.  A lock that was not free
 * in time, a statement that ran past its bound, a deadlock or a
 * serialization failure say nothing about the data: the work is retried.
 * (ERRCODE_LOCK_NOT_AVAILABLE is in class 55 with the refusals, so exact
 * codes are matched before classes.)
 */
static DbResult
classify_error(int sqlerrcode)
{
	switch (sqlerrcode)
	{
		case ERRCODE_LOCK_NOT_AVAILABLE:
		case ERRCODE_QUERY_CANCELED:
		case ERRCODE_T_R_DEADLOCK_DETECTED:
		case ERRCODE_T_R_SERIALIZATION_FAILURE:
			return DB_BUSY;
		case ERRCODE_UNIQUE_VIOLATION:
			return DB_CONFLICT;
		case ERRCODE_NO_DATA_FOUND:
			return DB_NOT_FOUND;
		case ERRCODE_INSUFFICIENT_PRIVILEGE:
			return DB_FORBIDDEN;
	}
	switch (ERRCODE_TO_CATEGORY(sqlerrcode))
	{
		case ERRCODE_DATA_EXCEPTION:
		case ERRCODE_INTEGRITY_CONSTRAINT_VIOLATION:
		case ERRCODE_PLPGSQL_ERROR:
		case ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE:
		case ERRCODE_PROGRAM_LIMIT_EXCEEDED:
			return DB_INVALID;
	}
	return DB_FAILED;
}

/* The same for an error a standby got back from the primary over libpq. */
DbResult
db_classify_sqlstate(const char *sqlstate)
{
	if (sqlstate == NULL || strlen(sqlstate) != 5)
		return DB_FAILED;
	return classify_error(MAKE_SQLSTATE(sqlstate[0], sqlstate[1], sqlstate[2], sqlstate[3], sqlstate[4]));
}

static void
set_local(const char *name, const char *value)
{
	(void) set_config_option(name, value, PGC_SUSET, PGC_S_SESSION, GUC_ACTION_LOCAL,
							 true, ERROR, false);
}

/* How long the maintenance worker's transactions may wait for a lock. */
#define BACKGROUND_LOCK_TIMEOUT_MS 5000

static DbWaits db_waits = DB_WAITS_LOOP;

/*
 * Chooses the bounds of this process's transactions.  The ws workers
 * keep DB_WAITS_LOOP; the maintenance worker, which serves no clients,
 * takes DB_WAITS_BACKGROUND: a retention purge may run as long as it
 * needs, and a lock may take seconds.
 */
void
db_set_waits(DbWaits waits)
{
	db_waits = waits;
}

/*
 * The settings of every worker transaction, local to it:
 * - lock_timeout and statement_timeout (presence.db_lock_timeout,
 *   presence.db_statement_timeout for the ws workers) bound how long the
 *   event loop can wait on the database: an application's open
 *   transaction costs a ws worker at most the lock timeout, then the
 *   work is retried later;
 * - synchronous_commit = local: a commit never waits for a synchronous
 *   standby, so one that has gone cannot freeze live presence; an ack
 *   means the row is durable on this server (docs/operations.md);
 * - search_path = pg_catalog, pg_temp: the worker runs as a superuser,
 *   and no object someone created in a schema on the default path may
 *   stand in for a built-in function or operator its queries use.
 */
static void
bound_transaction(void)
{
	char		lock_timeout[32];

	snprintf(lock_timeout, sizeof(lock_timeout), "%dms",
			 db_waits == DB_WAITS_LOOP ? presence_db_lock_timeout_ms : BACKGROUND_LOCK_TIMEOUT_MS);
	set_local("lock_timeout", lock_timeout);
	set_local("synchronous_commit", "local");
	set_local("search_path", "pg_catalog, pg_temp");
	if (db_waits == DB_WAITS_LOOP)
		enable_timeout_after(STATEMENT_TIMEOUT, presence_db_statement_timeout_ms);
}

/*
 * Interrupts are held for the whole call except while the work runs, so
 * that statement_timeout, lock_timeout and a cancel can end the work
 * (caught below like any error) but nothing can raise an error while the
 * failure is logged or after the call returns into a library callback.
 */
DbResult
db_run(const char *activity, DbWork work, void *arg)
{
	MemoryContext caller_context = CurrentMemoryContext;
	volatile DbResult result = DB_FAILED;
	volatile bool committing = false;
	uint32		held;

	HOLD_INTERRUPTS();
	held = InterruptHoldoffCount;
	/* a cancel that came between statements was not meant for this one */
	QueryCancelPending = false;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PG_TRY();
	{
		InterruptHoldoffCount = 0;
		bound_transaction();
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "presence: SPI_connect failed");
		PushActiveSnapshot(GetTransactionSnapshot());
		pgstat_report_activity(STATE_RUNNING, activity);
		result = work(arg);
		SPI_finish();
		PopActiveSnapshot();
		disable_timeout(STATEMENT_TIMEOUT, false);
		committing = true;
		CommitTransactionCommand();
		InterruptHoldoffCount = held;
	}
	PG_CATCH();
	{
		ErrorData  *error;

		InterruptHoldoffCount = held;
		disable_timeout(STATEMENT_TIMEOUT, false);
		MemoryContextSwitchTo(caller_context);
		error = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		result = classify_error(error->sqlerrcode);

		/*
		 * What fails at commit (the NOTIFY queue full, its lock not had in
		 * time) says nothing about the data: never refused, retried.
		 */
		if (committing && result != DB_BUSY)
			result = DB_FAILED;
		ereport(result == DB_FAILED ? WARNING : result == DB_BUSY ? LOG : DEBUG1,
				(errmsg("%s failed: %s", activity, error->message)));
		FreeErrorData(error);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(caller_context);
	pgstat_report_activity(STATE_IDLE, NULL);
	RESUME_INTERRUPTS();
	return result;
}

/*
 * A statement prepared once per worker and kept across transactions:
 * every statement a worker runs through SPI is cached this way, in the
 * static slot of the function that runs it.
 */
SPIPlanPtr
db_prepared(SPIPlanPtr *slot, const char *sql, int nargs, Oid *argtypes)
{
	if (*slot == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare(sql, nargs, argtypes);

		if (plan == NULL)
			elog(ERROR, "presence: could not prepare \"%s\": %s", sql, SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		*slot = plan;
	}
	return *slot;
}

void
db_execute(SPIPlanPtr plan, Datum *args, const char *nulls, bool read_only)
{
	int			ret = SPI_execute_plan(plan, args, nulls, read_only, 0);

	if (ret < 0)
		elog(ERROR, "presence: statement failed: %s", SPI_result_code_string(ret));
}

static DbResult
extension_ready_work(void *arg)
{
	bool	   *ready = arg;

	*ready = SPI_execute("SELECT 1 FROM pg_extension WHERE extname = 'presence'", true, 1) == SPI_OK_SELECT &&
		SPI_processed == 1;
	return DB_OK;
}

/* Whether presence.database has CREATE EXTENSION presence. */
bool
db_extension_ready(void)
{
	bool		ready = false;

	return db_run("presence: checking the extension", extension_ready_work, &ready) == DB_OK && ready;
}

typedef struct ResolveUser
{
	const char *user_id;
	char	   *username;
} ResolveUser;

static DbResult
resolve_user_work(void *arg)
{
	static SPIPlanPtr plan = NULL;
	ResolveUser *resolve = arg;
	Oid			types[1] = {TEXTOID};
	Datum		args[1] = {CStringGetTextDatum(resolve->user_id)};
	char	   *username;

	db_execute(db_prepared(&plan, "SELECT username FROM presence.users WHERE id = $1::uuid", 1, types),
			   args, NULL, true);
	if (SPI_processed == 0)
		return DB_NOT_FOUND;
	username = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	if (username == NULL)
		return DB_FAILED;
	strlcpy(resolve->username, username, PRESENCE_USERNAME_MAX + 1);
	return DB_OK;
}

/*
 * The stored name of the token's user; DB_NOT_FOUND when the user is not
 * in presence.users (then, with presence.auto_create_users, the caller
 * adds them: DB_ENSURE_USER).
 */
DbResult
db_resolve_user(const char *user_id, char *username)
{
	ResolveUser resolve = {user_id, username};

	return db_run("presence: authenticating", resolve_user_work, &resolve);
}

typedef struct SessionState
{
	const char *session_id;
	const char *user_id;		/* NULL: the session alone */
	char	   *status;
	char	   *role;
	bool	   *is_owner;
} SessionState;

static DbResult
session_state_work(void *arg)
{
	static SPIPlanPtr plan = NULL;
	SessionState *state = arg;
	Oid			types[2] = {TEXTOID, TEXTOID};
	Datum		args[2] = {CStringGetTextDatum(state->session_id),
	state->user_id ? CStringGetTextDatum(state->user_id) : (Datum) 0};
	char		nulls[3] = {' ', state->user_id ? ' ' : 'n', '\0'};
	bool		isnull;
	bool		is_owner;
	char	   *role;

	db_execute(db_prepared(&plan,
						   "SELECT s.status, s.owner_id = $2::uuid, p.role"
						   "  FROM presence.collaboration_sessions s"
						   "  LEFT JOIN presence.session_participants p"
						   "    ON p.session_id = s.id AND p.user_id = $2::uuid AND p.left_at IS NULL"
						   " WHERE s.session_id = $1",
						   2, types),
			   args, nulls, true);
	if (SPI_processed == 0)
		return DB_NOT_FOUND;
	strlcpy(state->status, SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1), DB_STATUS_MAX + 1);
	is_owner = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	*state->is_owner = !isnull && is_owner;
	role = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3);
	/* the owner holds every permission, with or without a participant row */
	strlcpy(state->role, role ? role : *state->is_owner ? "operator" : "", DB_ROLE_MAX + 1);
	return DB_OK;
}

/*
 * The session's status and, unless user_id is NULL, the user's standing
 * in it as this server's tables have them: role is the user's current
 * role ("operator" for the owner without a participant row), or empty
 * when they are not a participant.  DB_NOT_FOUND: no such session.
 */
DbResult
db_session_state(const char *session_id, const char *user_id, char *status, char *role, bool *is_owner)
{
	SessionState state = {session_id, user_id, status, role, is_owner};

	return db_run("presence: reading a session's state", session_state_work, &state);
}

/*
 * May user_id join session_id?  DB_OK with the user's role; DB_NOT_FOUND,
 * DB_FORBIDDEN (not a participant), DB_INVALID (session not active).
 */
DbResult
db_session_access(const char *session_id, const char *user_id, char *role, bool *is_owner)
{
	char		status[DB_STATUS_MAX + 1];
	DbResult	result = db_session_state(session_id, user_id, status, role, is_owner);

	if (result != DB_OK)
		return result;
	if (role[0] == '\0')
		return DB_FORBIDDEN;
	return strcmp(status, "active") == 0 ? DB_OK : DB_INVALID;
}

typedef struct CountParticipants
{
	const char *session_id;
	const char *user_ids;
	int		   *count;
} CountParticipants;

static DbResult
count_participants_work(void *arg)
{
	static SPIPlanPtr plan = NULL;
	CountParticipants *count = arg;
	Oid			types[2] = {TEXTOID, TEXTOID};
	Datum		args[2] = {CStringGetTextDatum(count->session_id), CStringGetTextDatum(count->user_ids)};
	bool		isnull;

	db_execute(db_prepared(&plan,
						   "SELECT count(*)::int4 FROM presence.collaboration_sessions s"
						   "  JOIN presence.session_participants p ON p.session_id = s.id AND p.left_at IS NULL"
						   " WHERE s.session_id = $1 AND p.user_id::text = ANY (string_to_array($2, ','))",
						   2, types),
			   args, NULL, true);
	*count->count = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	return DB_OK;
}

/*
 * How many of user_ids (separated by commas) are current participants of
 * session_id.  They are compared as text, so an id that is no UUID (Redis
 * may bring any) matches nothing instead of failing the query.
 */
DbResult
db_count_participants(const char *session_id, const char *user_ids, int *count)
{
	CountParticipants counting = {session_id, user_ids, count};

	return db_run("presence: counting a session's participants", count_participants_work, &counting);
}

typedef struct SessionOwner
{
	const char *session_id;
	const char *user_id;
} SessionOwner;

static DbResult
session_owner_work(void *arg)
{
	static SPIPlanPtr plan = NULL;
	SessionOwner *owner = arg;
	Oid			types[2] = {TEXTOID, TEXTOID};
	Datum		args[2] = {CStringGetTextDatum(owner->session_id), CStringGetTextDatum(owner->user_id)};
	bool		isnull;

	db_execute(db_prepared(&plan,
						   "SELECT s.owner_id = $2::uuid, EXISTS (SELECT 1 FROM presence.session_participants p"
						   "  WHERE p.session_id = s.id AND p.user_id = $2::uuid AND p.left_at IS NULL)"
						   "  FROM presence.collaboration_sessions s WHERE s.session_id = $1",
						   2, types),
			   args, NULL, true);
	/* to one who is not a participant a session does not exist: ids are not probed */
	if (SPI_processed == 0 ||
		(!DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)) &&
		 !DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull))))
		return DB_NOT_FOUND;
	if (!DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)))
		return DB_FORBIDDEN;
	return DB_OK;
}

/*
 * Whether user_id owns session_id: DB_OK; DB_FORBIDDEN for a participant
 * who does not; DB_NOT_FOUND for anyone else, or no such session.
 */
DbResult
db_session_owner(const char *session_id, const char *user_id)
{
	SessionOwner owner = {session_id, user_id};

	return db_run("presence: checking a session's owner", session_owner_work, &owner);
}
