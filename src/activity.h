/*-------------------------------------------------------------------------
 * activity.h
 *	  The worker's activity queue and its bulk flush through SPI.
 *-------------------------------------------------------------------------
 */
#ifndef PRESENCE_ACTIVITY_H
#define PRESENCE_ACTIVITY_H

#include <jansson.h>

#include "connection.h"

extern bool activity_enqueue(const char *session_id, const char *user_id, const char *activity_type,
							 json_t *details, Connection *source, Connection *requester,
							 json_t *ref, bool announce);
extern bool activity_flush_due(int64 now_ms, bool force);
extern int64 activity_next_deadline(void);
extern bool activity_flush(void);
extern int	activity_pending(void);

#endif							/* PRESENCE_ACTIVITY_H */
