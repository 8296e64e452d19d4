/*-------------------------------------------------------------------------
 * maintenance.c
 *	  The maintenance worker: marks idle sessions inactive (logging
 *	  session_timeout) and applies presence.activity_retention.
 *
 * One worker per node does this, on the primary only (it writes).  It
 * wakes a few times per presence.session_timeout, at most once a minute,
 * and waits on MyLatch like any worker, so DROP DATABASE elsewhere and
 * shutdown are never held up.
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
#include "utils/wait_event.h"

#include "worker_db.h"
#include "worker_process.h"
#include "workers.h"

static long
maintenance_period_ms(void)
{
	int64		quarter_timeout_ms = (int64) presence_session_timeout_s * 1000 / 4;

	return (long) Max(Min(quarter_timeout_ms, 60000), 1000);
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

void
presence_maintenance_main(Datum main_arg)
{
	bool		extension_reported = false;

	worker_process_start();
	do
	{
		if (!RecoveryInProgress())
		{
			if (db_extension_ready())
			{
				uint64		expired = 0;
				int64		purged = 0;

				extension_reported = false;
				if (db_run("presence: expiring idle sessions", expire_sessions_work, &expired) == DB_OK &&
					expired > 0)
					ereport(LOG, (errmsg("presence: %llu idle sessions marked inactive",
										 (unsigned long long) expired)));
				if (presence_activity_retention_s > 0 &&
					db_run("presence: applying activity retention", apply_retention_work, &purged) == DB_OK &&
					purged > 0)
					ereport(LOG, (errmsg("presence: purged %lld activity rows past retention",
										 (long long) purged)));
			}
			else if (!extension_reported)
			{
				ereport(LOG,
						(errmsg("presence: database \"%s\" does not have the presence extension; maintenance waits",
								presence_database)));
				extension_reported = true;
			}
		}
	} while (worker_process_sleep(maintenance_period_ms()));
	proc_exit(0);
}
