/*-------------------------------------------------------------------------
 * ws_worker.c
 *	  The ws worker process: start-up, the event loop, signals, shutdown.
 *
 * This file wires the layers together: the transport (ws_server.c) and
 * the activity queue call up into requests.c, the Redis link into
 * live_remote.c, each through the handler table it is started with.
 *
 * The loop waits the PostgreSQL way, on one WaitEventSet holding MyLatch,
 * postmaster death and the libuv loop's backend fd, with a timeout from
 * uv_backend_timeout() and our own deadlines (sweeps, timed batches,
 * activity flush).  Each pass then runs libuv once without blocking
 * (libwebsockets callbacks happen there), applies commands from SQL,
 * sends the pass's presence events, writes due activity and publishes
 * live users to shared memory.  An idle worker sleeps in the kernel.
 *
 * SIGTERM only sets a flag (worker_process.c) so the worker can close its
 * clients with 1001 and write its queued activity before it exits.
 *-------------------------------------------------------------------------
 */
#include "presence.h"

#include <sys/resource.h>
#include <uv.h>

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
#include "utils/wait_event.h"

#include "activity.h"
#include "auth.h"
#include "clock.h"
#include "connection.h"
#include "keepalive.h"
#include "live_remote.h"
#include "live_state.h"
#include "node.h"
#include "permissions.h"
#include "primary_link.h"
#include "redis_layout.h"
#include "redis_link.h"
#include "requests.h"
#include "shmem.h"
#include "tls.h"
#include "worker_db.h"
#include "worker_process.h"
#include "workers.h"
#include "ws_server.h"

/* How long shutdown may spend writing activity and closing clients. */
#define SHUTDOWN_BUDGET_MS 4000
/*
 * Of that, how long the clients get to answer the close: one round trip
 * for a client that reads; one that stopped reading never will.
 */
#define SHUTDOWN_CLOSE_WAIT_MS 1000
/* How often a worker whose database lacks the extension looks again. */
#define EXTENSION_RETRY_MS 10000

/* Sweep often enough to honour the shortest timeout within about 5%. */
static int64
sweep_period_ms(void)
{
	int64		shortest = Min(presence_heartbeat_interval_ms + presence_heartbeat_timeout_ms,
							   Min(presence_away_threshold_ms, presence_auth_timeout_ms));

	return Max(Min(shortest / 20, 1000), 20);
}

/*
 * Waits until presence.database has the extension, saying so once, so a
 * misconfigured database costs a log line, not a crash loop.  Returns
 * false when asked to shut down meanwhile.
 */
static bool
wait_for_extension(void)
{
	bool		reported = false;

	do
	{
		if (db_extension_ready())
			return true;
		if (!reported)
			ereport(LOG,
					(errmsg("presence: database \"%s\" does not have the presence extension; waiting for CREATE EXTENSION presence",
							presence_database)));
		reported = true;
	} while (worker_process_sleep(EXTENSION_RETRY_MS));
	return false;
}

static DbResult
close_own_presences_work(void *arg)
{
	int		   *closed = arg;
	Oid			types[1] = {TEXTOID};
	Datum		args[1] = {CStringGetTextDatum(live_worker_tag())};
	bool		isnull;

	if (SPI_execute_with_args("SELECT presence._close_presences_of_worker($1)", 1, types, args, NULL,
							  false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "presence: could not close the presences of the worker's previous run");
	*closed = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	return DB_OK;
}

/*
 * Without Redis a worker's presences live in its memory alone, so the
 * ones the log shows open from its earlier run ended with that run (a
 * crash, kill -9, an immediate shutdown): they get their user_left, with
 * cause server_restart, before anyone can join again.  With Redis other
 * nodes may hold the same users, and the maintenance sweep times out
 * those nobody refreshes; a standby's writes go to the primary
 * asynchronously, so a standby leaves them to be read as documented
 * (docs/sql-reference.md, "Presence at a past moment").
 */
static void
close_own_presences(void)
{
	int			closed = 0;

	DbResult	result;

	if (redis_configured() || RecoveryInProgress())
		return;

	/*
	 * The replay probes the index for every user of every open session
	 * (0.4 s for 500 sessions of a million-row log, docs/benchmarks.md),
	 * and no client waits yet: the statement is not bound by
	 * presence.db_statement_timeout.  A failure is logged by db_run; the
	 * presences then stay open in the log.
	 */
	db_set_waits(DB_WAITS_BACKGROUND);
	result = db_run("presence: closing the presences of an earlier run", close_own_presences_work, &closed);
	db_set_waits(DB_WAITS_LOOP);
	if (result == DB_OK && closed > 0)
		ereport(LOG, (errmsg("presence: %d presence(s) from this worker's earlier run logged as ended by the restart",
							 closed)));
}

/*
 * Every client is a descriptor: take the whole hard limit, since the
 * postmaster usually inherits a soft limit of 1024 from its session.
 */
static void
raise_open_files_limit(void)
{
	struct rlimit limit;

	if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max)
	{
		limit.rlim_cur = limit.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &limit) != 0)
			ereport(LOG, (errmsg("presence: could not raise the open files limit: %m")));
	}
	if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < (rlim_t) presence_max_connections + 64)
		ereport(LOG,
				(errmsg("presence: open files limit %lu is below presence.max_connections (%d)",
						(unsigned long) limit.rlim_cur, presence_max_connections)));
}

