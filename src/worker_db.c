/*-------------------------------------------------------------------------
 * worker_db.c
 *	  SQL run by a ws worker: resolving users at authentication, checking
 *	  who may join a session and what a change announced through Redis
 *	  really is, creating and ending sessions.
 *
 * db_run() wraps one unit of work in its own transaction, the way
 * contrib's worker_spi does (StartTransactionCommand, SPI_connect,
 * PushActiveSnapshot, ... CommitTransactionCommand), and catches any
 * error: it is logged, the transaction is aborted, and the caller gets a
 * DbResult.  That makes the calls safe inside libwebsockets callbacks,
 * where an escaping longjmp would corrupt lws's frames.  Session and
 * permission logic is the SQL API's own (create_session, end_session),
 * so SQL and WebSocket clients obey the same rules.
 *-------------------------------------------------------------------------
 */
#include "presence.h"

#include "access/xact.h"
#include "access/xlog.h"
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

/* A statement prepared once per worker and kept across transactions. */
static SPIPlanPtr
prepared(SPIPlanPtr *slot, const char *sql, int nargs, Oid *argtypes)
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

static void
execute(SPIPlanPtr plan, Datum *args, const char *nulls, bool read_only)
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
	const char *token_name;
	char	   *username;
} ResolveUser;

static DbResult
resolve_user_work(void *arg)
{
	static SPIPlanPtr lookup_plan = NULL;
	static SPIPlanPtr ensure_plan = NULL;
	ResolveUser *resolve = arg;
	Oid			types[2] = {TEXTOID, TEXTOID};
	Datum		args[2] = {CStringGetTextDatum(resolve->user_id), 0};
	char	   *username;

	execute(prepared(&lookup_plan, "SELECT username FROM presence.users WHERE id = $1::uuid", 1, types),
			args, NULL, true);
	if (SPI_processed == 0)
	{
		if (!presence_auto_create_users)
			return DB_NOT_FOUND;
		args[1] = CStringGetTextDatum(resolve->token_name[0] ? resolve->token_name : resolve->user_id);
		if (RecoveryInProgress())
			return DB_READ_ONLY;
		execute(prepared(&ensure_plan, DB_ENSURE_USER_SQL, 2, types), args, NULL, false);
	}
	username = SPI_processed == 1 ? SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1) : NULL;
	if (username == NULL)
		return DB_FAILED;
	strlcpy(resolve->username, username, PRESENCE_USERNAME_MAX + 1);
	return DB_OK;
}

/*
 * Finds (or, with auto_create_users, adds) the token's user.  username
 * receives the stored name, used when the token carries none.
 */
DbResult
db_resolve_user(const char *user_id, const char *token_name, char *username)
{
	ResolveUser resolve = {user_id, token_name, username};

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

	execute(prepared(&plan,
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

	execute(prepared(&plan,
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

typedef struct CreateSession
{
	const char *owner_id;
	const ClientRequest *request;
	json_t	   *session;
} CreateSession;

static Datum
optional_text(const char *value, char *null_flag)
{
	*null_flag = value ? ' ' : 'n';
	return value ? CStringGetTextDatum(value) : (Datum) 0;
}

static DbResult
create_session_work(void *arg)
{
	static SPIPlanPtr plan = NULL;
	CreateSession *create = arg;
	const ClientRequest *request = create->request;
	Oid			types[6] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID};
	Datum		args[6];
	char		nulls[7] = "      ";
	const char *params[6];

	if (RecoveryInProgress())
		return DB_READ_ONLY;
	db_create_session_params(create->owner_id, request, params);
	for (int i = 0; i < 6; i++)
		args[i] = optional_text(params[i], &nulls[i]);
	free((char *) params[2]);
	execute(prepared(&plan, DB_CREATE_SESSION_SQL, 6, types), args, nulls, false);
	create->session = json_loads(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1), 0, NULL);
	return create->session ? DB_OK : DB_FAILED;
}

/*
 * The parameters of DB_CREATE_SESSION_SQL for a session_create request;
 * params[2] (the metadata JSON) is malloc'd, for the caller to free.
 */
void
db_create_session_params(const char *owner_id, const ClientRequest *request, const char **params)
{
	params[0] = owner_id;
	params[1] = request->operation_id;
	params[2] = request->metadata ? json_dumps(request->metadata, JSON_COMPACT) : NULL;
	params[3] = request->target;
	params[4] = request->objective;
	params[5] = request->session_id;
}

/* Creates a session owned by owner_id through presence.create_session(). */
DbResult
db_create_session(const char *owner_id, const ClientRequest *request, json_t **session)
{
	CreateSession create = {owner_id, request, NULL};
	DbResult	result = db_run("presence: creating a session", create_session_work, &create);

	if (result != DB_OK && create.session)
		json_decref(create.session);
	*session = result == DB_OK ? create.session : NULL;
	return result;
}

typedef struct EndSession
{
	const char *session_id;
	const char *user_id;
	const char *status;
} EndSession;

static DbResult
end_session_work(void *arg)
{
	static SPIPlanPtr owner_plan = NULL;
	static SPIPlanPtr end_plan = NULL;
	EndSession *end = arg;
	Oid			types[2] = {TEXTOID, TEXTOID};
	Datum		args[2] = {CStringGetTextDatum(end->session_id), CStringGetTextDatum(end->user_id)};
	bool		isnull;

	execute(prepared(&owner_plan,
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
	if (RecoveryInProgress())
		return DB_READ_ONLY;
	args[1] = CStringGetTextDatum(end->status);
	execute(prepared(&end_plan, DB_END_SESSION_SQL, 2, types), args, NULL, false);
	return DB_OK;
}

/* Ends a session as its owner; connected clients hear of it at commit. */
DbResult
db_end_session(const char *session_id, const char *user_id, const char *status)
{
	EndSession	end = {session_id, user_id, status};

	return db_run("presence: ending a session", end_session_work, &end);
}
