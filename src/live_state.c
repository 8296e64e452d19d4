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
 * With Redis, sessions also mirror the users present through other
 * workers and nodes: live_remote.c does that, through the LiveMirror it
 * installs; without Redis there is none, and everything here stands
 * alone.
 *
 * Everything here is plain C on malloc: it runs inside libwebsockets
 * and hiredis callbacks, where a PostgreSQL error (longjmp) must never
 * be raised; the one database read (session_full) goes through
 * worker_db.c, which catches every error.
 *-------------------------------------------------------------------------
 */
#include "presence.h"

#include "common/hashfn.h"

#include "activity.h"
#include "clock.h"
#include "growable.h"
#include "live_internal.h"
#include "node.h"
#include "shmem.h"
#include "worker_db.h"

static int	live_worker_index;
static char live_worker_name[96];	/* node id (at most 63 bytes), "/", index */
static LiveSession **live_buckets;
static int	live_bucket_count;
static int	live_session_count;
static LiveSession *live_pending_sessions;
static dlist_head live_dirty_users = DLIST_STATIC_INIT(live_dirty_users);
static LiveUserKey *live_removed_keys;
static int	live_removed_count;
static int	live_removed_capacity;
static const LiveMirror *live_mirror;

static void user_free(SessionUser *user);
static void drop_pending_events(LiveSession *session);
static void automatic_status(Membership *membership, PresenceStatus status, Connection *origin);

/* False when out of memory. */
bool
live_state_init(int worker_index)
{
	live_worker_index = worker_index;
	snprintf(live_worker_name, sizeof(live_worker_name), "%s/%d", presence_node_id(), worker_index);
	live_bucket_count = 1024;
	live_buckets = calloc(live_bucket_count, sizeof(LiveSession *));
	return live_buckets != NULL;
}

/* The mirror of sessions elsewhere (live_remote.c), or NULL for none. */
void
live_set_mirror(const LiveMirror *mirror)
{
	live_mirror = mirror;
}

static void
mirror_announce(Membership *membership, const char *kind, bool always)
{
	if (live_mirror)
		live_mirror->announce(membership, kind, always);
}

static void
mirror_withdraw(Membership *membership, const char *kind)
{
	if (live_mirror)
		live_mirror->withdraw(membership, kind);
}

/* Calls visit for every session; visit may free the session it is given. */
void
live_sessions_each(void (*visit) (LiveSession *session, void *arg), void *arg)
{
	for (int b = 0; b < live_bucket_count; b++)
	{
		LiveSession *next;

		for (LiveSession *session = live_buckets[b]; session; session = next)
		{
			next = session->hash_next;
			visit(session, arg);
		}
	}
}

static uint32
session_hash(const char *session_id)
{
	return hash_bytes((const unsigned char *) session_id, (int) strlen(session_id));
}

LiveSession *
live_session_find(const char *session_id)
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
	LiveSession *session = live_session_find(session_id);
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
void
live_session_release_if_empty(LiveSession *session)
{
	LiveSession **link;

	if (!dlist_is_empty(&session->members) || session->queued || session->pinned)
		return;
	while (!dlist_is_empty(&session->users))
		user_free(dlist_container(SessionUser, node, dlist_head_node(&session->users)));
	if (live_mirror)
		live_mirror->unwatch(session);
	link = &live_buckets[session_hash(session->session_id) & (live_bucket_count - 1)];
	while (*link != session)
		link = &(*link)->hash_next;
	*link = session->hash_next;
	live_session_count--;
	drop_pending_events(session);
	free(session->events);
	free(session);
}

SessionUser *
live_user_find(LiveSession *session, const char *user_id)
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
bool
live_user_visible(SessionUser *user)
{
	return user->live_connections > 0 || user->remote_count > 0;
}

/*
 * The user's PresenceData (docs/protocol.md) as JSON text appended to
 * text; offline while no connection is live.  Written directly, not
 * through jansson: it is built for every cursor move.
 */