/*
 * Applies what SQL sent (broadcast, end_session, participant changes) to
 * this worker's clients.  With Redis, worker 0 also passes each command
 * on to the other nodes, whose own workers did not see it.
 */
static void
apply_commands(int worker_index)
{
	PresenceCommand command;

	while (presence_command_next(worker_index, &command))
	{
		const char *name = presence_command_name(command.kind);
		const char *user_id = command.user_id[0] ? command.user_id : NULL;
		json_t	   *payload = command.payload ? json_loads(command.payload, JSON_DECODE_ANY, NULL) : NULL;

		live_apply_command(command.kind, command.session_id, user_id, payload);
		if (command.kind == CMD_PARTICIPANT_CHANGED)
			requests_participant_changed(command.session_id, user_id);
		if (worker_index == 0 && redis_configured())
		{
			json_t	   *message = json_pack("{s:s, s:s, s:s, s:s?, s:O?}", "o", presence_node_id(),
											"cmd", name, "sessionId", command.session_id,
											"userId", user_id, "payload", payload);
			char	   *text = message ? json_dumps(message, JSON_COMPACT) : NULL;

			if (text && !redis_link_publish_command(text))
				ereport(LOG, (errmsg("presence: Redis is unavailable; %s for session \"%s\" reached this node only",
									 name, command.session_id)));
			free(text);
			if (message)
				json_decref(message);
		}
		if (payload)
			json_decref(payload);
		if (command.payload)
			pfree(command.payload);
	}
}

/* The wait timeout: libuv's own, or sooner when one of our deadlines is. */
static long
wait_timeout_ms(uv_loop_t *loop, int64 now_ms, int64 next_sweep_ms)
{
	int64		deadline = Min(next_sweep_ms, Min(live_next_deadline(now_ms), activity_next_deadline()));
	long		uv_timeout = uv_backend_timeout(loop);
	long		ours = (long) Max(deadline - now_ms, 0);

	return uv_timeout < 0 ? ours : Min(uv_timeout, ours);
}

static void
publish_gauges(PresenceWorkerSlot *slot, bool database_ready)
{
	live_gauges(&slot->sessions, &slot->users);
	slot->database_ready = database_ready;
	slot->redis_connected = redis_link_ready();
}

