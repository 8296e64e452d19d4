/*-------------------------------------------------------------------------
 * presence.c
 *	  Module entry: GUCs, shared memory hooks and worker registration.
 *
 * Loaded through shared_preload_libraries, the postmaster gets the shared
 * memory and starts the workers; loaded on demand by a SQL function it
 * only defines the GUCs, and the live functions report no workers.
 *-------------------------------------------------------------------------
 */
#include "presence.h"

#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include "postmaster/bgworker.h"
#include "storage/ipc.h"

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
 * Whether listen_address:port is free for this server's ws workers.  They
 * listen with SO_REUSEPORT so that they can share the port, which would
 * let a second server configured with the same port silently share it
 * too and receive part of the connections.  A plain bind (without
 * SO_REUSEPORT) fails while anyone listens there, so the postmaster tries
 * one at start-up and lets it go at once.
 */
static bool
port_is_free(void)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
	struct addrinfo *address = NULL;
	char		port[16];
	int			one = 1;
	int			fd;
	bool		free_port;

	snprintf(port, sizeof(port), "%d", presence_port);
	if (getaddrinfo(presence_listen_address[0] ? presence_listen_address : NULL, port, &hints, &address) != 0)
		return true;				/* the worker reports the bad address */
	fd = socket(address->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	free_port = fd < 0 ||
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
		bind(fd, address->ai_addr, address->ai_addrlen) == 0 ||
		errno != EADDRINUSE;
	if (fd >= 0)
		close(fd);
	freeaddrinfo(address);
	return free_port;
}

/*
 * Registers the ws workers (none when presence.port = 0) and the
 * maintenance worker.  Both start once the server is consistent, so a hot
 * standby serves clients and sweeps Redis too; what writes checks for
 * recovery itself.
 */
void
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
