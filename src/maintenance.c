/*-------------------------------------------------------------------------
 * maintenance.c
 *	  The maintenance worker: marks idle sessions inactive (logging
 *	  session_timeout), applies presence.activity_retention, signs audit
 *	  checkpoints every presence.audit_checkpoint_interval, and with Redis
 *	  sweeps out the users whose node stopped refreshing them.
 *
 * One worker per node.  The SQL work happens on the primary only; the
 * Redis sweep runs on every node, so a dead primary's users time out too
 * (the sweep script is atomic: with several nodes sweeping, each user
 * times out once).  It wakes a few times per presence.session_timeout and
 * per presence.presence_ttl, and waits on MyLatch like any worker, so DROP
 * DATABASE elsewhere and shutdown are never held up.
 *-------------------------------------------------------------------------
 */
#include "presence.h"

#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "audit_checkpoint.h"
#include "clock.h"
#include "node.h"
#include "primary_link.h"
#include "protocol.h"
#include "redis_layout.h"
#include "redis_sync.h"
#include "worker_db.h"
#include "worker_process.h"
#include "workers.h"

static long
maintenance_period_ms(void)
{
	int64		quarter_timeout_ms = (int64) presence_session_timeout_s * 1000 / 4;
	int64		period = Max(Min(quarter_timeout_ms, 60000), 1000);

	if (redis_configured())
		period = Min(period, Max(presence_presence_ttl_ms / 4, 250));
	if (presence_audit_checkpoint_interval_s > 0)
		period = Min(period, (int64) presence_audit_checkpoint_interval_s * 1000);
	return (long) period;
}

/* The timeout row of a user the Redis sweep removed, on either path. */
#define SWEPT_USER_SQL \
	"SELECT presence.log_activity($1, $2::uuid, 'user_timeout', '{\"reason\": \"connections expired\"}')"

typedef struct SweptUser
{
	const char *session_id;
	const char *user_id;
} SweptUser;

