/*-------------------------------------------------------------------------
 * worker_process.h
 *	  What every presence background worker does the same way.
 *-------------------------------------------------------------------------
 */
#ifndef PRESENCE_WORKER_PROCESS_H
#define PRESENCE_WORKER_PROCESS_H

#include "postmaster/interrupt.h"

extern void worker_process_start(void);
extern bool worker_process_interrupts(void);
extern bool worker_process_sleep(long timeout_ms);
extern void worker_process_report_stats(void);

#endif							/* PRESENCE_WORKER_PROCESS_H */
