/*-------------------------------------------------------------------------
 * redis_link.h
 *	  A ws worker's asynchronous link to Redis (presence.redis_url).
 *-------------------------------------------------------------------------
 */
#ifndef PRESENCE_REDIS_LINK_H
#define PRESENCE_REDIS_LINK_H

#include <uv.h>

#include "presence.h"

/*
 * What the link calls up into, from inside hiredis callbacks (so none of
 * them may raise a PostgreSQL error).
 */
typedef struct RedisLinkHandlers
{
	/*
	 * A watched session's snapshot: entries alternate PresenceData JSON
	 * and the space-separated ids of that user's fresh connections;
	 * NULL when it could not be read.
	 */
	void		(*snapshot) (const char *session_id, const char **entries, int count);
	/* A message on a watched session's channel that is not this worker's own. */
	void		(*event) (const char *session_id, const char *payload, size_t len);
	/* A message on the node-wide commands channel. */
	void		(*command) (const char *payload, size_t len);
	/* Both connections are ready (up), or one of them was lost. */
	void		(*availability) (bool up);
} RedisLinkHandlers;

extern void redis_link_start(uv_loop_t *loop, const char *origin, const RedisLinkHandlers *handlers);
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