static DbResult
log_swept_user_work(void *arg)
{
	SweptUser  *swept = arg;
	Oid			types[2] = {TEXTOID, TEXTOID};
	Datum		args[2] = {CStringGetTextDatum(swept->session_id), CStringGetTextDatum(swept->user_id)};

	if (SPI_execute_with_args(SWEPT_USER_SQL, 2, types, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "presence: could not log a swept user");
	return DB_OK;
}

/*
 * On a standby, the swept user's timeout is logged on the primary: a
 * short blocking libpq call, which the maintenance worker can afford.
 */
static void
log_swept_user_on_primary(SweptUser *swept)
{
	char	   *conninfo = primary_conninfo_for_writes();
	PGconn	   *conn = conninfo ? PQconnectdb(conninfo) : NULL;
	const char *params[2] = {swept->session_id, swept->user_id};
	PGresult   *result = NULL;

	if (conn && PQstatus(conn) == CONNECTION_OK)
		result = PQexecParams(conn, SWEPT_USER_SQL, 2, NULL, params, NULL, NULL, 0);
	if (result == NULL || PQresultStatus(result) != PGRES_TUPLES_OK)
		ereport(LOG, (errmsg("presence: could not log the timeout of user %s on the primary: %s",
							 swept->user_id, conn ? PQerrorMessage(conn) : "no primary_conninfo")));
	if (result)
		PQclear(result);
	if (conn)
		PQfinish(conn);
	free(conninfo);
}

/*
 * Every session's sorted set in Redis, swept of users none of whose
 * connections was refreshed within presence_ttl; each one also gets its
 * user_timeout row, written on the primary wherever the sweep ran.
 */
static void
sweep_redis(void)
{
	char		cursor[32] = "0";
	char		origin[REDIS_KEY_MAX];
	char		prefix[REDIS_KEY_MAX];
	size_t		prefix_len;

	snprintf(origin, sizeof(origin), "sweep:%s", presence_node_id());
	redis_session_key(prefix, "");
	prefix_len = strlen(prefix);
	do
	{
		redisReply *page = redis_sync_scan_sessions(cursor);

		if (page == NULL || page->type != REDIS_REPLY_ARRAY || page->elements != 2)
		{
			if (page)
				freeReplyObject(page);
			return;
		}
		strlcpy(cursor, page->element[0]->str, sizeof(cursor));
		for (size_t i = 0; i < page->element[1]->elements; i++)
		{
			redisReply *key = page->element[1]->element[i];
			const char *session_id = key->str + prefix_len;
			redisReply *removed;

			if (key->len <= prefix_len || !protocol_valid_session_id(session_id))
				continue;
			removed = redis_sync_sweep_session(session_id, origin, presence_now_ms());
			for (size_t u = 0; removed && u < removed->elements; u++)
			{
				SweptUser	swept = {session_id, removed->element[u]->str};

				ereport(LOG, (errmsg("presence: user %s timed out of session \"%s\": no connection refreshed within presence.presence_ttl",
									 swept.user_id, session_id)));
				if (!RecoveryInProgress())
					(void) db_run("presence: logging a swept user", log_swept_user_work, &swept);
				else
					log_swept_user_on_primary(&swept);
			}
			if (removed)
				freeReplyObject(removed);
		}
		freeReplyObject(page);
	} while (strcmp(cursor, "0") != 0 && !ShutdownRequestPending);
}


/*
 * Active sessions with no activity row and no session change for
 * presence.session_timeout become inactive; each gets a session_timeout
 * row in its audit chain.
 */
static DbResult
expire_sessions_work(void *arg)
{
	Oid			types[1] = {INT4OID};
	Datum		args[1] = {Int32GetDatum(presence_session_timeout_s)};
	int			ret = SPI_execute_with_args(
											"WITH idle AS ("
											"  UPDATE presence.collaboration_sessions s SET status = 'inactive'"
											"   WHERE s.status = 'active'"
											"     AND s.last_activity_at < now() - make_interval(secs => $1)"
											"     AND NOT EXISTS (SELECT 1 FROM presence.activity_log a"
											"                      WHERE a.session_id = s.id"
											"                        AND a.created_at >= now() - make_interval(secs => $1))"
											"  RETURNING s.id)"
											" SELECT presence._append_activity(id, NULL, 'session_timeout',"
											"        jsonb_build_object('idle_seconds', $1)) FROM idle",
											1, types, args, NULL, false, 0);

	if (ret != SPI_OK_SELECT)
		elog(ERROR, "presence: session expiry failed: %s", SPI_result_code_string(ret));
	*(uint64 *) arg = SPI_processed;
	return DB_OK;
}

static DbResult
apply_retention_work(void *arg)
{
	Oid			types[1] = {INT4OID};
	Datum		args[1] = {Int32GetDatum(presence_activity_retention_s)};
	bool		isnull;

	if (SPI_execute_with_args("SELECT presence.purge_activity(make_interval(secs => $1))",
							  1, types, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "presence: retention failed");
	*(int64 *) arg = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	return DB_OK;
}

#define CHECKPOINT_LOOK_BACK_US ((int64) 86400 * USECS_PER_SEC)

typedef struct CheckpointDue
{
	MemoryContext context;		/* outlives the transaction that lists them */
	TimestampTz since;			/* rows from then on may be unsigned */
	List	   *session_ids;
} CheckpointDue;

/*
 * The sessions whose chain grew since their newest checkpoint: the active
 * ones, and those with rows written since due->since, less two intervals
 * (a session that ended or timed out since then still gets its final rows
 * signed; the margin covers rows whose transaction began before and
 * committed after).  The key is loaded first, so a missing or bad key is
 * one warning per pass, not one per session.
 */
static DbResult
list_checkpoints_due_work(void *arg)
{
	CheckpointDue *due = arg;
	Oid			types[2] = {TIMESTAMPTZOID, INT4OID};
	Datum		args[2] = {TimestampTzGetDatum(due->since), Int32GetDatum(presence_audit_checkpoint_interval_s * 2)};
	int			ret;

	EVP_PKEY_free(audit_signing_key_load());
	ret = SPI_execute_with_args("SELECT s.session_id FROM presence.collaboration_sessions s"
								" WHERE (s.status = 'active'"
								"        OR s.id IN (SELECT a.session_id FROM presence.activity_log a"
								"                     WHERE a.created_at >= $1 - make_interval(secs => $2)))"
								"   AND (SELECT max(a.chain_seq) FROM presence.activity_log a WHERE a.session_id = s.id)"
								"       > coalesce((SELECT max(c.chain_seq) FROM presence.audit_checkpoints c"
								"                    WHERE c.session_id = s.id), 0)",
								2, types, args, NULL, true, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "presence: listing sessions to checkpoint failed: %s", SPI_result_code_string(ret));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		MemoryContext old = MemoryContextSwitchTo(due->context);

		due->session_ids = lappend(due->session_ids,
								   SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1));
		MemoryContextSwitchTo(old);
	}
	return DB_OK;
}

