/*-------------------------------------------------------------------------
 * extension.c
 *	  The shared library's entry (_PG_init): GUCs, shared memory hooks
 *	  and worker registration.
 *
 * Loaded through shared_preload_libraries, the postmaster gets the shared
 * memory and starts the workers; loaded on demand by a SQL function it
 * only defines the GUCs, and the live functions report no workers.
 *-------------------------------------------------------------------------
 */
#include "presence.h"

#include <unistd.h>

#include "postmaster/bgworker.h"
#include "storage/ipc.h"

#include "listen_socket.h"
#include "redis_layout.h"
#include "shmem.h"
#include "workers.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

static shmem_request_hook_type previous_shmem_request_hook = NULL;
static shmem_startup_hook_type previous_shmem_startup_hook = NULL;

static void
presence_shmem_request_hook(void)
{
	if (previous_shmem_request_hook)
		previous_shmem_request_hook();
	presence_shmem_request();
}

static void
presence_shmem_startup_hook(void)
{
	if (previous_shmem_startup_hook)
		previous_shmem_startup_hook();
	presence_shmem_startup();
}

/*
 * Whether listen_address:port is free for this server's ws workers
 * (listen_socket.c): the postmaster binds it once without sharing and
 * lets it go at once.  A bad address is the worker's to report.
 */
static bool
port_is_free(void)
{
	ListenFailure failure;
	int			fd = listen_socket_bind(false, &failure);

	if (fd >= 0)
		close(fd);
	return fd >= 0 || failure == LISTEN_BAD_ADDRESS || errno != EADDRINUSE;
}

/*
 * Registers the ws workers (none when presence.port = 0) and the
 * maintenance worker.  Both start once the server is consistent, so a hot
 * standby serves clients and sweeps Redis too; what writes checks for
 * recovery itself.
 */
static void
presence_register_workers(void)
{
	BackgroundWorker worker;
	int			ws_workers = presence_port > 0 ? presence_workers : 0;

	if (ws_workers > 0 && !port_is_free())
	{
		ereport(WARNING,
				(errmsg("presence: %s:%d is already served by another PostgreSQL server; no ws worker starts",
						presence_listen_address, presence_port),
				 errhint("Give each server its own presence.port.")));
		ws_workers = 0;
	}

	if (ws_workers > 1 && !redis_configured())
	{
		ereport(LOG,
				(errmsg("presence: starting 1 ws worker, not %d", ws_workers),
				 errdetail("Workers share presence through Redis, and presence.redis_url is not set.")));
		ws_workers = 1;
	}

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	strlcpy(worker.bgw_library_name, "presence", BGW_MAXLEN);
	for (int i = 0; i < ws_workers; i++)
	{
		worker.bgw_start_time = BgWorkerStart_ConsistentState;
		worker.bgw_restart_time = 5;
		strlcpy(worker.bgw_function_name, "presence_ws_worker_main", BGW_MAXLEN);
		snprintf(worker.bgw_name, BGW_MAXLEN, "presence ws worker %d", i);
		strlcpy(worker.bgw_type, "presence ws worker", BGW_MAXLEN);
		worker.bgw_main_arg = Int32GetDatum(i);
		RegisterBackgroundWorker(&worker);
	}

	worker.bgw_start_time = BgWorkerStart_ConsistentState;
	worker.bgw_restart_time = 10;
	strlcpy(worker.bgw_function_name, "presence_maintenance_main", BGW_MAXLEN);
	strlcpy(worker.bgw_name, "presence maintenance", BGW_MAXLEN);
	strlcpy(worker.bgw_type, "presence maintenance", BGW_MAXLEN);
	worker.bgw_main_arg = (Datum) 0;
	RegisterBackgroundWorker(&worker);
}

void
_PG_init(void)
{
	presence_define_gucs();

	if (!process_shared_preload_libraries_in_progress)
		return;

	previous_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = presence_shmem_request_hook;
	previous_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = presence_shmem_startup_hook;

	presence_register_workers();
}
