/*-------------------------------------------------------------------------
 * live_state.c
 *	  Live presence of one ws worker, kept in memory.
 *
 * A LiveSession holds the connections joined to it (Memberships) and the
 * users present (SessionUsers).  Presence is per user, aggregated over
 * connections: a user's first connection in a session makes them join,
 * their last one leaving makes them leave, and they time out only when
 * every one of their connections has gone silent.
 *
 * Events are not sent where they happen.  They are appended to their
 * session and live_flush(), called once per event-loop pass, turns each
 * session's events into one frame, so the events of one pass travel
 * together and a quiet session pays no batching delay.  A session that
 * produces more than batch_max frames per batch_interval switches to
 * timed batching (one frame per interval, cursor events coalesced per
 * user, latest wins) until it is quiet again.  A client never receives
 * the events its own connection caused.
 *
 * With Redis (presence.redis_url), a session also mirrors the users
 * present through other workers and nodes: each SessionUser keeps the ids
 * of its connections elsewhere (remote_conns), learnt from a snapshot when
 * the worker starts watching the session and kept current by the
 * session's channel.  A user is visible while they have a live local
 * connection or any remote one; join, leave and timeout events are the
 * changes of that visibility, so a user with a tab on two nodes leaves
 * only when both are gone.  Every local change is also written to Redis
 * (redis_link.c), per connection, and published for the others.  When
 * Redis is down the local view simply goes on.
 *
 * Redis is trusted with what is shown, never with what is allowed
 * (docs/scaling.md, "What Redis is trusted with").  What a connection may
 * do is its granted_role and is_owner, which only the database sets: at
 * join, and when a change another node announced is read back from this
 * server's tables (recheck_request).  Users present only through Redis
 * do not fill a session unless the database knows them as participants.
 *
 * Everything here is plain C on malloc: it runs inside libwebsockets
 * callbacks, where a PostgreSQL error (longjmp) must never be raised;
 * the few database reads go through worker_db.c, which catches them.
 *-------------------------------------------------------------------------
 */
#include "presence.h"

#include "common/hashfn.h"

#include "activity.h"
#include "backoff.h"
#include "clock.h"
#include "live_state.h"
#include "redis_layout.h"
#include "redis_link.h"
#include "shmem.h"
#include "worker_db.h"
#include "ws_server.h"

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
} Membership;