static void
presence_data_text(JsonText *text, SessionUser *user)
{
	PresenceStatus status = live_user_visible(user) ? user->status : STATUS_OFFLINE;

	json_text_literal(text, "{\"userId\":");
	json_text_string(text, user->user_id);
	json_text_literal(text, ",\"username\":");
	json_text_string(text, user->username);
	json_text_literal(text, ",\"role\":");
	json_text_string(text, user->role);
	json_text_literal(text, ",\"status\":");
	json_text_string(text, presence_status_names[status]);
	json_text_literal(text, ",\"lastSeen\":");
	json_text_int(text, user->last_seen_ms);
	if (user->cursor.present)
	{
		json_text_literal(text, ",\"cursor\":{\"eventId\":");
		json_text_string(text, user->cursor.event_id);
		json_text_literal(text, ",\"position\":");
		json_text_int(text, user->cursor.position);
		json_text_literal(text, "}");
	}
	if (user->activity[0])
	{
		json_text_literal(text, ",\"activity\":");
		json_text_string(text, user->activity);
	}
	json_text_literal(text, "}");
}

/* Text built for one message at a time, its memory kept between them. */
static JsonText scratch;

/* A malloc'd copy of the scratch text, terminated; NULL when it failed. */
static char *
scratch_copy(void)
{
	char	   *copy;

	json_text_raw(&scratch, "", 1);
	if (scratch.failed || (copy = malloc(scratch.len)) == NULL)
		return NULL;
	memcpy(copy, scratch.data, scratch.len);
	return copy;
}

/* The user's PresenceData as malloc'd JSON text, NULL when out of memory. */
char *
live_presence_json(SessionUser *user)
{
	json_text_reset(&scratch);
	presence_data_text(&scratch, user);
	return scratch_copy();
}

/* The same as a jansson object, for messages built as trees (session_joined). */
json_t *
live_presence_data(SessionUser *user)
{
	char	   *text = live_presence_json(user);
	json_t	   *data = text ? json_loads(text, 0, NULL) : NULL;

	free(text);
	return data;
}

