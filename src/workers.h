/*-------------------------------------------------------------------------
 * workers.h
 *	  The background workers: registration and entry points.
 *-------------------------------------------------------------------------
 */
#ifndef PRESENCE_WORKERS_H
#define PRESENCE_WORKERS_H

#include "presence.h"

extern PGDLLEXPORT void presence_ws_worker_main(Datum main_arg);
extern PGDLLEXPORT void presence_maintenance_main(Datum main_arg);

#endif							/* PRESENCE_WORKERS_H */