/* One session's checkpoint, in a transaction of its own. */
static DbResult
sign_checkpoint_work(void *arg)
{
	Datum		args[1] = {CStringGetTextDatum((const char *) arg)};
	Oid			types[1] = {TEXTOID};

	if (SPI_execute_with_args("SELECT presence.audit_checkpoint($1)", 1, types, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "presence: could not sign an audit checkpoint");
	return DB_OK;
}

/*
 * Signs a checkpoint of every session whose chain grew, one bounded
 * transaction each: a session whose chain lock is held past the lock
 * timeout is signed on a later pass, and the others are not held up.
 * *signed_through is when the last pass began that signed all it found
 * due: a later pass looks back to it, so a session that ended while
 * signing failed (a bad key, a lock held for long) is not forgotten.  At
 * most a day back, so that the listing, which reads the rows written
 * since, stays within the statement timeout after a long outage;
 * docs/sql-reference.md says how to sign what is older.
 */
static void
write_checkpoints(TimestampTz *signed_through)
{
	TimestampTz began = GetCurrentTimestamp();
	CheckpointDue due = {AllocSetContextCreate(CurrentMemoryContext, "presence checkpoints",
											   ALLOCSET_DEFAULT_SIZES),
		Max(*signed_through, began - CHECKPOINT_LOOK_BACK_US), NIL};
	ListCell   *cell;
	int			signed_count = 0;

	if (db_run("presence: listing sessions to checkpoint", list_checkpoints_due_work, &due) == DB_OK)
	{
		foreach(cell, due.session_ids)
		{
			if (ShutdownRequestPending)
				break;
			if (db_run("presence: signing an audit checkpoint", sign_checkpoint_work, lfirst(cell)) == DB_OK)
				signed_count++;
		}
		if (signed_count == list_length(due.session_ids))
			*signed_through = began;
	}
	if (signed_count > 0)
		ereport(DEBUG1, (errmsg("presence: signed %d audit checkpoints", signed_count)));
	MemoryContextDelete(due.context);
}

/*
 * One pass: the Redis sweep, then on a primary session expiry, retention
 * and, when due, checkpoints.
 */
static void
maintenance_pass(bool *extension_reported, int64 *last_checkpoints_ms, TimestampTz *signed_through)
{
	if (redis_configured())
		sweep_redis();
	if (RecoveryInProgress())
		return;
	if (db_extension_ready())
	{
		uint64		expired = 0;
		int64		purged = 0;

		*extension_reported = false;
		if (db_run("presence: expiring idle sessions", expire_sessions_work, &expired) == DB_OK &&
			expired > 0)
			ereport(LOG, (errmsg("presence: %llu idle sessions marked inactive",
								 (unsigned long long) expired)));
		if (presence_activity_retention_s > 0 &&
			db_run("presence: applying activity retention", apply_retention_work, &purged) == DB_OK &&
			purged > 0)
			ereport(LOG, (errmsg("presence: purged %lld activity rows past retention",
								 (long long) purged)));
		if (presence_audit_checkpoint_interval_s > 0 && presence_audit_signing_key_file[0] != '\0' &&
			presence_now_ms() - *last_checkpoints_ms >= (int64) presence_audit_checkpoint_interval_s * 1000)
		{
			*last_checkpoints_ms = presence_now_ms();
			write_checkpoints(signed_through);
		}
	}
	else if (!*extension_reported)
	{
		ereport(LOG,
				(errmsg("presence: database \"%s\" does not have the presence extension; maintenance waits",
						presence_database)));
		*extension_reported = true;
	}
}

void
presence_maintenance_main(Datum main_arg)
{
	bool		extension_reported = false;
	int64		last_checkpoints_ms = 0;
	TimestampTz signed_through = GetCurrentTimestamp();

	worker_process_start();
	db_set_waits(DB_WAITS_BACKGROUND);
	for (;;)
	{
		int64		pass_ended_ms;

		maintenance_pass(&extension_reported, &last_checkpoints_ms, &signed_through);

		/*
		 * Sleep until the next pass is due even when woken early: a lock
		 * timeout sets the latch too (its SIGINT), and a pass that failed
		 * must not be retried back to back.  The period is read again at
		 * every wake, so a reload that shortens it applies to this sleep.
		 */
		worker_process_report_stats();
		pass_ended_ms = presence_now_ms();
		while (presence_now_ms() < pass_ended_ms + maintenance_period_ms())
		{
			if (!worker_process_sleep((long) Max(pass_ended_ms + maintenance_period_ms() - presence_now_ms(), 0)))
				proc_exit(0);
		}
	}
}