static void
drop_pending_events(LiveSession *session)
{
	for (int i = 0; i < session->nevents; i++)
		free(session->events[i].event);
	session->nevents = 0;
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
void
live_user_event(SessionUser *user, const char *kind, Connection *origin)
{
	LiveSession *session = user->session;
	bool		is_cursor = strcmp(kind, "cursor") == 0;
	PendingEvent *slot;
	char	   *event;
	size_t		event_len;

	live_mark_dirty(user);
	json_text_reset(&scratch);
	json_text_literal(&scratch, "{\"kind\":");
	json_text_string(&scratch, kind);
	json_text_literal(&scratch, ",\"user\":");
	presence_data_text(&scratch, user);
	json_text_literal(&scratch, "}");
	event_len = scratch.len;
	if ((event = scratch_copy()) == NULL)
		return;
	session_roll_window(session, presence_now_ms());
	/*
	 * The user's pending cursor event goes, and the new one is appended:
	 * in place, it would come before the user's later events, whose
	 * PresenceData carry the older cursor that clients would then keep.
	 */
	if (is_cursor && session->timed)
		for (int i = 0; i < session->nevents; i++)
			if (session->events[i].is_cursor && strcmp(session->events[i].user_id, user->user_id) == 0)
			{
				free(session->events[i].event);
				memmove(&session->events[i], &session->events[i + 1],
						(session->nevents - i - 1) * sizeof(PendingEvent));
				session->nevents--;
				break;
			}
	slot = growable_reserve(session->events, &session->events_capacity, session->nevents,
							sizeof(PendingEvent), 8);
	if (slot == NULL)
	{
		free(event);
		return;
	}
	session->events = slot;
	slot = &session->events[session->nevents++];
	slot->event = event;
	slot->event_len = event_len;
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

/*
 * This worker's name in the user_joined rows it writes: node id and worker
 * index, so a restarted worker can end the presences its predecessor
 * could not (ws_worker.c).
 */
const char *
live_worker_tag(void)
{
	return live_worker_name;
}

/*
 * The details of a user_joined row: which worker holds the presence, the
 * status the join sets when it sets one, and whether it resumes after a
 * timeout, so a replay of the log has the status others see.
 */
static json_t *
join_details(SessionUser *user, bool sets_status, bool resumed)
{
	json_t	   *details = protocol_object();

	if (details == NULL)
		return NULL;
	json_object_set_new(details, "worker", json_string(live_worker_name));
	if (sets_status)
		json_object_set_new(details, "status", json_string(presence_status_names[user->status]));
	if (resumed)
		json_object_set_new(details, "resumed", json_true());
	return details;
}

/* The status_changed row a replay of the log reads the user's status from. */
static void
log_status_change(SessionUser *user, bool automatic, Connection *source)
{
	log_user_activity(user, "status_changed",
					  json_pack("{s:s, s:b}", "status", presence_status_names[user->status],
								"automatic", automatic),
					  source);
}

void
live_mark_dirty(SessionUser *user)
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
	LiveUserKey *keys = growable_reserve(live_removed_keys, &live_removed_capacity, live_removed_count,
										 sizeof(LiveUserKey), 64);

	/* without room online_users() keeps the entry until the worker publishes anew */
	if (keys)
	{
		LiveUserKey *key = &keys[live_removed_count++];

		live_removed_keys = keys;
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

void
live_user_free_if_gone(SessionUser *user)
{
	if (user->connections == 0 && user->remote_count == 0)
		user_free(user);
}

/*
 * After any change to a user's connections, here or elsewhere: when the
 * user became visible or stopped being visible, that is the join, or the
 * leave / timeout (gone_kind), others see.
 */
void
live_visibility_changed(SessionUser *user, bool was_visible, const char *gone_kind, Connection *origin)
{
	bool		visible = live_user_visible(user);

	if (visible == was_visible)
		return;
	user->session->present_users += visible ? 1 : -1;
	live_user_event(user, visible ? "join" : gone_kind, origin);
}

SessionUser *
live_user_add(LiveSession *session, const char *user_id)
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

		if (live_user_visible(user) && len + strlen(user->user_id) + 2 <= capacity)
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
 * A user comes into view here (their first live connection, after none
 * or after all went silent): present afresh, online and active now,
 * whatever they were when they went.
 */
static void
user_arrives(SessionUser *user, int64 now_ms)
{
	user->status = STATUS_ONLINE;
	user->auto_away = false;
	user->last_activity_ms = now_ms;
}

/*
 * Anything but a heartbeat from one of the user's connections, a new tab
 * joining included, is activity: it ends automatic away unless the
 * message sets a status itself (may_end_away false).  Returns whether it
 * did, which others see as an update.
 */
static bool
user_active(Membership *membership, bool may_end_away, Connection *origin, int64 now_ms)
{
	SessionUser *user = membership->user;

	user->last_activity_ms = now_ms;
	if (!may_end_away || !user->auto_away || user->status != STATUS_AWAY)
		return false;
	automatic_status(membership, STATUS_ONLINE, origin);
	return true;
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
	PresenceStatus status_before;

	if (membership != NULL)
	{
		live_send_session_joined(membership, request->ref);
		return LIVE_JOIN_OK;
	}
	session = session_find_or_create(session_id);
	if (session == NULL)
		return LIVE_JOIN_NO_MEMORY;
	user = live_user_find(session, connection->user_id);
	if ((user == NULL || !live_user_visible(user)) && session->present_users >= presence_max_participants &&
		session_full(session))
	{
		live_session_release_if_empty(session);
		return LIVE_JOIN_FULL;
	}
	membership = calloc(1, sizeof(Membership));
	if (membership == NULL || (user == NULL && (user = live_user_add(session, connection->user_id)) == NULL))
	{
		free(membership);
		live_session_release_if_empty(session);
		return LIVE_JOIN_NO_MEMORY;
	}
	if (dlist_is_empty(&session->members))
		if (live_mirror)
			live_mirror->watch(session);

	was_visible = live_user_visible(user);
	if (!was_visible)
		user_arrives(user, now);
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
	status_before = user->status;
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
		live_visibility_changed(user, false, "leave", connection);
		log_user_activity(user, "user_joined", join_details(user, request->status >= 0, false), connection);
	}
	else
	{
		/* a further tab's join that sets a status */
		if (user->status != status_before)
			log_status_change(user, false, connection);
		if (!user_active(membership, request->status < 0, connection, now) &&
			(request->status >= 0 || request->activity || request->cursor.present))
			live_user_event(user, "update", connection);
	}
	live_mark_dirty(user);
	mirror_announce(membership, "join", true);

	if (session->snapshot_pending)
	{
		membership->awaiting_snapshot = true;
		membership->join_ref = request->ref ? json_incref(request->ref) : NULL;
	}
	else
		live_send_session_joined(membership, request->ref);
	return LIVE_JOIN_OK;
}

/* session_joined: the session's visible users, this one included. */
void
live_send_session_joined(Membership *membership, json_t *ref)
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

		if (live_user_visible(present) || present == membership->user)
			json_array_append_new(users, live_presence_data(present));
	}
	json_object_set_new(reply, "sessionId", json_string(session->session_id));
	json_object_set_new(reply, "role", json_string(membership->user->granted_role));
	json_object_set_new(reply, "users", users);
	connection_send_json(membership->connection, reply);
}

