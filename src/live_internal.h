/*-------------------------------------------------------------------------
 * live_internal.h
 *	  The inside of live state, shared by live_state.c (sessions, users,
 *	  events, timeouts) and live_remote.c (their mirror in Redis) only.
 *-------------------------------------------------------------------------
 */
#ifndef PRESENCE_LIVE_INTERNAL_H
#define PRESENCE_LIVE_INTERNAL_H

#include "live_state.h"
#include "permissions.h"
#include "worker_db.h"

typedef struct LiveSession LiveSession;

typedef struct SessionUser
{
	dlist_node	node;			/* LiveSession.users */
	dlist_node	dirty_node;		/* live_dirty_users, when in it */
	bool		dirty;
	LiveSession *session;
	char		user_id[PRESENCE_UUID_LEN + 1];
	char		username[PRESENCE_USERNAME_MAX + 1];
	char		role[DB_ROLE_MAX + 1];	/* shown to others; Redis may set it */
	char		granted_role[DB_ROLE_MAX + 1];	/* what this worker's connections may do */
	bool		is_owner;		/* likewise from the database only */
	PresenceStatus status;		/* as last set; offline shows when no live connection */
	bool		auto_away;		/* away because of inactivity, not by request */
	int64		last_seen_ms;
	int64		last_activity_ms;
	CursorPosition cursor;
	char		activity[PRESENCE_ACTIVITY_MAX + 1];
	int			connections;	/* joined local connections */
	int			live_connections;	/* joined local connections not silent */
	char	  **remote_conns;	/* ids of the user's connections elsewhere */
	int			remote_count;
	int			remote_capacity;
	bool		visible_before_snapshot;
} SessionUser;

typedef struct Membership
{
	dlist_node	connection_node;	/* Connection.memberships */
	dlist_node	session_node;	/* LiveSession.members */
	Connection *connection;
	SessionUser *user;
	bool		awaiting_snapshot;	/* session_joined is owed once the snapshot is in */
	json_t	   *join_ref;
	int64		refreshed_ms;	/* last time Redis heard of this connection here */
	PermissionCache permissions;	/* presence.permission_function's answers */
} Membership;

typedef struct PendingEvent
{
	char	   *event;			/* JSON text: {"kind": ..., "user": PresenceData} */
	size_t		event_len;
	uint64		origin;			/* connection serial; 0 for server events */
	bool		is_cursor;
	int64		created_us;
	char		user_id[PRESENCE_UUID_LEN + 1];
} PendingEvent;

struct LiveSession
{
	char		session_id[PRESENCE_SESSION_ID_MAX + 1];
	LiveSession *hash_next;
	dlist_head	members;
	dlist_head	users;
	int			present_users;
	PendingEvent *events;
	int			nevents;
	int			events_capacity;
	bool		queued;			/* in live_pending_sessions */
	int			pinned;			/* being emptied by a caller; do not free */
	LiveSession *next_pending;
	bool		new_since_pass;
	int64		window_start_ms;
	int			bursts_in_window;
	bool		timed;
	int64		next_timed_flush_ms;
	bool		snapshot_pending;	/* watching in Redis, snapshot not in yet */
	int64		snapshot_requested_ms;
};

/*
 * What a session's mirror elsewhere hears of local changes (live_remote.c
 * installs one when Redis is configured).  announce: a connection is
 * present as its user, with kind the change to publish ("join",
 * "update", "cursor"), published always or only when the mirror did not
 * know the connection; withdraw: a connection left ("leave") or went
 * silent ("timeout"); watch / unwatch: a session's first member joined /
 * the session is freed; sweep: every sweep period.
 */
typedef struct LiveMirror
{
	void		(*announce) (Membership *membership, const char *kind, bool always);
	void		(*withdraw) (Membership *membership, const char *kind);
	void		(*watch) (LiveSession *session);
	void		(*unwatch) (LiveSession *session);
	void		(*sweep) (int64 now_ms);
} LiveMirror;

extern void live_set_mirror(const LiveMirror *mirror);
extern void live_sessions_each(void (*visit) (LiveSession *session, void *arg), void *arg);
extern LiveSession *live_session_find(const char *session_id);
extern void live_session_release_if_empty(LiveSession *session);
extern void live_session_deliver(LiveSession *session);
extern SessionUser *live_user_find(LiveSession *session, const char *user_id);
extern SessionUser *live_user_add(LiveSession *session, const char *user_id);
extern bool live_user_visible(SessionUser *user);
extern void live_user_free_if_gone(SessionUser *user);
extern json_t *live_presence_data(SessionUser *user);
extern char *live_presence_json(SessionUser *user);
extern void live_user_event(SessionUser *user, const char *kind, Connection *origin);
extern void live_mark_dirty(SessionUser *user);
extern void live_visibility_changed(SessionUser *user, bool was_visible, const char *gone_kind,
									Connection *origin);
extern void live_send_session_joined(Membership *membership, json_t *ref);
extern void live_end_session(const char *session_id, const char *status);
extern void live_change_role(const char *session_id, const char *user_id, const char *role);

#endif							/* PRESENCE_LIVE_INTERNAL_H */
