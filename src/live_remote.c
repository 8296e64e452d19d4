/*-------------------------------------------------------------------------
 * live_remote.c
 *	  The mirror of live state in Redis: what other workers and nodes
 *	  see of this worker's users, and what this worker sees of theirs.
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
 * Local changes reach here through the LiveMirror live_state.c calls
 * (installed by live_remote_init), Redis's messages through the
 * RedisLinkHandlers redis_link.c calls; both are plain C that raises no
 * PostgreSQL error, the rechecks reading through worker_db.c.
 *-------------------------------------------------------------------------
 */
#include "presence.h"

#include "backoff.h"
#include "clock.h"
#include "growable.h"
#include "live_internal.h"
#include "live_remote.h"
#include "node.h"
#include "permissions.h"
#include "redis_layout.h"
#include "redis_link.h"

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

static Recheck *live_rechecks;
static int	live_recheck_count;
static int	live_recheck_capacity;

static void remote_snapshot(const char *session_id, const char **entries, int count);

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
	grown = growable_reserve(user->remote_conns, &user->remote_capacity, user->remote_count,
							 sizeof(char *), 4);
	if (grown == NULL)
		return;
	user->remote_conns = grown;
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
remote_announce(Membership *membership, const char *kind, bool always)
{
	SessionUser *user = membership->user;
	char	   *presence_json;
	char	   *message = NULL;

	if (!redis_link_ready())
		return;
	presence_json = live_presence_json(user);
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
}

/* Tells Redis this connection is gone from the session (kind: leave / timeout). */
static void
remote_withdraw(Membership *membership, const char *kind)
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
remote_watch(LiveSession *session)
{
	if (redis_link_watch(session->session_id))
	{
		session->snapshot_pending = true;
		session->snapshot_requested_ms = presence_now_ms();
	}
}

/*
 * A session's snapshot from Redis (or NULL when it could not be read):
 * entries alternate PresenceData JSON and the space-separated ids of the
 * user's fresh connections.  Remote connections are replaced wholesale,
 * so a reconnect after an outage converges; then the joins that waited
 * for the snapshot are answered.
 */
static void
remote_snapshot(const char *session_id, const char **entries, int count)
{
	LiveSession *session = live_session_find(session_id);
	dlist_mutable_iter iter;

	if (session == NULL)
		return;
	session->pinned++;
	if (entries != NULL)
	{
		dlist_foreach_modify(iter, &session->users)
		{
			SessionUser *user = dlist_container(SessionUser, node, iter.cur);

			user->visible_before_snapshot = live_user_visible(user);
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
				((user = live_user_find(session, presence.user_id)) == NULL &&
				 (user = live_user_add(session, presence.user_id)) == NULL))
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

			live_visibility_changed(user, user->visible_before_snapshot, "leave", NULL);
			live_user_free_if_gone(user);
		}
	}
	session->snapshot_pending = false;
	/* what the snapshot changed goes out now, to the members it is news to */
	if (session->nevents > 0)
		live_session_deliver(session);
	dlist_foreach_modify(iter, &session->members)
	{
		Membership *membership = dlist_container(Membership, session_node, iter.cur);

		if (!membership->awaiting_snapshot)
			continue;
		membership->awaiting_snapshot = false;
		live_send_session_joined(membership, membership->join_ref);
		if (membership->join_ref)
			json_decref(membership->join_ref);
		membership->join_ref = NULL;
	}
	session->pinned--;
	live_session_release_if_empty(session);
}

/*
 * A change published by another worker or node on a session's channel.
 * join / update / cursor add the connection and take the user's state;
 * leave / timeout remove it ("*": all of the user's).  Local clients see
 * what changed in the session's visible users.
 */
static void
remote_event(const char *session_id, const char *payload, size_t len)
{
	LiveSession *session = live_session_find(session_id);
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
	user = live_user_find(session, user_id);
	if (strcmp(kind, "leave") == 0 || strcmp(kind, "timeout") == 0)
	{
		if (user)
		{
			was_visible = live_user_visible(user);
			remote_remove(user, connection_id);
			live_visibility_changed(user, was_visible, kind, NULL);
			live_user_free_if_gone(user);
		}
	}
	else if (event.presence != NULL &&
			 (user != NULL || (user = live_user_add(session, user_id)) != NULL))
	{
		PresenceStatus old_status = user->status;
		char		old_role[sizeof(user->role)];
		char		old_activity[sizeof(user->activity)];

		strlcpy(old_role, user->role, sizeof(old_role));
		strlcpy(old_activity, user->activity, sizeof(old_activity));
		was_visible = live_user_visible(user);
		copy_presence_data(user, event.presence);
		remote_add(user, connection_id);
		if (!was_visible)
			live_visibility_changed(user, false, "leave", NULL);
		else if (strcmp(kind, "cursor") == 0)
			live_user_event(user, "cursor", NULL);
		else if (user->status != old_status || strcmp(user->role, old_role) != 0 ||
				 strcmp(user->activity, old_activity) != 0)
			live_user_event(user, "update", NULL);
		live_mark_dirty(user);
	}
	json_decref(event.root);
}

/* Whether a recheck has anything here to act on: the session's or the user's connections. */
static bool
recheck_has_local(const Recheck *recheck)
{
	LiveSession *session = live_session_find(recheck->session_id);
	SessionUser *user;

	if (session == NULL || dlist_is_empty(&session->members))
		return false;
	if (recheck->user_id[0] == '\0')
		return true;
	user = live_user_find(session, recheck->user_id);
	return user != NULL && user->connections > 0;
}