/*
 * Removes one membership.  The user leaves when it was their last live
 * connection here and they have none elsewhere; a leave the server made
 * says why in its user_left (cause), so the log tells it from the
 * client's own.
 */
static void
membership_remove(Membership *membership, bool announce, const char *cause)
{
	SessionUser *user = membership->user;
	LiveSession *session = user->session;
	Connection *connection = membership->connection;
	bool		was_visible = live_user_visible(user);

	if (!connection->silent)
		mirror_withdraw(membership, "leave");
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
		live_visibility_changed(user, was_visible, "leave", connection);
		if (was_visible && !live_user_visible(user))
			log_user_activity(user, "user_left",
							  cause ? json_pack("{s:s}", "cause", cause) : NULL, connection);
	}
	else if (was_visible && !live_user_visible(user))
		session->present_users--;
	live_user_free_if_gone(user);
	live_session_release_if_empty(session);
}

bool
live_leave(Connection *connection, const char *session_id)
{
	Membership *membership = membership_find(connection, session_id);

	if (membership == NULL)
		return false;
	membership_remove(membership, true, NULL);
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

/* The permission function's answers for a joined connection; NULL when not joined. */
PermissionCache *
live_permission_cache(Connection *connection, const char *session_id)
{
	Membership *membership = membership_find(connection, session_id);

	return membership ? &membership->permissions : NULL;
}

static void
session_permissions_clear(LiveSession *session, void *arg)
{
	dlist_iter	iter;

	dlist_foreach(iter, &session->members)
		permission_cache_clear(&dlist_container(Membership, session_node, iter.cur)->permissions);
}

/*
 * Forgets the permission function's answers in one session (NULL: all),
 * so the next check asks it again.
 */
void
live_permission_caches_clear(const char *session_id)
{
	LiveSession *session;

	if (session_id == NULL)
	{
		live_sessions_each(session_permissions_clear, NULL);
		return;
	}
	session = live_session_find(session_id);
	if (session)
		session_permissions_clear(session, NULL);
}

/*
 * Calls callback for each session the connection is joined to; the
 * callback may make the connection leave that session (and no other).
 */
void
live_joined_sessions_each(Connection *connection,
						  void (*callback) (Connection *connection, const char *session_id))
{
	dlist_mutable_iter iter;

	dlist_foreach_modify(iter, &connection->memberships)
	{
		Membership *membership = dlist_container(Membership, connection_node, iter.cur);
		char		session_id[PRESENCE_SESSION_ID_MAX + 1];

		/* leaving may free the session and the id with it */
		strlcpy(session_id, membership->user->session->session_id, sizeof(session_id));
		callback(connection, session_id);
	}
}

/* Whether user_id has a connection of this worker joined to session_id. */
bool
live_user_joined(const char *session_id, const char *user_id)
{
	LiveSession *session = live_session_find(session_id);
	SessionUser *user = session ? live_user_find(session, user_id) : NULL;

	return user != NULL && user->connections > 0;
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
	live_user_event(user, "update", connection);
	mirror_announce(membership, "update", true);
	if (status_changed)
		log_status_change(user, false, connection);
	return true;
}

bool
live_set_cursor(Connection *connection, const char *session_id, const CursorPosition *cursor)
{
	Membership *membership = membership_find(connection, session_id);

	if (membership == NULL)
		return false;
	membership->user->cursor = *cursor;
	live_user_event(membership->user, "cursor", connection);
	mirror_announce(membership, "cursor", true);
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
		live_mark_dirty(user);
		if (cursor && cursor->present &&
			(!user->cursor.present || user->cursor.position != cursor->position ||
			 strcmp(user->cursor.event_id, cursor->event_id) != 0))
		{
			user->cursor = *cursor;
			live_user_event(user, "cursor", connection);
			mirror_announce(membership, "cursor", true);
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
	live_user_event(user, "update", origin);
	mirror_announce(membership, "update", true);
	log_status_change(user, true, origin);
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
		live_mark_dirty(user);
		if (resumed)
		{
			bool		was_visible = live_user_visible(user);

			user->live_connections++;
			if (!was_visible)
			{
				user_arrives(user, now);
				live_visibility_changed(user, false, "leave", connection);
				log_user_activity(user, "user_joined", join_details(user, false, true), connection);
			}
			mirror_announce(membership, "join", true);
		}
		if (type != REQ_HEARTBEAT)
			(void) user_active(membership, type != REQ_PRESENCE_UPDATE, connection, now);
	}
}

void
live_connection_closed(Connection *connection)
{
	while (!dlist_is_empty(&connection->memberships))
		membership_remove(dlist_container(Membership, connection_node,
										  dlist_head_node(&connection->memberships)), true, NULL);
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

	dlist_foreach(iter, connections_all())
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
			bool		was_visible = live_user_visible(user);

			mirror_withdraw(membership, "timeout");
			user->live_connections--;
			live_visibility_changed(user, was_visible, "timeout", NULL);
			if (was_visible && !live_user_visible(user))
				log_user_activity(user, "user_timeout",
								  json_pack("{s:I}", "silent_ms", (json_int_t) (now_ms - connection->last_message_ms)),
								  connection);
		}
	}

	for (int b = 0; b < live_bucket_count; b++)
		for (LiveSession *session = live_buckets[b]; session; session = session->hash_next)
			dlist_foreach(iter, &session->members)
			{
				Membership *membership = dlist_container(Membership, session_node, iter.cur);
				SessionUser *user = membership->user;

				if (!membership->connection->silent && user->status == STATUS_ONLINE &&
					now_ms - user->last_activity_ms >= presence_away_threshold_ms)
					automatic_status(membership, STATUS_AWAY, NULL);
			}
	if (live_mirror)
		live_mirror->sweep(now_ms);
}