/* Runs libuv once without blocking, after a wait of at most timeout_ms. */
static void
turn_loop(uv_loop_t *loop, WaitEventSet *set, long timeout_ms)
{
	WaitEvent	events[3];

	(void) WaitEventSetWait(set, timeout_ms, events, lengthof(events), PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
	uv_run(loop, UV_RUN_NOWAIT);
}

/*
 * Graceful stop, within SHUTDOWN_BUDGET_MS: first every client leaves its
 * sessions and the queue (those leaves included) is written, then the
 * clients get 1001 and what is left of the budget, at most
 * SHUTDOWN_CLOSE_WAIT_MS, to answer; so a client that stopped reading,
 * or never answers the close, costs no row and at most that wait.
 */
static void
shut_down(uv_loop_t *loop, WaitEventSet *set)
{
	int64		deadline = presence_now_ms() + SHUTDOWN_BUDGET_MS;
	dlist_iter	iter;

	ws_server_stop_listening();
	dlist_foreach(iter, connections_all())
		live_connection_closed(dlist_container(Connection, all_node, iter.cur));
	live_flush(INT64_MAX);
	/* a standby's flush completes on the loop, so keep it turning */
	while (activity_pending() > 0 && presence_now_ms() < deadline)
	{
		if (activity_flush_due(presence_now_ms(), true))
			(void) activity_flush();
		turn_loop(loop, set, 20);
	}
	if (activity_pending() > 0)
		ereport(WARNING,
				(errmsg("presence: %d activity rows could not be written before shutdown",
						activity_pending())));
	connections_close_all(1001, "server shutting down");
	deadline = Min(deadline, presence_now_ms() + SHUTDOWN_CLOSE_WAIT_MS);
	while (connections_count() > 0 && presence_now_ms() < deadline)
		turn_loop(loop, set, Min(deadline - presence_now_ms(), 50));
	redis_link_stop();
	primary_link_stop();
	ws_server_destroy();
	for (int i = 0; i < 100 && uv_run(loop, UV_RUN_NOWAIT) != 0; i++)
		pg_usleep(1000L);
	(void) uv_loop_close(loop);
	presence_counts_flush();
}

/*
 * (Re)loads presence.jwt_public_keys_file, at start and after each
 * reload; a file that does not parse keeps the previous keys.
 */
static void
reload_jwt_keys(void)
{
	char		message[512];

	if (!auth_keys_reload(message, sizeof(message)))
		ereport(WARNING, (errmsg("presence: %s", message)));
	else if (message[0] != '\0')
		ereport(LOG, (errmsg("presence: %s", message)));
}

void
presence_ws_worker_main(Datum main_arg)
{
	int			worker_index = DatumGetInt32(main_arg);
	PresenceWorkerSlot *slot;
	uv_loop_t	loop;
	WaitEventSet *set;
	WaitEvent	events[3];
	MemoryContext pass_context;
	int64		next_sweep_ms;
	bool		database_ready = true;
	char		origin[CONNECTION_ID_MAX - 20];

	worker_process_start();

	/*
	 * Held for good: errfinish() checks for interrupts even after a LOG,
	 * so any ereport inside a libwebsockets, libuv or hiredis callback
	 * could otherwise longjmp through the library's frames.  They are
	 * processed after each wait (worker_process_interrupts) and inside
	 * statements (db_run).
	 */
	HOLD_INTERRUPTS();
	raise_open_files_limit();
	slot = presence_worker_attach(worker_index);
	if (!wait_for_extension())
		proc_exit(1);			/* restartable, as at the end of main below */

	if (uv_loop_init(&loop) != 0 || !live_state_init(worker_index))
		ereport(ERROR, (errmsg("presence: could not create an event loop")));
	close_own_presences();
	/* the start time tells this run's connections from an earlier one's */
	snprintf(origin, sizeof(origin), "%s:%d.%llx", presence_node_id(), worker_index,
			 (unsigned long long) presence_now_ms());
	connections_init(origin);
	activity_init(&requests_activity_handlers);
	live_remote_init();
	reload_jwt_keys();
	/* errno says why listening failed; libwebsockets logs its own failures */
	errno = 0;
	if (!ws_server_start(&loop, &requests_ws_handlers))
	{
		if (errno == 0)
			ereport(ERROR,
					(errmsg("presence: could not start libwebsockets; its reason is logged above"),
					 errhint("A package install needs libwebsockets-evlib-uv, which provides its libuv event loop.")));
		ereport(ERROR,
				(errmsg("presence: could not listen on %s:%d: %m", presence_listen_address, presence_port),
				 errhint("Check that presence.port is free and presence.listen_address is local.")));
	}
	ereport(LOG, (errmsg("presence: ws worker %d listening on %s:%d", worker_index,
						 presence_listen_address, presence_port)));
	redis_link_start(&loop, origin, &live_remote_redis_handlers);
	primary_link_start(&loop);

	set = CreateWaitEventSet(TopMemoryContext, 3);
	AddWaitEventToSet(set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	AddWaitEventToSet(set, WL_SOCKET_READABLE, uv_backend_fd(&loop), NULL, NULL);
	pass_context = AllocSetContextCreate(TopMemoryContext, "presence pass", ALLOCSET_DEFAULT_SIZES);
	next_sweep_ms = presence_now_ms() + sweep_period_ms();

	while (!ShutdownRequestPending)
	{
		int64		now_ms = presence_now_ms();

		(void) WaitEventSetWait(set, wait_timeout_ms(&loop, now_ms, next_sweep_ms),
								events, lengthof(events), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		/* what the worker reads from files: keys and certificates */
		if (worker_process_interrupts())
		{
			reload_jwt_keys();
			tls_reload();
			/* presence.permission_function may name another function, or a fixed one */
			live_permission_caches_clear(NULL);
			permission_backoff_reset();
		}
		if (ShutdownRequestPending)
			break;

		MemoryContextSwitchTo(pass_context);

		/*
		 * Commands before the clients' messages: a change SQL committed
		 * before a client sent something (permissions_changed, say) is in
		 * effect when that message is handled, unless both came in while
		 * this pass ran.
		 */
		apply_commands(worker_index);
		uv_run(&loop, UV_RUN_NOWAIT);
		ws_server_service_pending();
		now_ms = presence_now_ms();
		keepalive_tick(now_ms);
		if (now_ms >= next_sweep_ms)
		{
			ws_server_sweep(now_ms);
			live_sweep(now_ms);
			publish_gauges(slot, database_ready);
			worker_process_report_stats();
			next_sweep_ms = now_ms + sweep_period_ms();
		}
		live_flush(now_ms);
		if (activity_flush_due(now_ms, false))
			database_ready = activity_flush();
		live_publish();
		presence_counts_flush();
		MemoryContextSwitchTo(TopMemoryContext);
		MemoryContextReset(pass_context);
	}

	ereport(LOG, (errmsg("presence: ws worker %d shutting down", worker_index)));
	shut_down(&loop, set);

	/*
	 * Exit code 1, not 0: a background worker that exits with 0 is
	 * unregistered, so after a pg_terminate_backend() nothing would serve
	 * WebSockets until the next server restart.  With 1 the postmaster
	 * starts the worker again after bgw_restart_time (unless it is
	 * shutting down itself).
	 */
	proc_exit(1);
}
