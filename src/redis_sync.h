/*-------------------------------------------------------------------------
 * redis_sync.h
 *	  Blocking, bounded Redis access for SQL functions and maintenance.
 *-------------------------------------------------------------------------
 */
#ifndef PRESENCE_REDIS_SYNC_H
#define PRESENCE_REDIS_SYNC_H

#include <hiredis/hiredis.h>

#include "redis_layout.h"

extern redisReply *redis_sync_session_users(const char *session_id, int64 now_ms);
extern redisReply *redis_sync_scan_sessions(const char *cursor);
extern redisReply *redis_sync_sweep_session(const char *session_id, const char *origin, int64 now_ms);

#endif							/* PRESENCE_REDIS_SYNC_H */