/* One presence frame of the session's events, leaving out one origin's. */
static OutFrame *
session_frame(LiveSession *session, uint64 excluded_origin)
{
	static int	presence_type = -2;
	int64		oldest_us = INT64_MAX;
	int			included = 0;

	if (presence_type == -2)
		presence_type = server_message_type_index("presence");
	json_text_reset(&scratch);
	json_text_literal(&scratch, "{\"type\":\"presence\",\"sessionId\":");
	json_text_string(&scratch, session->session_id);
	json_text_literal(&scratch, ",\"events\":[");
	for (int i = 0; i < session->nevents; i++)
		if (excluded_origin == 0 || session->events[i].origin != excluded_origin)
		{
			if (included++ > 0)
				json_text_literal(&scratch, ",");
			json_text_raw(&scratch, session->events[i].event, session->events[i].event_len);
			oldest_us = Min(oldest_us, session->events[i].created_us);
		}
	json_text_literal(&scratch, "]}");
	if (included == 0 || scratch.failed)
		return NULL;
	return frame_from_text(scratch.data, scratch.len, oldest_us, presence_type);
}

static bool
caused_any_event(LiveSession *session, uint64 serial)
{
	for (int i = 0; i < session->nevents; i++)
		if (session->events[i].origin == serial)
			return true;
	return false;
}

/*
 * A hint to fetch the cache line at address.  On x86 it is written out:
 * GCC 12 deletes __builtin_prefetch as dead code in this file.
 */
#if defined(__x86_64__) || defined(__i386__)
#define prefetch_line(address) __asm__ volatile("prefetcht0 %0" : : "m" (*(const char *) (address)))
#else
#define prefetch_line(address) __builtin_prefetch(address)
#endif

/*
 * Each member's Membership and Connection are a cache miss of their own,
 * most of what a delivery costs besides the send.  While one member's
 * send runs, this fetches the next member's connection (its Membership
 * was fetched one send earlier) and the Membership after it, so each
 * delivery finds both in the cache.
 */
static inline void
prefetch_members_after(dlist_head *members, dlist_node *node)
{
	Membership *next;

	if (!dlist_has_next(members, node))
		return;
	node = dlist_next_node(members, node);
	next = dlist_container(Membership, session_node, node);
	prefetch_line(next->connection);
	if (!dlist_has_next(members, node))
		return;
	next = dlist_container(Membership, session_node, dlist_next_node(members, node));
	prefetch_line(next);
	prefetch_line((char *) next + sizeof(Membership) - 1);
}

