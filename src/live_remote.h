/*-------------------------------------------------------------------------
 * live_remote.h
 *	  Live state's mirror in Redis, for the workers and nodes that share
 *	  sessions.
 *-------------------------------------------------------------------------
 */
#ifndef PRESENCE_LIVE_REMOTE_H
#define PRESENCE_LIVE_REMOTE_H

#include "redis_link.h"

extern void live_remote_init(void);
extern const RedisLinkHandlers live_remote_redis_handlers;

#endif							/* PRESENCE_LIVE_REMOTE_H */
