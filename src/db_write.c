/*-------------------------------------------------------------------------
 * db_write.c
 *	  Every write of a ws worker: a statement named once (the SQL of each
 *	  is here and nowhere else), its parameters as text, and one callback
 *	  for the answer, however the write is made:
 *
 *	  - on a primary, through SPI in one bounded transaction (db_run), the
 *	    statement prepared once per worker; the callback runs before
 *	    db_submit returns;
 *	  - on a hot standby, through the libpq link to the primary
 *	    (primary_link.c), asynchronously; the callback runs when the
 *	    primary has committed, or failed.
 *
 * Either way the answer is a DbReply, its errors classified by the one
 * classifier (worker_db.c), so a caller writes its outcome handling once.
 * Parameters are text in both cases and the SQL casts them, so the same
 * text serves SPI (parameters typed text) and libpq (types inferred).
 * What a session is and who may change it is the SQL API's own
 * (_create_session_described, end_session, log_activity_batch), so SQL
 * and WebSocket clients obey the same rules.
 *-------------------------------------------------------------------------
 */
#include "presence.h"

#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"

#include "db_write.h"
#include "primary_link.h"

typedef struct StatementText
{
	const char *activity;		/* for pg_stat_activity and the log */
	const char *sql;
	int			nparams;
} StatementText;

static const StatementText statements[DB_STATEMENTS] = {
	[DB_ENSURE_USER] = {
		"presence: adding a user",
		"SELECT presence._ensure_user($1::uuid, $2)", 2
	},
	[DB_CREATE_SESSION] = {
		"presence: creating a session",
		"SELECT presence._create_session_described($1::uuid, $2, $3::jsonb, $4, $5, $6)", 6
	},
	/* only while $3 owns it: the ownership was read before, maybe on a standby */
	[DB_END_SESSION] = {
		"presence: ending a session",
		"SELECT 'ended' FROM (SELECT s.session_id FROM presence.collaboration_sessions s"
		" WHERE s.session_id = $1 AND s.owner_id = $3::uuid) owned,"
		" LATERAL presence.end_session(owned.session_id, $2)", 3
	},
	/* the user's end permission was the application's function's answer, asked just before */
	[DB_END_SESSION_PERMITTED] = {
		"presence: ending a session",
		"SELECT 'ended' FROM presence.end_session($1, $2)", 2
	},
	[DB_LOG_ACTIVITY_BATCH] = {
		"presence: writing activity",
		"SELECT id::text FROM presence.log_activity_batch($1::text[], $2::uuid[], $3::text[],"
		" $4::jsonb[], $5::inet[], $6::text[], $7::timestamptz[]) AS id", 7
	},
};

StaticAssertDecl(DB_STATEMENT_MAX_PARAMS <= PRIMARY_LINK_MAX_PARAMS,
				 "every statement must fit the primary link");

/* Whether writes go to the primary (this server is a hot standby). */
bool
db_writes_go_to_primary(void)
{
	return RecoveryInProgress();
}

/* Row row's value of the first column; NULL for SQL NULL. */
const char *
db_reply_value(const DbReply *reply, int row)
{
	if (reply->copied)
		return reply->copied[row];
	return PQgetisnull(reply->primary, row, 0) ? NULL : PQgetvalue(reply->primary, row, 0);
}

static void
reply_free(DbReply *reply)
{
	for (int i = 0; reply->copied && i < reply->rows; i++)
		free(reply->copied[i]);
	free(reply->copied);
}

typedef struct LocalWrite
{
	DbStatement statement;
	const char **params;
	DbBeforeWrite before;
	void	   *arg;
	DbReply    *reply;
} LocalWrite;

static DbResult
local_write_work(void *arg)
{
	static SPIPlanPtr plans[DB_STATEMENTS];
	LocalWrite *write = arg;
	const StatementText *text = &statements[write->statement];
	Oid			types[DB_STATEMENT_MAX_PARAMS];
	Datum		values[DB_STATEMENT_MAX_PARAMS];
	char		nulls[DB_STATEMENT_MAX_PARAMS];
	DbReply    *reply = write->reply;

	if (write->before && !write->before(write->params, write->arg))
		return DB_OK;
	for (int i = 0; i < text->nparams; i++)
	{
		types[i] = TEXTOID;
		nulls[i] = write->params[i] ? ' ' : 'n';
		values[i] = write->params[i] ? CStringGetTextDatum(write->params[i]) : (Datum) 0;
	}
	db_execute(db_prepared(&plans[write->statement], text->sql, text->nparams, types),
			   values, nulls, false);
	/* copied before the commit, so an answer can always be given after it */
	reply->copied = malloc(Max(SPI_processed, 1) * sizeof(char *));
	if (reply->copied == NULL)
		elog(ERROR, "presence: out of memory");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		char	   *value = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);

		reply->copied[reply->rows] = value ? strdup(value) : NULL;
		if (value && reply->copied[reply->rows] == NULL)
			elog(ERROR, "presence: out of memory");
		reply->rows++;
	}
	return DB_OK;
}

/* A write through SPI, answered at once. */
static void
write_locally(DbStatement statement, const char **params, DbBeforeWrite before, DbDone done, void *arg)
{
	DbReply		reply = {DB_FAILED, 0, NULL, NULL};
	LocalWrite	write = {statement, params, before, arg, &reply};

	reply.result = db_run(statements[statement].activity, local_write_work, &write);
	if (reply.result != DB_OK)
	{
		reply_free(&reply);
		reply.rows = 0;
		reply.copied = NULL;
	}
	done(&reply, arg);
	reply_free(&reply);
}

typedef struct RemoteWrite
{
	DbDone		done;
	void	   *arg;
} RemoteWrite;

/* The primary answered (result NULL: the link failed before it could). */
static void
primary_answered(PGresult *result, void *context)
{
	RemoteWrite *write = context;
	DbReply		reply = {DB_FAILED, 0, NULL, result};

	if (result && PQresultStatus(result) == PGRES_TUPLES_OK)
	{
		reply.result = DB_OK;
		reply.rows = PQntuples(result);
	}
	else if (result)
		reply.result = db_classify_sqlstate(PQresultErrorField(result, PG_DIAG_SQLSTATE));
	write->done(&reply, write->arg);
	free(write);
}

/*
 * Writes statement with params (text or NULL, one per parameter) and
 * calls done with the answer: before returning on a primary, later on a
 * standby.  before (may be NULL) runs only where the write is local.
 * Returns false, without calling done, when the write could not even be
 * queued (out of memory); the caller answers as for DB_FAILED.
 */
bool
db_submit(DbStatement statement, const char **params, DbBeforeWrite before, DbDone done, void *arg)
{
	RemoteWrite *write;

	if (!db_writes_go_to_primary())
	{
		write_locally(statement, params, before, done, arg);
		return true;
	}
	if ((write = malloc(sizeof(RemoteWrite))) == NULL)
		return false;
	write->done = done;
	write->arg = arg;
	if (!primary_link_send(statements[statement].sql, statements[statement].nparams,
						   (const char *const *) params, primary_answered, write))
	{
		free(write);
		return false;
	}
	return true;
}