/* Sends the session's pending events to every joined connection. */
void
live_session_deliver(LiveSession *session)
{
	OutFrame   *everything = session_frame(session, 0);
	dlist_iter	iter;

	dlist_foreach(iter, &session->members)
	{
		Membership *membership = dlist_container(Membership, session_node, iter.cur);
		Connection *connection = membership->connection;

		prefetch_members_after(&session->members, iter.cur);

		/* its session_joined, still to come, will carry the state */
		if (membership->awaiting_snapshot)
			continue;
		if (caused_any_event(session, connection->serial))
		{
			OutFrame   *others = session_frame(session, connection->serial);

			if (others)
			{
				connection_send_frame(connection, others);
				frame_release(others);
			}
		}
		else if (everything)
			connection_send_frame(connection, everything);
	}
	if (everything)
		frame_release(everything);
	drop_pending_events(session);
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
		live_session_deliver(session);
		sent = true;
		session->queued = false;
		live_session_release_if_empty(session);
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
	LiveSession *session = live_session_find(session_id);
	OutFrame   *frame;
	dlist_iter	iter;
	int			reached = 0;

	if (session == NULL || (frame = frame_from_json(message, presence_now_us())) == NULL)
		return 0;
	dlist_foreach(iter, &session->members)
	{
		connection_send_frame(dlist_container(Membership, session_node, iter.cur)->connection, frame);
		reached++;
	}
	frame_release(frame);
	return reached;
}

/* The session ended (SQL or a client): tell everyone, then drop it. */
void
live_end_session(const char *session_id, const char *status)
{
	LiveSession *session = live_session_find(session_id);
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
										  dlist_head_node(&session->members)), false, NULL);
	drop_pending_events(session);
	session->pinned--;
	live_session_release_if_empty(session);
}

/*
 * A participant was removed (through SQL, or the permission function no
 * longer lets them view): their connections leave at once, their
 * user_left giving the cause.
 */
void
live_remove_participant(const char *session_id, const char *user_id, const char *cause)
{
	LiveSession *session = live_session_find(session_id);
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
			connection_send_json(membership->connection, json_incref(notice));
		membership_remove(membership, true, cause);
	}
	session->pinned--;
	live_session_release_if_empty(session);
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
	LiveSession *session = live_session_find(session_id);
	SessionUser *user = session ? live_user_find(session, user_id) : NULL;
	bool		shown_changed;

	if (user == NULL || role == NULL)
		return;
	shown_changed = strcmp(user->role, role) != 0;
	strlcpy(user->role, role, sizeof(user->role));
	strlcpy(user->granted_role, role, sizeof(user->granted_role));
	if (shown_changed)
		live_user_event(user, "update", NULL);
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
		strlcpy(entry->status, presence_status_names[live_user_visible(user) ? user->status : STATUS_OFFLINE],
				sizeof(entry->status));
		entry->last_seen_ms = user->last_seen_ms;
		entry->has_cursor = user->cursor.present;
		strlcpy(entry->cursor_event_id, user->cursor.event_id, sizeof(entry->cursor_event_id));
		entry->cursor_position = user->cursor.position;
		strlcpy(entry->activity, user->activity, sizeof(entry->activity));
		entry->connections = user->connections + user->remote_count;
	}
	presence_users_publish(entries, count, live_removed_keys, live_removed_count);
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

/* A broadcast's payload goes to every client joined to the session. */
static void
live_broadcast(const char *session_id, json_t *payload)
{
	json_t	   *message = json_pack("{s:s, s:s, s:O}", "type", "broadcast",
									"sessionId", session_id, "payload", payload);

	if (message)
	{
		live_send_to_session(session_id, message);
		json_decref(message);
	}
}

/*
 * A command from this node's SQL (presence._notify_workers), for this
 * worker's clients: the database has made the change already.
 */
void
live_apply_command(PresenceCommandKind kind, const char *session_id, const char *user_id,
				   json_t *payload)
{
	const char *text = json_is_string(payload) ? json_string_value(payload) : NULL;

	switch (kind)
	{
		case CMD_BROADCAST:
			if (payload)
				live_broadcast(session_id, payload);
			break;
		case CMD_SESSION_ENDED:
			live_end_session(session_id, text ? text : "completed");
			break;
		case CMD_PARTICIPANT_REMOVED:
			if (user_id)
				live_remove_participant(session_id, user_id, LEAVE_CAUSE_REMOVED);
			break;
		case CMD_PARTICIPANT_CHANGED:
			live_permission_caches_clear(session_id);
			if (user_id)
				live_change_role(session_id, user_id, text);
			break;
	}
}

