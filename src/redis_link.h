/*-------------------------------------------------------------------------
 * redis_link.h
 *	  A ws worker's asynchronous link to Redis (presence.redis_url).
 *-------------------------------------------------------------------------
 */
#ifndef PRESENCE_REDIS_LINK_H
#define PRESENCE_REDIS_LINK_H

#include <uv.h>

#include "presence.h"

extern void redis_link_start(uv_loop_t *loop, const char *origin);
extern void redis_link_stop(void);
extern bool redis_link_ready(void);
extern const char *redis_link_origin(void);

extern bool redis_link_touch(const char *session_id, const char *user_id, const char *connection_id,
							 const char *presence_json, int64 now_ms, const char *message,
							 bool publish_always);
extern bool redis_link_cursor(const char *session_id, const char *user_id, const char *presence_json,
							  const char *message);
extern bool redis_link_remove(const char *session_id, const char *user_id, const char *connection_id,
							  int64 now_ms, const char *message);
extern bool redis_link_watch(const char *session_id);
extern void redis_link_unwatch(const char *session_id);
extern bool redis_link_publish_command(const char *message);

#endif							/* PRESENCE_REDIS_LINK_H */