typedef struct PendingEvent
{
	json_t	   *event;			/* {"kind": ..., "user": PresenceData} */
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
 * A change another node announced through Redis (a role, a removal, an
 * end), to be read back from this server's tables before anything here
 * follows it: for one user of a session, or for the session itself
 * (user_id empty).  On a standby the announcement usually comes before
 * the change has replayed, so it is read again, with growing waits,
 * for RECHECK_WINDOW_MS.  There is one per session and user with
 * connections here, however many announcements came.
 */
typedef struct Recheck
{
	char		session_id[PRESENCE_SESSION_ID_MAX + 1];
	char		user_id[PRESENCE_UUID_LEN + 1];
	int64		next_ms;
	int64		until_ms;
	Backoff		backoff;
} Recheck;

/* Longer than a standby's replay is held back by default (max_standby_streaming_delay, 30 s). */
#define RECHECK_WINDOW_MS 60000
#define RECHECK_FIRST_MS 200
#define RECHECK_CAP_MS 5000

static int	live_worker_index;
static LiveSession **live_buckets;
static int	live_bucket_count;
static int	live_session_count;
static LiveSession *live_pending_sessions;
static dlist_head live_dirty_users = DLIST_STATIC_INIT(live_dirty_users);
static LiveUserKey *live_removed_keys;
static int	live_removed_count;
static int	live_removed_capacity;
static Recheck *live_rechecks;
static int	live_recheck_count;
static int	live_recheck_capacity;

static void user_event(SessionUser *user, const char *kind, Connection *origin);
static void mark_dirty(SessionUser *user);
static void user_free(SessionUser *user);
static void send_session_joined(Membership *membership, json_t *ref);
static void redis_announce(Membership *membership, const char *kind, bool always);
static void redis_withdraw(Membership *membership, const char *kind);
static void session_deliver(LiveSession *session);
static void rechecks_due(int64 now_ms);

void
live_state_init(int worker_index)
{
	live_worker_index = worker_index;
	live_bucket_count = 1024;
	live_buckets = calloc(live_bucket_count, sizeof(LiveSession *));
	if (live_buckets == NULL)
		elog(ERROR, "presence: out of memory");
}

static uint32
session_hash(const char *session_id)
{
	return hash_bytes((const unsigned char *) session_id, (int) strlen(session_id));
}

static LiveSession *
session_find(const char *session_id)
{
	LiveSession *session = live_buckets[session_hash(session_id) & (live_bucket_count - 1)];

	while (session && strcmp(session->session_id, session_id) != 0)
		session = session->hash_next;
	return session;
}

/* Doubles the bucket array; on allocation failure the table just stays denser. */
static void
sessions_grow(void)
{
	int			new_count = live_bucket_count * 2;
	LiveSession **new_buckets = calloc(new_count, sizeof(LiveSession *));

	if (new_buckets == NULL)
		return;
	for (int i = 0; i < live_bucket_count; i++)
		while (live_buckets[i])
		{
			LiveSession *session = live_buckets[i];
			uint32		bucket = session_hash(session->session_id) & (new_count - 1);

			live_buckets[i] = session->hash_next;
			session->hash_next = new_buckets[bucket];
			new_buckets[bucket] = session;
		}
	free(live_buckets);
	live_buckets = new_buckets;
	live_bucket_count = new_count;
}

static LiveSession *
session_find_or_create(const char *session_id)
{
	LiveSession *session = session_find(session_id);
	uint32		bucket;

	if (session)
		return session;
	session = calloc(1, sizeof(LiveSession));
	if (session == NULL)
		return NULL;
	strlcpy(session->session_id, session_id, sizeof(session->session_id));
	dlist_init(&session->members);
	dlist_init(&session->users);
	session->window_start_ms = presence_now_ms();
	if (live_session_count >= live_bucket_count)
		sessions_grow();
	bucket = session_hash(session_id) & (live_bucket_count - 1);
	session->hash_next = live_buckets[bucket];
	live_buckets[bucket] = session;
	live_session_count++;
	return session;
}

/* Frees a session nobody is joined to once its last events are out. */
static void
session_release_if_empty(LiveSession *session)
{
	LiveSession **link;

	if (!dlist_is_empty(&session->members) || session->queued || session->pinned)
		return;
	while (!dlist_is_empty(&session->users))
		user_free(dlist_container(SessionUser, node, dlist_head_node(&session->users)));
	redis_link_unwatch(session->session_id);
	link = &live_buckets[session_hash(session->session_id) & (live_bucket_count - 1)];
	while (*link != session)
		link = &(*link)->hash_next;
	*link = session->hash_next;
	live_session_count--;
	for (int i = 0; i < session->nevents; i++)
		json_decref(session->events[i].event);
	free(session->events);
	free(session);
}

static SessionUser *
session_user_find(LiveSession *session, const char *user_id)
{
	dlist_iter	iter;

	dlist_foreach(iter, &session->users)
	{
		SessionUser *user = dlist_container(SessionUser, node, iter.cur);

		if (strcmp(user->user_id, user_id) == 0)
			return user;
	}
	return NULL;
}

static Membership *
membership_find(Connection *connection, const char *session_id)
{
	dlist_iter	iter;

	dlist_foreach(iter, &connection->memberships)
	{
		Membership *membership = dlist_container(Membership, connection_node, iter.cur);

		if (strcmp(membership->user->session->session_id, session_id) == 0)
			return membership;
	}
	return NULL;
}

/* Present here or anywhere else: what other clients should see. */
static bool
user_visible(SessionUser *user)
{
	return user->live_connections > 0 || user->remote_count > 0;
}

/* The user's PresenceData (PROTOCOL.md); offline while no connection is live. */
static json_t *
presence_data(SessionUser *user)
{
	PresenceStatus status = user_visible(user) ? user->status : STATUS_OFFLINE;
	json_t	   *data = json_pack("{s:s, s:s, s:s, s:s, s:I}",
								 "userId", user->user_id,
								 "username", user->username,
								 "role", user->role,
								 "status", presence_status_names[status],
								 "lastSeen", (json_int_t) user->last_seen_ms);

	if (data == NULL)
		return NULL;
	if (user->cursor.present)
		json_object_set_new(data, "cursor", json_pack("{s:s, s:I}", "eventId", user->cursor.event_id,
													  "position", (json_int_t) user->cursor.position));
	if (user->activity[0])
		json_object_set_new(data, "activity", json_string(user->activity));
	return data;
}

/*
 * Starts a new batching window once the current one is over.  A timed
 * session is quiet again, and back to immediate delivery, when it was not
 * busy in the window that ended, or when a whole window without events
 * has passed since (its count is then of an old, busy one).  Called when
 * an event is added, so a quiet session's new cursor events are not
 * coalesced, and at each flush.
 */
static void
session_roll_window(LiveSession *session, int64 now_ms)
{
	if (now_ms - session->window_start_ms < presence_batch_interval_ms)
		return;
	if (session->timed && (session->bursts_in_window <= presence_batch_max ||
						   now_ms - session->window_start_ms >= 2 * (int64) presence_batch_interval_ms))
		session->timed = false;
	session->window_start_ms = now_ms;
	session->bursts_in_window = 0;
}

/*
 * Appends a presence event to the user's session.  In timed mode a cursor
 * event replaces the user's previous pending cursor event.
 */
static void
user_event(SessionUser *user, const char *kind, Connection *origin)
{
	LiveSession *session = user->session;
	bool		is_cursor = strcmp(kind, "cursor") == 0;
	json_t	   *event = json_pack("{s:s, s:o*}", "kind", kind, "user", presence_data(user));
	PendingEvent *slot = NULL;

	mark_dirty(user);
	if (event == NULL)
		return;
	session_roll_window(session, presence_now_ms());
	if (is_cursor && session->timed)
		for (int i = 0; i < session->nevents && !slot; i++)
			if (session->events[i].is_cursor && strcmp(session->events[i].user_id, user->user_id) == 0)
			{
				slot = &session->events[i];
				json_decref(slot->event);
			}
	if (slot == NULL)
	{
		if (session->nevents == session->events_capacity)
		{
			int			capacity = Max(8, session->events_capacity * 2);
			PendingEvent *events = realloc(session->events, capacity * sizeof(PendingEvent));

			if (events == NULL)
			{
				json_decref(event);
				return;
			}
			session->events = events;
			session->events_capacity = capacity;
		}
		slot = &session->events[session->nevents++];
	}
	slot->event = event;
	slot->origin = origin ? origin->serial : 0;
	slot->is_cursor = is_cursor;
	slot->created_us = presence_now_us();
	strlcpy(slot->user_id, user->user_id, sizeof(slot->user_id));
	session->new_since_pass = true;
	if (!session->queued)
	{
		session->queued = true;
		session->next_pending = live_pending_sessions;
		live_pending_sessions = session;
	}
}

static void
log_user_activity(SessionUser *user, const char *activity_type, json_t *details, Connection *source)
{
	activity_enqueue(user->session->session_id, user->user_id, activity_type, details,
					 source, NULL, NULL, false);
	if (details)
		json_decref(details);
}

static void
mark_dirty(SessionUser *user)
{
	if (!user->dirty)
	{
		user->dirty = true;
		dlist_push_tail(&live_dirty_users, &user->dirty_node);
	}
}

/* Frees a user that has no connection here or elsewhere any more. */
static void
user_free(SessionUser *user)
{
	LiveSession *session = user->session;

	if (live_removed_count == live_removed_capacity)
	{
		int			capacity = Max(64, live_removed_capacity * 2);
		LiveUserKey *keys = realloc(live_removed_keys, capacity * sizeof(LiveUserKey));

		if (keys)
		{
			live_removed_keys = keys;
			live_removed_capacity = capacity;
		}
	}
	if (live_removed_count < live_removed_capacity)
	{
		LiveUserKey *key = &live_removed_keys[live_removed_count++];

		memset(key, 0, sizeof(*key));
		strlcpy(key->session_id, session->session_id, sizeof(key->session_id));
		strlcpy(key->user_id, user->user_id, sizeof(key->user_id));
		key->worker = live_worker_index;
	}
	if (user->dirty)
		dlist_delete(&user->dirty_node);
	dlist_delete(&user->node);
	for (int i = 0; i < user->remote_count; i++)
		free(user->remote_conns[i]);
	free(user->remote_conns);
	free(user);
}

static void
user_free_if_gone(SessionUser *user)
{
	if (user->connections == 0 && user->remote_count == 0)
		user_free(user);
}

/*
 * After any change to a user's connections, here or elsewhere: when the
 * user became visible or stopped being visible, that is the join, or the
 * leave / timeout (gone_kind), others see.
 */
static void
visibility_changed(SessionUser *user, bool was_visible, const char *gone_kind, Connection *origin)
{
	bool		visible = user_visible(user);

	if (visible == was_visible)
		return;
	user->session->present_users += visible ? 1 : -1;
	user_event(user, visible ? "join" : gone_kind, origin);
}

static SessionUser *
session_user_add(LiveSession *session, const char *user_id)
{
	SessionUser *user = calloc(1, sizeof(SessionUser));

	if (user == NULL)
		return NULL;
	user->session = session;
	strlcpy(user->user_id, user_id, sizeof(user->user_id));
	user->status = STATUS_ONLINE;
	user->last_activity_ms = presence_now_ms();
	dlist_push_tail(&session->users, &user->node);
	return user;
}

/* This worker's connections carry its origin as their id prefix. */
static bool
connection_is_ours(const char *connection_id)
{
	const char *origin = redis_link_origin();
	size_t		len = strlen(origin);

	return strncmp(connection_id, origin, len) == 0 && connection_id[len] == ':';
}

static void
remote_add(SessionUser *user, const char *connection_id)
{
	char	  **grown;

	for (int i = 0; i < user->remote_count; i++)
		if (strcmp(user->remote_conns[i], connection_id) == 0)
			return;
	if (user->remote_count == user->remote_capacity)
	{
		int			capacity = Max(4, user->remote_capacity * 2);

		grown = realloc(user->remote_conns, capacity * sizeof(char *));
		if (grown == NULL)
			return;
		user->remote_conns = grown;
		user->remote_capacity = capacity;
	}
	if ((user->remote_conns[user->remote_count] = strdup(connection_id)) != NULL)
		user->remote_count++;
}

/* Forgets one remote connection, or all of them for "*". */
static void
remote_remove(SessionUser *user, const char *connection_id)
{
	for (int i = user->remote_count - 1; i >= 0; i--)
		if (strcmp(connection_id, "*") == 0 || strcmp(user->remote_conns[i], connection_id) == 0)
		{
			free(user->remote_conns[i]);
			user->remote_conns[i] = user->remote_conns[--user->remote_count];
		}
}

/*
 * The message published for a change of one connection (malloc'd).
 * Every field but the PresenceData is an identifier made here, with no
 * character JSON would escape, so it is assembled as text around the one
 * serialisation; the origin comes first, as redis_link's echo check
 * expects.
 */
static char *
change_message(const char *kind, Membership *membership, const char *presence_json)
{
	size_t		len = (presence_json ? strlen(presence_json) : 0) + 320;
	char	   *message = malloc(len);

	if (message)
		snprintf(message, len, "{\"o\":\"%s\",\"k\":\"%s\",\"c\":\"%s\",\"uid\":\"%s\"%s%s}",
				 redis_link_origin(), kind, membership->connection->id, membership->user->user_id,
				 presence_json ? ",\"u\":" : "", presence_json ? presence_json : "");
	return message;
}

/*
 * Tells Redis this connection is present as the user: refreshes its entry
 * and the user's PresenceData, and publishes a message of kind (always,
 * or only when Redis did not know the connection: see the touch script).
 */
static void
redis_announce(Membership *membership, const char *kind, bool always)
{
	SessionUser *user = membership->user;
	json_t	   *data;
	char	   *presence_json;
	char	   *message = NULL;

	if (!redis_link_ready())
		return;
	data = presence_data(user);
	presence_json = data ? json_dumps(data, JSON_COMPACT) : NULL;
	if (presence_json && kind)
		message = change_message(kind, membership, presence_json);
	if (presence_json && message && strcmp(kind, "cursor") == 0 &&
		presence_now_ms() - membership->refreshed_ms < presence_presence_ttl_ms / 3)
		redis_link_cursor(user->session->session_id, user->user_id, presence_json, message);
	else if (presence_json)
	{
		redis_link_touch(user->session->session_id, user->user_id, membership->connection->id,
						 presence_json, presence_now_ms(), message, always);
		membership->refreshed_ms = presence_now_ms();
	}
	free(message);
	free(presence_json);
	if (data)
		json_decref(data);
}

/* Tells Redis this connection is gone from the session (kind: leave / timeout). */
static void
redis_withdraw(Membership *membership, const char *kind)
{
	SessionUser *user = membership->user;
	char	   *message;

	if (!redis_link_ready())
		return;
	message = change_message(kind, membership, NULL);
	redis_link_remove(user->session->session_id, user->user_id, membership->connection->id,
					  presence_now_ms(), message);
	free(message);
}

/*
 * Takes a remote user's state from their PresenceData; fields that are
 * missing or malformed keep their value (redis_parse_presence).
 */
static void
copy_presence_data(SessionUser *user, json_t *data)
{
	RedisPresence presence;

	redis_parse_presence(data, &presence);
	if (presence.username)
		strlcpy(user->username, presence.username, sizeof(user->username));
	if (presence.role)
		strlcpy(user->role, presence.role, sizeof(user->role));
	if (presence.status >= 0)
		user->status = (PresenceStatus) presence.status;
	if (presence.has_last_seen)
		user->last_seen_ms = presence.last_seen_ms;
	user->cursor.present = presence.has_cursor;
	if (presence.has_cursor)
	{
		strlcpy(user->cursor.event_id, presence.cursor_event_id, sizeof(user->cursor.event_id));
		user->cursor.position = presence.cursor_position;
	}
	strlcpy(user->activity, presence.activity ? presence.activity : "", sizeof(user->activity));
}

/* Starts mirroring a session from Redis; joins wait for its snapshot. */
static void
session_watch(LiveSession *session)
{
	if (redis_link_watch(session->session_id))
	{
		session->snapshot_pending = true;
		session->snapshot_requested_ms = presence_now_ms();
	}
}

/*
 * Whether a session with presence.max_participants users visible is full
 * for one more.  Who is visible through Redis is only Redis's word, and a
 * flood of made-up users must not lock real participants out: the
 * visible users are counted again as the database knows them, current
 * participants only.  Should it not answer, the users of this worker's
 * own connections count, whom it checked when they joined.  Only a
 * session at its limit pays for the query.
 */
static bool
session_full(LiveSession *session)
{
	/* each id with its separator, and the terminator */
	size_t		capacity = (size_t) session->present_users * (PRESENCE_UUID_LEN + 1) + 1;
	char	   *user_ids = malloc(capacity);
	size_t		len = 0;
	int			count = 0;
	dlist_iter	iter;

	if (user_ids == NULL)
		return true;
	user_ids[0] = '\0';
	dlist_foreach(iter, &session->users)
	{
		SessionUser *user = dlist_container(SessionUser, node, iter.cur);

		if (user_visible(user) && len + strlen(user->user_id) + 2 <= capacity)
			len += snprintf(user_ids + len, capacity - len, "%s%s", len ? "," : "", user->user_id);
	}
	if (db_count_participants(session->session_id, user_ids, &count) != DB_OK)
	{
		count = 0;
		dlist_foreach(iter, &session->users)
		{
			if (dlist_container(SessionUser, node, iter.cur)->live_connections > 0)
				count++;
		}
	}
	free(user_ids);
	return count >= presence_max_participants;
}

/*
 * Joins connection to a session with the role the database granted and
 * answers with session_joined: at once, or, when the session's Redis
 * snapshot is still on its way, as soon as it arrives, so the list of
 * users includes those on other workers and nodes.
 */
JoinOutcome
live_join(Connection *connection, const char *session_id, const char *role, bool is_owner,
		  const ClientRequest *request)
{
	LiveSession *session;
	SessionUser *user;
	Membership *membership = membership_find(connection, session_id);
	int64		now = presence_now_ms();
	bool		was_visible;

	if (membership != NULL)
	{
		send_session_joined(membership, request->ref);
		return LIVE_JOIN_OK;
	}
	session = session_find_or_create(session_id);
	if (session == NULL)
		return LIVE_JOIN_NO_MEMORY;
	user = session_user_find(session, connection->user_id);
	if ((user == NULL || !user_visible(user)) && session->present_users >= presence_max_participants &&
		session_full(session))
	{
		session_release_if_empty(session);
		return LIVE_JOIN_FULL;
	}
	membership = calloc(1, sizeof(Membership));
	if (membership == NULL || (user == NULL && (user = session_user_add(session, connection->user_id)) == NULL))
	{
		free(membership);
		session_release_if_empty(session);
		return LIVE_JOIN_NO_MEMORY;
	}
	if (dlist_is_empty(&session->members))
		session_watch(session);

	was_visible = user_visible(user);
	strlcpy(user->username, connection->username, sizeof(user->username));
	strlcpy(user->role, role, sizeof(user->role));
	strlcpy(user->granted_role, role, sizeof(user->granted_role));
	user->is_owner = is_owner;
	membership->connection = connection;
	membership->user = user;
	dlist_push_tail(&connection->memberships, &membership->connection_node);
	dlist_push_tail(&session->members, &membership->session_node);
	user->connections++;
	user->live_connections++;
	user->last_seen_ms = now;
	if (request->status >= 0)
	{
		user->status = (PresenceStatus) request->status;
		user->auto_away = false;
	}
	if (request->activity)
		strlcpy(user->activity, request->activity, sizeof(user->activity));
	if (request->cursor.present)
		user->cursor = request->cursor;
	if (!was_visible)
	{
		visibility_changed(user, false, "leave", connection);
		log_user_activity(user, "user_joined", NULL, connection);
	}
	else if (request->status >= 0 || request->activity || request->cursor.present)
		user_event(user, "update", connection);
	mark_dirty(user);
	redis_announce(membership, "join", true);

	if (session->snapshot_pending)
	{
		membership->awaiting_snapshot = true;
		membership->join_ref = request->ref ? json_incref(request->ref) : NULL;
	}
	else
		send_session_joined(membership, request->ref);
	return LIVE_JOIN_OK;
}

/* session_joined: the session's visible users, this one included. */
static void
send_session_joined(Membership *membership, json_t *ref)
{
	LiveSession *session = membership->user->session;
	json_t	   *reply = protocol_reply("session_joined", ref);
	json_t	   *users = json_array();
	dlist_iter	iter;

	if (reply == NULL || users == NULL)
	{
		if (reply)
			json_decref(reply);
		if (users)
			json_decref(users);
		return;
	}
	dlist_foreach(iter, &session->users)
	{
		SessionUser *present = dlist_container(SessionUser, node, iter.cur);

		if (user_visible(present) || present == membership->user)
			json_array_append_new(users, presence_data(present));
	}
	json_object_set_new(reply, "sessionId", json_string(session->session_id));
	json_object_set_new(reply, "role", json_string(membership->user->granted_role));
	json_object_set_new(reply, "users", users);
	ws_send_json(membership->connection, reply);
}

/*
 * Removes one membership.  The user leaves when it was their last live
 * connection here and they have none elsewhere.
 */
static void
membership_remove(Membership *membership, bool announce)
{
	SessionUser *user = membership->user;
	LiveSession *session = user->session;
	Connection *connection = membership->connection;
	bool		was_visible = user_visible(user);

	if (!connection->silent)
		redis_withdraw(membership, "leave");
	dlist_delete(&membership->connection_node);
	dlist_delete(&membership->session_node);
	if (membership->join_ref)
		json_decref(membership->join_ref);
	free(membership);
	user->connections--;
	if (!connection->silent)
		user->live_connections--;
	if (announce)
	{
		visibility_changed(user, was_visible, "leave", connection);
		if (was_visible && !user_visible(user))
			log_user_activity(user, "user_left", NULL, connection);
	}
	else if (was_visible && !user_visible(user))
		session->present_users--;
	user_free_if_gone(user);
	session_release_if_empty(session);
}

bool
live_leave(Connection *connection, const char *session_id)
{
	Membership *membership = membership_find(connection, session_id);

	if (membership == NULL)
		return false;
	membership_remove(membership, true);
	return true;
}

bool
live_is_joined(Connection *connection, const char *session_id, const char **role, bool *is_owner)
{
	Membership *membership = membership_find(connection, session_id);

	if (membership == NULL)
		return false;
	if (role)
		*role = membership->user->granted_role;
	if (is_owner)
		*is_owner = membership->user->is_owner;
	return true;
}

bool
live_set_status(Connection *connection, const char *session_id, PresenceStatus status,
				const char *activity)
{
	Membership *membership = membership_find(connection, session_id);
	SessionUser *user;
	bool		status_changed;

	if (membership == NULL)
		return false;
	user = membership->user;
	status_changed = user->status != status;
	user->status = status;
	user->auto_away = false;
	if (activity)
		strlcpy(user->activity, activity, sizeof(user->activity));
	user_event(user, "update", connection);
	redis_announce(membership, "update", true);
	if (status_changed)
		log_user_activity(user, "status_changed",
						  json_pack("{s:s, s:b}", "status", presence_status_names[status], "automatic", 0),
						  connection);
	return true;
}

bool
live_set_cursor(Connection *connection, const char *session_id, const CursorPosition *cursor)
{
	Membership *membership = membership_find(connection, session_id);

	if (membership == NULL)
		return false;
	membership->user->cursor = *cursor;
	user_event(membership->user, "cursor", connection);
	redis_announce(membership, "cursor", true);
	return true;
}

/*
 * A heartbeat keeps the user's lastSeen fresh in one session or in all
 * the connection's sessions; a cursor it carries that differs from the
 * known one is a cursor move.
 */
void
live_heartbeat(Connection *connection, const char *session_id, const CursorPosition *cursor)
{
	dlist_iter	iter;
	int64		now = presence_now_ms();

	dlist_foreach(iter, &connection->memberships)
	{
		Membership *membership = dlist_container(Membership, connection_node, iter.cur);
		SessionUser *user = membership->user;

		if (session_id && strcmp(user->session->session_id, session_id) != 0)
			continue;
		user->last_seen_ms = now;
		mark_dirty(user);
		if (cursor && cursor->present &&
			(!user->cursor.present || user->cursor.position != cursor->position ||
			 strcmp(user->cursor.event_id, cursor->event_id) != 0))
		{
			user->cursor = *cursor;
			user_event(user, "cursor", connection);
			redis_announce(membership, "cursor", true);
		}
	}
}

/*
 * A status the server sets by itself: away after inactivity, online again
 * on activity.  Others see an update; the change is logged.
 */
static void
automatic_status(Membership *membership, PresenceStatus status, Connection *origin)
{
	SessionUser *user = membership->user;

	user->status = status;
	user->auto_away = status == STATUS_AWAY;
	user_event(user, "update", origin);
	redis_announce(membership, "update", true);
	log_user_activity(user, "status_changed",
					  json_pack("{s:s, s:b}", "status", presence_status_names[status], "automatic", 1), origin);
}

/*
 * Bookkeeping for every message from an authenticated connection: a
 * silent connection comes back (its users rejoin), and anything but a
 * heartbeat is activity that ends automatic away.
 */
void
live_message_received(Connection *connection, RequestType type)
{
	int64		now = presence_now_ms();
	dlist_iter	iter;
	bool		resumed = connection->silent;

	connection->last_message_ms = now;
	connection->silent = false;
	dlist_foreach(iter, &connection->memberships)
	{
		Membership *membership = dlist_container(Membership, connection_node, iter.cur);
		SessionUser *user = membership->user;

		user->last_seen_ms = now;
		mark_dirty(user);
		if (resumed)
		{
			bool		was_visible = user_visible(user);

			user->live_connections++;
			if (!was_visible)
			{
				user->status = STATUS_ONLINE;
				user->auto_away = false;
				user->last_activity_ms = now;
				visibility_changed(user, false, "leave", connection);
				log_user_activity(user, "user_joined", json_pack("{s:b}", "resumed", 1), connection);
			}
			redis_announce(membership, "join", true);
			continue;
		}
		if (type == REQ_HEARTBEAT)
			continue;
		user->last_activity_ms = now;
		if (user->auto_away && user->status == STATUS_AWAY && type != REQ_PRESENCE_UPDATE)
			automatic_status(membership, STATUS_ONLINE, connection);
	}
}

void
live_connection_closed(Connection *connection)
{
	while (!dlist_is_empty(&connection->memberships))
		membership_remove(dlist_container(Membership, connection_node,
										  dlist_head_node(&connection->memberships)), true);
}

/*
 * Heartbeat timeouts (per connection, felt per user) and automatic away.
 * The worker calls it every sweep period, not every pass, so an idle
 * worker wakes rarely.
 */
void
live_sweep(int64 now_ms)
{
	dlist_iter	iter;
	int64		silent_after = presence_heartbeat_interval_ms + presence_heartbeat_timeout_ms;

	dlist_foreach(iter, ws_server_connections())
	{
		Connection *connection = dlist_container(Connection, all_node, iter.cur);
		dlist_iter	member_iter;

		if (!connection->authenticated || connection->silent ||
			now_ms - connection->last_message_ms < silent_after)
			continue;
		connection->silent = true;
		presence_count(CTR_HEARTBEATS_MISSED, 1);
		dlist_foreach(member_iter, &connection->memberships)
		{
			Membership *membership = dlist_container(Membership, connection_node, member_iter.cur);
			SessionUser *user = membership->user;
			bool		was_visible = user_visible(user);

			redis_withdraw(membership, "timeout");
			user->live_connections--;
			visibility_changed(user, was_visible, "timeout", NULL);
			if (was_visible && !user_visible(user))
				log_user_activity(user, "user_timeout",
								  json_pack("{s:I}", "silent_ms", (json_int_t) (now_ms - connection->last_message_ms)),
								  connection);
		}
	}

	for (int b = 0; b < live_bucket_count; b++)
		for (LiveSession *session = live_buckets[b]; session; session = session->hash_next)
		{
			if (session->snapshot_pending &&
				now_ms - session->snapshot_requested_ms >= 2 * presence_redis_connect_timeout_ms)
				live_apply_snapshot(session->session_id, NULL, 0);
			dlist_foreach(iter, &session->members)
			{
				Membership *membership = dlist_container(Membership, session_node, iter.cur);
				SessionUser *user = membership->user;

				/* keep Redis's view of this live connection fresh, well within the TTL */
				if (!membership->connection->silent &&
					now_ms - membership->refreshed_ms >= presence_presence_ttl_ms / 3)
					redis_announce(membership, "join", false);
				if (!membership->connection->silent && user->status == STATUS_ONLINE &&
					now_ms - user->last_activity_ms >= presence_away_threshold_ms)
					automatic_status(membership, STATUS_AWAY, NULL);
			}
		}
	rechecks_due(now_ms);
}

/* One presence frame of the session's events, leaving out one origin's. */
static OutFrame *
session_frame(LiveSession *session, uint64 excluded_origin)
{
	json_t	   *events = json_array();
	json_t	   *message;
	int64		oldest_us = INT64_MAX;
	OutFrame   *frame = NULL;

	if (events == NULL)
		return NULL;
	for (int i = 0; i < session->nevents; i++)
		if (excluded_origin == 0 || session->events[i].origin != excluded_origin)
		{
			json_array_append(events, session->events[i].event);
			oldest_us = Min(oldest_us, session->events[i].created_us);
		}
	if (json_array_size(events) == 0)
	{
		json_decref(events);
		return NULL;
	}
	message = json_pack("{s:s, s:s, s:o}", "type", "presence", "sessionId", session->session_id,
						"events", events);
	if (message)
	{
		frame = frame_from_json(message, oldest_us);
		json_decref(message);
	}
	return frame;
}

static bool
caused_any_event(LiveSession *session, uint64 serial)
{
	for (int i = 0; i < session->nevents; i++)
		if (session->events[i].origin == serial)
			return true;
	return false;
}

/* Sends the session's pending events to every joined connection. */
static void
session_deliver(LiveSession *session)
{
	OutFrame   *everything = session_frame(session, 0);
	dlist_iter	iter;

	dlist_foreach(iter, &session->members)
	{
		Membership *membership = dlist_container(Membership, session_node, iter.cur);
		Connection *connection = membership->connection;

		/* its session_joined, still to come, will carry the state */
		if (membership->awaiting_snapshot)
			continue;
		if (caused_any_event(session, connection->serial))
		{
			OutFrame   *others = session_frame(session, connection->serial);

			if (others)
			{
				ws_send_frame(connection, others);
				frame_release(others);
			}
		}
		else if (everything)
			ws_send_frame(connection, everything);
	}
	if (everything)
		frame_release(everything);
	for (int i = 0; i < session->nevents; i++)
		json_decref(session->events[i].event);
	session->nevents = 0;
}

/*
 * End of an event-loop pass: every session with events sends them as one
 * frame, unless it is in timed batching and its interval has not passed.
 * Returns true when anything was sent.
 */
bool
live_flush(int64 now_ms)
{
	LiveSession *still_pending = NULL;
	bool		sent = false;

	while (live_pending_sessions)
	{
		LiveSession *session = live_pending_sessions;

		live_pending_sessions = session->next_pending;
		session_roll_window(session, now_ms);
		if (session->new_since_pass)
		{
			session->bursts_in_window++;
			session->new_since_pass = false;
		}
		if (!session->timed && session->bursts_in_window > presence_batch_max)
		{
			session->timed = true;
			session->next_timed_flush_ms = session->window_start_ms + presence_batch_interval_ms;
		}
		if (session->timed && now_ms < session->next_timed_flush_ms)
		{
			session->next_pending = still_pending;
			still_pending = session;
			continue;
		}
		if (session->timed)
			session->next_timed_flush_ms = now_ms + presence_batch_interval_ms;
		session_deliver(session);
		sent = true;
		session->queued = false;
		session_release_if_empty(session);
	}
	live_pending_sessions = still_pending;
	return sent;
}

/* The next time live state needs the loop: a timed batch falling due. */
int64
live_next_deadline(int64 now_ms)
{
	int64		deadline = INT64_MAX;

	for (LiveSession *session = live_pending_sessions; session; session = session->next_pending)
		deadline = Min(deadline, session->timed ? session->next_timed_flush_ms : now_ms);
	return deadline;
}

/* Sends one message to every connection joined to a session; returns how many. */
int
live_send_to_session(const char *session_id, json_t *message)
{
	LiveSession *session = session_find(session_id);
	OutFrame   *frame;
	dlist_iter	iter;
	int			reached = 0;

	if (session == NULL || (frame = frame_from_json(message, presence_now_us())) == NULL)
		return 0;
	dlist_foreach(iter, &session->members)
	{
		ws_send_frame(dlist_container(Membership, session_node, iter.cur)->connection, frame);
		reached++;
	}
	frame_release(frame);
	return reached;
}

/* The session ended (SQL or a client): tell everyone, then drop it. */
void
live_end_session(const char *session_id, const char *status)
{
	LiveSession *session = session_find(session_id);
	json_t	   *message;

	if (session == NULL)
		return;
	message = json_pack("{s:s, s:s, s:s}", "type", "session_ended", "sessionId", session_id,
						"status", status);
	if (message)
	{
		live_send_to_session(session_id, message);
		json_decref(message);
	}
	session->pinned++;
	while (!dlist_is_empty(&session->members))
		membership_remove(dlist_container(Membership, session_node,
										  dlist_head_node(&session->members)), false);
	for (int i = 0; i < session->nevents; i++)
		json_decref(session->events[i].event);
	session->nevents = 0;
	session->pinned--;
	session_release_if_empty(session);
}

/* A participant was removed through SQL: their connections leave at once. */
void
live_remove_participant(const char *session_id, const char *user_id)
{
	LiveSession *session = session_find(session_id);
	dlist_mutable_iter iter;
	json_t	   *notice;

	if (session == NULL)
		return;
	notice = json_pack("{s:s, s:s, s:s}", "type", "session_removed", "sessionId", session_id,
					   "reason", "removed from the session");
	session->pinned++;
	dlist_foreach_modify(iter, &session->members)
	{
		Membership *membership = dlist_container(Membership, session_node, iter.cur);

		if (strcmp(membership->user->user_id, user_id) != 0)
			continue;
		if (notice)
			ws_send_json(membership->connection, json_incref(notice));
		membership_remove(membership, true);
	}
	session->pinned--;
	session_release_if_empty(session);
	if (notice)
		json_decref(notice);
}

/*
 * A participant's role changed in the database (this node's SQL, or read
 * back from its tables): what their connections here may do, and what
 * everyone is shown.
 */
void
live_change_role(const char *session_id, const char *user_id, const char *role)
{
	LiveSession *session = session_find(session_id);
	SessionUser *user = session ? session_user_find(session, user_id) : NULL;
	bool		shown_changed;

	if (user == NULL || role == NULL)
		return;
	shown_changed = strcmp(user->role, role) != 0;
	strlcpy(user->role, role, sizeof(user->role));
	strlcpy(user->granted_role, role, sizeof(user->granted_role));
	if (shown_changed)
		user_event(user, "update", NULL);
}

/* Publishes changed and departed users to shared memory for online_users(). */
void
live_publish(void)
{
	LiveUserEntry *entries;
	int			count = 0,
				capacity = 0;
	dlist_iter	iter;

	dlist_foreach(iter, &live_dirty_users)
		capacity++;
	if (capacity == 0 && live_removed_count == 0)
		return;
	entries = capacity ? malloc(capacity * sizeof(LiveUserEntry)) : NULL;
	if (capacity && entries == NULL)
		return;					/* retried next pass; the dirty list stays */
	while (!dlist_is_empty(&live_dirty_users))
	{
		SessionUser *user = dlist_container(SessionUser, dirty_node,
											dlist_pop_head_node(&live_dirty_users));
		LiveUserEntry *entry = &entries[count++];

		user->dirty = false;
		memset(entry, 0, sizeof(*entry));
		strlcpy(entry->key.session_id, user->session->session_id, sizeof(entry->key.session_id));
		strlcpy(entry->key.user_id, user->user_id, sizeof(entry->key.user_id));
		entry->key.worker = live_worker_index;
		strlcpy(entry->username, user->username, sizeof(entry->username));
		strlcpy(entry->role, user->role, sizeof(entry->role));
		strlcpy(entry->status, presence_status_names[user_visible(user) ? user->status : STATUS_OFFLINE],
				sizeof(entry->status));
		entry->last_seen_ms = user->last_seen_ms;
		entry->has_cursor = user->cursor.present;
		strlcpy(entry->cursor_event_id, user->cursor.event_id, sizeof(entry->cursor_event_id));
		entry->cursor_position = user->cursor.position;
		strlcpy(entry->activity, user->activity, sizeof(entry->activity));
		entry->connections = user->connections + user->remote_count;
	}
	presence_live_publish(entries, count, live_removed_keys, live_removed_count);
	live_removed_count = 0;
	free(entries);
}

void
live_gauges(int *sessions, int *users)
{
	*sessions = live_session_count;
	*users = 0;
	for (int b = 0; b < live_bucket_count; b++)
		for (LiveSession *session = live_buckets[b]; session; session = session->hash_next)
			*users += session->present_users;
}

/*
 * A session's snapshot from Redis (or NULL when it could not be read):
 * entries alternate PresenceData JSON and the space-separated ids of the
 * user's fresh connections.  Remote connections are replaced wholesale,
 * so a reconnect after an outage converges; then the joins that waited
 * for the snapshot are answered.
 */
void
live_apply_snapshot(const char *session_id, const char **entries, int count)
{
	LiveSession *session = session_find(session_id);
	dlist_mutable_iter iter;

	if (session == NULL)
		return;
	session->pinned++;
	if (entries != NULL)
	{
		dlist_foreach_modify(iter, &session->users)
		{
			SessionUser *user = dlist_container(SessionUser, node, iter.cur);

			user->visible_before_snapshot = user_visible(user);
			remote_remove(user, "*");
		}
		for (int i = 0; i + 1 < count; i += 2)
		{
			json_t	   *data = json_loads(entries[i], 0, NULL);
			RedisPresence presence;
			SessionUser *user;
			char	   *conns;
			char	   *save = NULL;

			redis_parse_presence(data, &presence);
			if (presence.user_id == NULL ||
				((user = session_user_find(session, presence.user_id)) == NULL &&
				 (user = session_user_add(session, presence.user_id)) == NULL))
			{
				if (data)
					json_decref(data);
				continue;
			}
			if (user->connections == 0)
				copy_presence_data(user, data);
			conns = strdup(entries[i + 1]);
			for (char *id = conns ? strtok_r(conns, " ", &save) : NULL; id; id = strtok_r(NULL, " ", &save))
				if (!connection_is_ours(id))
					remote_add(user, id);
			free(conns);
			json_decref(data);
		}
		dlist_foreach_modify(iter, &session->users)
		{
			SessionUser *user = dlist_container(SessionUser, node, iter.cur);

			visibility_changed(user, user->visible_before_snapshot, "leave", NULL);
			user_free_if_gone(user);
		}
	}
	session->snapshot_pending = false;
	/* what the snapshot changed goes out now, to the members it is news to */
	if (session->nevents > 0)
		session_deliver(session);
	dlist_foreach_modify(iter, &session->members)
	{
		Membership *membership = dlist_container(Membership, session_node, iter.cur);

		if (!membership->awaiting_snapshot)
			continue;
		membership->awaiting_snapshot = false;
		send_session_joined(membership, membership->join_ref);
		if (membership->join_ref)
			json_decref(membership->join_ref);
		membership->join_ref = NULL;
	}
	session->pinned--;
	session_release_if_empty(session);
}

/*
 * A change published by another worker or node on a session's channel.
 * join / update / cursor add the connection and take the user's state;
 * leave / timeout remove it ("*": all of the user's).  Local clients see
 * what changed in the session's visible users.
 */
void
live_apply_remote_event(const char *session_id, const char *payload, size_t len)
{
	LiveSession *session = session_find(session_id);
	RedisEvent	event;
	const char *kind,
			   *connection_id,
			   *user_id;
	SessionUser *user;
	bool		was_visible;

	if (session == NULL || !redis_parse_event(payload, len, &event))
		return;
	kind = event.kind;
	connection_id = event.connection_id;
	user_id = event.user_id;
	if (strcmp(event.origin, redis_link_origin()) == 0 || connection_is_ours(connection_id))
	{
		json_decref(event.root);
		return;
	}
	user = session_user_find(session, user_id);
	if (strcmp(kind, "leave") == 0 || strcmp(kind, "timeout") == 0)
	{
		if (user)
		{
			was_visible = user_visible(user);
			remote_remove(user, connection_id);
			visibility_changed(user, was_visible, kind, NULL);
			user_free_if_gone(user);
		}
	}
	else if (event.presence != NULL &&
			 (user != NULL || (user = session_user_add(session, user_id)) != NULL))
	{
		PresenceStatus old_status = user->status;
		char		old_role[sizeof(user->role)];
		char		old_activity[sizeof(user->activity)];

		strlcpy(old_role, user->role, sizeof(old_role));
		strlcpy(old_activity, user->activity, sizeof(old_activity));
		was_visible = user_visible(user);
		copy_presence_data(user, event.presence);
		remote_add(user, connection_id);
		if (!was_visible)
			visibility_changed(user, false, "leave", NULL);
		else if (strcmp(kind, "cursor") == 0)
			user_event(user, "cursor", NULL);
		else if (user->status != old_status || strcmp(user->role, old_role) != 0 ||
				 strcmp(user->activity, old_activity) != 0)
			user_event(user, "update", NULL);
		mark_dirty(user);
	}
	json_decref(event.root);
}

/*
 * A command from SQL (presence._notify_workers): broadcast, session_ended,
 * participant_removed, participant_changed, for this worker's clients.
 */
void
live_apply_command(const char *command, const char *session_id, const char *user_id, json_t *payload)
{
	if (strcmp(command, "broadcast") == 0 && payload)
	{
		json_t	   *message = json_pack("{s:s, s:s, s:O}", "type", "broadcast",
										"sessionId", session_id, "payload", payload);

		if (message)
		{
			live_send_to_session(session_id, message);
			json_decref(message);
		}
	}
	else if (strcmp(command, "session_ended") == 0)
		live_end_session(session_id, json_is_string(payload) ? json_string_value(payload) : "completed");
	else if (strcmp(command, "participant_removed") == 0 && user_id)
		live_remove_participant(session_id, user_id);
	else if (strcmp(command, "participant_changed") == 0 && user_id)
		live_change_role(session_id, user_id, json_is_string(payload) ? json_string_value(payload) : NULL);
}

/* Whether a recheck has anything here to act on: the session's or the user's connections. */
static bool
recheck_has_local(const Recheck *recheck)
{
	LiveSession *session = session_find(recheck->session_id);
	SessionUser *user;

	if (session == NULL || dlist_is_empty(&session->members))
		return false;
	if (recheck->user_id[0] == '\0')
		return true;
	user = session_user_find(session, recheck->user_id);
	return user != NULL && user->connections > 0;
}

/*
 * Makes the session, or the user's standing in it, here what this
 * server's tables say: an ended session ends, a user who is no longer a
 * participant is removed, a participant gets the role the table gives
 * (never the one announced).  Unchanged, nothing happens, so reading
 * again is harmless.  A failed read waits for the next try.
 */
static void
recheck_run(const Recheck *recheck)
{
	char		status[DB_STATUS_MAX + 1];
	char		role[DB_ROLE_MAX + 1];
	bool		is_owner;

	if (db_session_state(recheck->session_id, recheck->user_id[0] ? recheck->user_id : NULL,
						 status, role, &is_owner) != DB_OK)
		return;
	if (strcmp(status, "completed") == 0 || strcmp(status, "failed") == 0)
		live_end_session(recheck->session_id, status);
	else if (recheck->user_id[0] == '\0')
		return;
	else if (role[0] == '\0')
		live_remove_participant(recheck->session_id, recheck->user_id);
	else
		live_change_role(recheck->session_id, recheck->user_id, role);
}

/*
 * An announcement through Redis that the session or a user in it
 * changed: read the change back at once, and again for the window.  A
 * repeated announcement only extends the window and brings the next read
 * forward to the next sweep, so a flood of them costs at most one read
 * per session and user with connections here per sweep.
 */
static void
recheck_request(const char *session_id, const char *user_id)
{
	Recheck		request = {0};
	Recheck    *recheck;
	int64		now = presence_now_ms();

	if (user_id && strlen(user_id) > PRESENCE_UUID_LEN)
		return;
	strlcpy(request.session_id, session_id, sizeof(request.session_id));
	strlcpy(request.user_id, user_id ? user_id : "", sizeof(request.user_id));
	if (!recheck_has_local(&request))
		return;
	for (int i = 0; i < live_recheck_count; i++)
	{
		recheck = &live_rechecks[i];
		if (strcmp(recheck->session_id, request.session_id) == 0 &&
			strcmp(recheck->user_id, request.user_id) == 0)
		{
			recheck->until_ms = now + RECHECK_WINDOW_MS;
			recheck->next_ms = now;
			(void) backoff_succeeded(&recheck->backoff);
			return;
		}
	}
	request.backoff = (Backoff) BACKOFF_INIT(RECHECK_FIRST_MS, RECHECK_CAP_MS);
	request.until_ms = now + RECHECK_WINDOW_MS;
	request.next_ms = now + (int64) backoff_next_delay(&request.backoff);
	if (live_recheck_count == live_recheck_capacity)
	{
		int			capacity = Max(16, live_recheck_capacity * 2);
		Recheck    *grown = realloc(live_rechecks, capacity * sizeof(Recheck));

		/* without room it is read once, now: right unless the tables lag */
		if (grown)
		{
			live_rechecks = grown;
			live_recheck_capacity = capacity;
		}
	}
	if (live_recheck_count < live_recheck_capacity)
		live_rechecks[live_recheck_count++] = request;
	recheck_run(&request);
}

/* From the sweep: the rechecks whose next read is due; those past their window are dropped. */
static void
rechecks_due(int64 now_ms)
{
	for (int i = live_recheck_count - 1; i >= 0; i--)
	{
		Recheck    *recheck = &live_rechecks[i];

		if (now_ms >= recheck->until_ms || !recheck_has_local(recheck))
		{
			live_rechecks[i] = live_rechecks[--live_recheck_count];
			continue;
		}
		if (now_ms < recheck->next_ms)
			continue;
		recheck->next_ms = now_ms + (int64) backoff_next_delay(&recheck->backoff);
		recheck_run(recheck);
	}
}

/*
 * What a command another node published may do here.  Anyone who can
 * write to Redis can publish one, and on a standby it may come before
 * the change has replayed: a broadcast only shows something and is
 * passed on, the rest are read back from this server's tables
 * (recheck_request).
 */
static void
apply_announced_command(const char *command, const char *session_id, const char *user_id,
						json_t *payload)
{
	if (strcmp(command, "broadcast") == 0)
		live_apply_command(command, session_id, NULL, payload);
	else if (strcmp(command, "session_ended") == 0)
		recheck_request(session_id, NULL);
	else if ((strcmp(command, "participant_removed") == 0 ||
			  strcmp(command, "participant_changed") == 0) && user_id)
		recheck_request(session_id, user_id);
}

/*
 * A SQL command another node published; this node's own commands came
 * through shared memory already.
 */
void
live_apply_remote_command(const char *payload, size_t len)
{
	RedisCommand command;

	if (!redis_parse_command(payload, len, &command))
		return;
	if (strcmp(command.origin, ws_server_node_id()) != 0)
		apply_announced_command(command.command, command.session_id, command.user_id, command.payload);
	json_decref(command.root);
}

/*
 * Redis came back (up) or went away.  Back: watch every session again
 * (their snapshots reconcile what changed meanwhile) and publish every
 * local connection, so the other nodes see this worker's users again.
 * Gone: joins waiting for a snapshot are answered from the local view.
 */
void
live_redis_changed(bool up)
{
	for (int b = 0; b < live_bucket_count; b++)
		for (LiveSession *session = live_buckets[b]; session; session = session->hash_next)
		{
			dlist_iter	iter;

			if (!up)
			{
				if (session->snapshot_pending)
					live_apply_snapshot(session->session_id, NULL, 0);
				continue;
			}
			session_watch(session);
			dlist_foreach(iter, &session->members)
			{
				Membership *membership = dlist_container(Membership, session_node, iter.cur);

				if (!membership->connection->silent)
					redis_announce(membership, "join", true);
			}
		}
}