/*
 * Makes the session, or the user's standing in it, here what this
 * server's tables say: an ended session ends, a user who is no longer a
 * participant is removed, a participant gets the role the table gives
 * (never the one announced).  With presence.permission_function, the
 * function says who is still in: the cached answers for the session are
 * dropped at every read, since the application's tables may replay here
 * after the first.  Unchanged, nothing happens, so reading again is
 * harmless.  A failed read waits for the next try.
 */
static void
recheck_run(const Recheck *recheck)
{
	char		status[DB_STATUS_MAX + 1];
	char		role[DB_ROLE_MAX + 1];
	bool		is_owner;
	bool		by_function = permission_function_set();

	if (by_function)
		live_permission_caches_clear(recheck->session_id);
	if (db_session_state(recheck->session_id, recheck->user_id[0] ? recheck->user_id : NULL,
						 status, role, &is_owner) != DB_OK)
		return;
	if (strcmp(status, "completed") == 0 || strcmp(status, "failed") == 0)
		live_end_session(recheck->session_id, status);
	else if (recheck->user_id[0] == '\0')
		return;
	else if (by_function ?
			 permission_ask(recheck->session_id, recheck->user_id, PERM_VIEW, NULL) == PERMISSION_DENIED :
			 role[0] == '\0')
		live_remove_participant(recheck->session_id, recheck->user_id,
								by_function ? LEAVE_CAUSE_PERMISSION_REVOKED : LEAVE_CAUSE_REMOVED);
	else if (role[0] != '\0')
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
	Recheck    *grown;
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
	grown = growable_reserve(live_rechecks, &live_recheck_capacity, live_recheck_count, sizeof(Recheck), 16);
	/* without room it is read once, now: right unless the tables lag */
	if (grown)
	{
		live_rechecks = grown;
		live_rechecks[live_recheck_count++] = request;
	}
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
apply_announced_command(PresenceCommandKind kind, const char *session_id, const char *user_id,
						json_t *payload)
{
	if (kind == CMD_BROADCAST)
		live_apply_command(kind, session_id, NULL, payload);
	else if (kind == CMD_SESSION_ENDED || (kind == CMD_PARTICIPANT_CHANGED && user_id == NULL))
		recheck_request(session_id, NULL);
	else if (kind != 0 && user_id)
		recheck_request(session_id, user_id);
}

/*
 * A SQL command another node published; this node's own commands came
 * through shared memory already.
 */
static void
remote_command(const char *payload, size_t len)
{
	RedisCommand command;

	if (!redis_parse_command(payload, len, &command))
		return;
	if (strcmp(command.origin, presence_node_id()) != 0)
		apply_announced_command(presence_command_kind(command.command), command.session_id, command.user_id,
								command.payload);
	json_decref(command.root);
}

/*
 * Redis came back (up) or went away.  Back: watch every session again
 * (their snapshots reconcile what changed meanwhile) and publish every
 * local connection, so the other nodes see this worker's users again.
 * Gone: joins waiting for a snapshot are answered from the local view.
 */
static void
session_after_outage(LiveSession *session, void *arg)
{
	bool		up = *(bool *) arg;
	dlist_iter	iter;

	if (!up)
	{
		if (session->snapshot_pending)
			remote_snapshot(session->session_id, NULL, 0);
		return;
	}
	remote_watch(session);
	dlist_foreach(iter, &session->members)
	{
		Membership *membership = dlist_container(Membership, session_node, iter.cur);

		if (!membership->connection->silent)
			remote_announce(membership, "join", true);
	}
}

static void
remote_availability(bool up)
{
	live_sessions_each(session_after_outage, &up);
}

static void
remote_unwatch(LiveSession *session)
{
	redis_link_unwatch(session->session_id);
}

/*
 * Every sweep: a snapshot that never came is given up (the joins waiting
 * for it are answered from the local view), each live connection's entry
 * in Redis is refreshed well within presence.presence_ttl, and the
 * rechecks that are due are read.
 */
static void
session_sweep(LiveSession *session, void *arg)
{
	int64		now_ms = *(int64 *) arg;
	dlist_iter	iter;

	if (session->snapshot_pending &&
		now_ms - session->snapshot_requested_ms >= 2 * presence_redis_connect_timeout_ms)
		remote_snapshot(session->session_id, NULL, 0);
	dlist_foreach(iter, &session->members)
	{
		Membership *membership = dlist_container(Membership, session_node, iter.cur);

		if (!membership->connection->silent &&
			now_ms - membership->refreshed_ms >= presence_presence_ttl_ms / 3)
			remote_announce(membership, "join", false);
	}
}

static void
remote_sweep(int64 now_ms)
{
	live_sessions_each(session_sweep, &now_ms);
	rechecks_due(now_ms);
}

static const LiveMirror redis_mirror = {
	.announce = remote_announce,
	.withdraw = remote_withdraw,
	.watch = remote_watch,
	.unwatch = remote_unwatch,
	.sweep = remote_sweep,
};

/* With Redis configured, live state mirrors its sessions there. */
void
live_remote_init(void)
{
	if (redis_configured())
		live_set_mirror(&redis_mirror);
}

const RedisLinkHandlers live_remote_redis_handlers = {
	.snapshot = remote_snapshot,
	.event = remote_event,
	.command = remote_command,
	.availability = remote_availability,
};
