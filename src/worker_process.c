/*-------------------------------------------------------------------------
 * worker_process.c
 *	  What every presence background worker does the same way: signal
 *	  handling, connecting to presence.database, answering interrupts and
 *	  reloads after each wake-up.
 *
 * SIGTERM sets ShutdownRequestPending (PostgreSQL's own
 * SignalHandlerForShutdownRequest) instead of the default die(), as
 * contrib's autoprewarm does: a ws worker has clients to close and activity to
 * write on its way out, so it must leave its loop itself.  Every other
 * interrupt is answered here, between statements, where none of them
 * can cost a queued row: a cancel (pg_cancel_backend(), a recovery
 * conflict) has no statement to cancel and is ignored, and a request to
 * die that did not come as SIGTERM (a recovery conflict on a dropped
 * database) stops the worker the way SIGTERM does.  Inside a statement
 * db_run() lets cancels and timeouts end that statement only.
 *-------------------------------------------------------------------------
 */
#include "presence.h"

#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/latch.h"
#include "utils/guc.h"
#include "utils/wait_event.h"

#include "worker_process.h"

/* Signals, the database connection and the name pg_stat_activity shows. */
void
worker_process_start(void)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(presence_database, NULL, 0);
	SetConfigOption("application_name", MyBgworkerEntry->bgw_name, PGC_USERSET, PGC_S_SESSION);
	pgstat_report_appname(MyBgworkerEntry->bgw_name);
}

/*
 * After every wake-up: interrupts (ProcSignalBarriers such as DROP
 * DATABASE elsewhere; cancels and termination as the header says) and a
 * pending configuration reload (returns whether there was one, for what
 * the worker must read again).  A worker that holds interrupts for its
 * whole life (the ws worker, whose library callbacks must never see an
 * ereport longjmp) has them processed here and only here.
 */
bool
worker_process_interrupts(void)
{
	uint32		held = InterruptHoldoffCount;

	QueryCancelPending = false;
	if (ProcDiePending)
	{
		ProcDiePending = false;
		ShutdownRequestPending = true;
	}
	InterruptHoldoffCount = 0;
	CHECK_FOR_INTERRUPTS();
	InterruptHoldoffCount = held;
	if (!ConfigReloadPending)
		return false;
	ConfigReloadPending = false;
	ProcessConfigFile(PGC_SIGHUP);
	return true;
}

/*
 * Sends the statistics this process's transactions gathered (rows
 * inserted, above all) to the cumulative statistics system, as a backend
 * does when it goes idle: without it autovacuum would not see the
 * workers' inserts into activity_log until they exit.  Outside any
 * transaction, from the main loop; called every few hundred milliseconds,
 * and cheap when nothing is pending.  Its only errors are out of memory:
 * they are logged and the statistics wait for the next call.
 */
void
worker_process_report_stats(void)
{
	MemoryContext context = CurrentMemoryContext;

	PG_TRY();
	{
		(void) pgstat_report_stat(true);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(context);
		EmitErrorReport();
		FlushErrorState();
	}
	PG_END_TRY();
}

/*
 * Sleeps on the latch for up to timeout_ms (exiting if the postmaster
 * dies), then handles interrupts.  Returns false once shutdown was asked.
 */
bool
worker_process_sleep(long timeout_ms)
{
	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					 timeout_ms, PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
	(void) worker_process_interrupts();
	return !ShutdownRequestPending;
}
