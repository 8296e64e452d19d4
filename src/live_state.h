/*-------------------------------------------------------------------------
 * live_state.h
 *	  Live presence of one ws worker: sessions, the users present in them
 *	  (aggregated over their connections), presence events, batching,
 *	  heartbeat and away timeouts.
 *-------------------------------------------------------------------------
 */
#ifndef PRESENCE_LIVE_STATE_H
#define PRESENCE_LIVE_STATE_H

#include <jansson.h>

#include "connection.h"
#include "permissions.h"
#include "protocol.h"
#include "shmem.h"

typedef enum JoinOutcome
{
	LIVE_JOIN_OK,
	LIVE_JOIN_FULL,
	LIVE_JOIN_NO_MEMORY
} JoinOutcome;

extern bool live_state_init(int worker_index);
extern const char *live_worker_tag(void);
extern JoinOutcome live_join(Connection *connection, const char *session_id, const char *role,
							 bool is_owner, const ClientRequest *request);
extern bool live_leave(Connection *connection, const char *session_id);
extern bool live_is_joined(Connection *connection, const char *session_id,
						   const char **role, bool *is_owner);
extern PermissionCache *live_permission_cache(Connection *connection, const char *session_id);
extern void live_permission_caches_clear(const char *session_id);
extern void live_joined_sessions_each(Connection *connection,
									  void (*callback) (Connection *connection, const char *session_id));
extern bool live_user_joined(const char *session_id, const char *user_id);
/* the causes of a user_left the server makes (docs/sql-reference.md, presence_timeline) */
#define LEAVE_CAUSE_REMOVED "removed"
#define LEAVE_CAUSE_PERMISSION_REVOKED "permission_revoked"

extern void live_remove_participant(const char *session_id, const char *user_id, const char *cause);
extern bool live_set_status(Connection *connection, const char *session_id,
							PresenceStatus status, const char *activity);
extern bool live_set_cursor(Connection *connection, const char *session_id,
							const CursorPosition *cursor);
extern void live_heartbeat(Connection *connection, const char *session_id,
						   const CursorPosition *cursor);
extern void live_message_received(Connection *connection, RequestType type);
extern void live_connection_closed(Connection *connection);

extern void live_sweep(int64 now_ms);
extern bool live_flush(int64 now_ms);
extern int64 live_next_deadline(int64 now_ms);

extern int	live_send_to_session(const char *session_id, json_t *message);
extern void live_apply_command(PresenceCommandKind kind, const char *session_id,
							   const char *user_id, json_t *payload);
extern void live_publish(void);
extern void live_gauges(int *sessions, int *users);

#endif							/* PRESENCE_LIVE_STATE_H */
