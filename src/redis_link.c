/*-------------------------------------------------------------------------
 * redis_link.c
 *	  A ws worker's link to Redis: hiredis's async API on the worker's own
 *	  libuv loop, so nothing here ever blocks the loop.
 *
 * Two connections, because a subscribed Redis connection can do nothing
 * but (un)subscribe: "commands" runs the layout's scripts (redis_layout.c)
 * and PUBLISH; "subscriptions" listens on the channels of the sessions
 * this worker has clients in, and on the node-wide commands channel.
 *
 * Each connection is a small state machine: DOWN -> CONNECTING (bounded
 * by presence.redis_connect_timeout) -> handshake (AUTH, SELECT, SCRIPT
 * LOAD, PING) -> READY.  Any failure drops back to DOWN and schedules a
 * reconnect (backoff.c): 200 ms doubling to 1 s, with jitter.  The cap is
 * short because these are a server's own two connections, not a crowd of
 * clients, and cross-worker delivery waits for them: Redis answering
 * again is noticed within about a second however long it was away.
 * When both are READY again the availability handler (live_remote.c)
 * re-subscribes its sessions and re-publishes its presence at once, so
 * views converge right after an outage.  While Redis is down, nothing
 * waits for it: live state serves local clients from memory.  What the
 * link receives goes up only through the RedisLinkHandlers it was
 * started with.
 *-------------------------------------------------------------------------
 */
#include "presence.h"

#include <hiredis/hiredis.h>
#include <hiredis/async.h>

#include "backoff.h"
#include "clock.h"
#include "redis_layout.h"
#include "redis_link.h"
#include "shmem.h"

#define BACKOFF_FIRST_MS 200
#define BACKOFF_CAP_MS 1000

typedef enum RedisLinkState
{
	LINK_DOWN,
	LINK_CONNECTING,
	LINK_HANDSHAKE,
	LINK_READY
} RedisLinkState;

typedef struct RedisConnection
{
	const char *role;
	redisAsyncContext *context;
	RedisLinkState	state;
	uv_timer_t	timer;			/* connect timeout, then reconnect backoff */
	Backoff		backoff;		/* also: whether the current outage was logged */
} RedisConnection;

static RedisConnection link_commands = {
	.role = "commands", .backoff = BACKOFF_INIT(BACKOFF_FIRST_MS, BACKOFF_CAP_MS)
};
static RedisConnection link_subscriptions = {
	.role = "subscriptions", .backoff = BACKOFF_INIT(BACKOFF_FIRST_MS, BACKOFF_CAP_MS)
};
static RedisTarget link_target;
static uv_loop_t *link_loop;
static bool link_stopping;
#define LINK_ORIGIN_MAX 127
static char link_origin[LINK_ORIGIN_MAX + 1];
static const RedisLinkHandlers *link_handlers;

static void link_connect(RedisConnection *connection);
static void on_subscription_message(redisAsyncContext *context, void *reply_ptr, void *privdata);

static bool
link_ready(RedisConnection *connection)
{
	return connection->state == LINK_READY && connection->context != NULL;
}

bool
redis_link_ready(void)
{
	return link_ready(&link_commands) && link_ready(&link_subscriptions);
}

const char *
redis_link_origin(void)
{
	return link_origin;
}

static void
reconnect_timer_fired(uv_timer_t *timer)
{
	link_connect(timer->data);
}

/* Drops to DOWN and tries again after the backoff; logs the first failure of an outage. */
static void
connection_failed(RedisConnection *connection, const char *what, const char *detail)
{
	bool		was_ready = connection->state == LINK_READY;

	connection->state = LINK_DOWN;
	connection->context = NULL;
	presence_count(CTR_REDIS_ERRORS, 1);
	if (link_stopping)
		return;
	if (!backoff_in_outage(&connection->backoff))
		ereport(LOG,
				(errmsg("presence: Redis %s connection to %s:%d %s: %s; serving local clients from memory and retrying",
						connection->role, link_target.host, link_target.port, what, detail)));
	uv_timer_stop(&connection->timer);
	uv_timer_start(&connection->timer, reconnect_timer_fired, backoff_next_delay(&connection->backoff), 0);
	if (was_ready)
		link_handlers->availability(false);
}

static void
connect_timed_out(uv_timer_t *timer)
{
	RedisConnection *connection = timer->data;
	redisAsyncContext *context = connection->context;

	if (connection->state == LINK_READY || context == NULL)
		return;
	connection->context = NULL;
	/* a context that never connected gets no disconnect callback */
	context->data = NULL;
	redisAsyncFree(context);
	connection_failed(connection, "timed out", "no answer within presence.redis_connect_timeout");
}

static void
on_connect(const redisAsyncContext *context, int status)
{
	RedisConnection *connection = context->data;

	if (connection == NULL)
		return;
	if (status != REDIS_OK)
	{
		uv_timer_stop(&connection->timer);
		connection_failed(connection, "failed", context->errstr);
		return;
	}
	connection->state = LINK_HANDSHAKE;
}

static void
on_disconnect(const redisAsyncContext *context, int status)
{
	RedisConnection *connection = context->data;

	if (connection == NULL || connection->context != context)
		return;
	uv_timer_stop(&connection->timer);
	connection_failed(connection, "lost", status == REDIS_OK ? "closed" : context->errstr);
}

/* One handshake step answered; an error ends the attempt. */
static void
on_handshake_reply(redisAsyncContext *context, void *reply_ptr, void *privdata)
{
	redisReply *reply = reply_ptr;
	RedisConnection *connection = context->data;
	const char *step = privdata;

	if (connection == NULL || reply == NULL)
		return;
	if (reply->type == REDIS_REPLY_ERROR)
	{
		char		detail[256];

		snprintf(detail, sizeof(detail), "%s refused: %s", step, reply->str);
		connection->context = NULL;
		uv_timer_stop(&connection->timer);
		context->data = NULL;
		redisAsyncDisconnect((redisAsyncContext *) context);
		connection_failed(connection, "was refused", detail);
		return;
	}
	if (strcmp(step, "PING") != 0)
		return;

	uv_timer_stop(&connection->timer);
	connection->state = LINK_READY;
	if (backoff_succeeded(&connection->backoff))
		ereport(LOG, (errmsg("presence: Redis %s connection to %s:%d is back",
							 connection->role, link_target.host, link_target.port)));
	if (connection == &link_subscriptions)
	{
		char		channel[REDIS_KEY_MAX];

		redis_commands_channel(channel);
		redisAsyncCommand(connection->context, on_subscription_message, NULL, "SUBSCRIBE %s", channel);
	}
	if (redis_link_ready())
		link_handlers->availability(true);
}

/*
 * hiredis on the worker's libuv loop.  hiredis's own adapter
 * (hiredis/adapters/libuv.h, 0.14) ignores the error status libuv
 * reports for a socket, and libuv stops watching a socket once it
 * reported an error: a connect that Redis refused never failed, so every
 * attempt while Redis was down waited out presence.redis_connect_timeout
 * (the link came back up to that much later), and a reset connection was
 * never noticed.  This one hands the error to hiredis as a read, which
 * finds the socket's error and fails the connection at once.
 */
typedef struct RedisPoll
{
	redisAsyncContext *context; /* NULL once hiredis is done with it */
	uv_poll_t	handle;
	int			events;
} RedisPoll;

/* The socket is ready, or failed (libuv no longer watches it): hiredis's read finds the error. */
static void
poll_ready(uv_poll_t *handle, int status, int events)
{
	RedisPoll  *watcher = handle->data;

	if (status < 0)
		events = UV_READABLE;
	if (watcher->context && (events & UV_READABLE))
		redisAsyncHandleRead(watcher->context);
	/* the read may have freed the context */
	if (watcher->context && (events & UV_WRITABLE))
		redisAsyncHandleWrite(watcher->context);
}

/* hiredis wants (add) or no longer wants (remove) to hear of readability or writability. */
static void
poll_change(RedisPoll *watcher, int add, int remove)
{
	watcher->events = (watcher->events | add) & ~remove;
	if (watcher->events)
		uv_poll_start(&watcher->handle, watcher->events, poll_ready);
	else
		uv_poll_stop(&watcher->handle);
}

static void
poll_add_read(void *privdata)
{
	poll_change(privdata, UV_READABLE, 0);
}

static void
poll_del_read(void *privdata)
{
	poll_change(privdata, 0, UV_READABLE);
}

static void
poll_add_write(void *privdata)
{
	poll_change(privdata, UV_WRITABLE, 0);
}

static void
poll_del_write(void *privdata)
{
	poll_change(privdata, 0, UV_WRITABLE);
}

static void
poll_closed(uv_handle_t *handle)
{
	free(handle->data);
}

/* hiredis frees the context: stop watching, free ours once libuv let go. */
static void
poll_cleanup(void *privdata)
{
	RedisPoll  *watcher = privdata;

	watcher->context = NULL;
	uv_close((uv_handle_t *) &watcher->handle, poll_closed);
}

/* Puts a new context on the worker's loop, with the hooks above. */
static bool
poll_attach(redisAsyncContext *context)
{
	RedisPoll  *watcher = calloc(1, sizeof(RedisPoll));

	if (watcher == NULL || uv_poll_init(link_loop, &watcher->handle, context->c.fd) != 0)
	{
		free(watcher);
		return false;
	}
	watcher->context = context;
	watcher->handle.data = watcher;
	context->ev.data = watcher;
	context->ev.addRead = poll_add_read;
	context->ev.delRead = poll_del_read;
	context->ev.addWrite = poll_add_write;
	context->ev.delWrite = poll_del_write;
	context->ev.cleanup = poll_cleanup;
	return true;
}

static void
link_connect(RedisConnection *connection)
{
	redisAsyncContext *context;

	if (link_stopping)
		return;
	context = redisAsyncConnect(link_target.host, link_target.port);
	if (context == NULL || context->err)
	{
		const char *detail = context ? context->errstr : "out of memory";

		connection_failed(connection, "failed", detail);
		if (context)
			redisAsyncFree(context);
		return;
	}
	if (!poll_attach(context))
	{
		redisAsyncFree(context);
		connection_failed(connection, "failed", "could not attach to the event loop");
		return;
	}
	context->data = connection;
	connection->context = context;
	connection->state = LINK_CONNECTING;
	redisAsyncSetConnectCallback(context, on_connect);
	redisAsyncSetDisconnectCallback(context, on_disconnect);

	/* queued now, sent as soon as the socket connects */
	if (link_target.password[0] && link_target.user[0])
		redisAsyncCommand(context, on_handshake_reply, "AUTH", "AUTH %s %s", link_target.user, link_target.password);
	else if (link_target.password[0])
		redisAsyncCommand(context, on_handshake_reply, "AUTH", "AUTH %s", link_target.password);
	if (link_target.db != 0)
		redisAsyncCommand(context, on_handshake_reply, "SELECT", "SELECT %d", link_target.db);
	if (connection == &link_commands)
	{
		const RedisScript *scripts[] = {&redis_touch_script, &redis_cursor_script, &redis_remove_script,
		&redis_snapshot_script};

		for (size_t i = 0; i < lengthof(scripts); i++)
			redisAsyncCommand(context, on_handshake_reply, "SCRIPT LOAD", "SCRIPT LOAD %s", scripts[i]->source);
	}
	redisAsyncCommand(context, on_handshake_reply, "PING", "PING");
	uv_timer_start(&connection->timer, connect_timed_out, (uint64) presence_redis_connect_timeout_ms, 0);
}

/*
 * Starts both connections when presence.redis_url is set.  origin names
 * this worker in published messages, so its own echoes can be ignored.
 */
void
redis_link_start(uv_loop_t *loop, const char *origin, const RedisLinkHandlers *handlers)
{
	const char *problem = NULL;

	strlcpy(link_origin, origin, sizeof(link_origin));
	link_handlers = handlers;
	if (!redis_configured())
		return;
	if (!redis_parse_url(presence_redis_url, &link_target, &problem))
	{
		ereport(LOG, (errmsg("presence: %s; running without Redis", problem)));
		return;
	}
	redis_scripts_init();
	link_loop = loop;
	uv_timer_init(loop, &link_commands.timer);
	link_commands.timer.data = &link_commands;
	uv_timer_init(loop, &link_subscriptions.timer);
	link_subscriptions.timer.data = &link_subscriptions;
	link_connect(&link_commands);
	link_connect(&link_subscriptions);
}

/* Shutdown: close both connections and the timers. */
void
redis_link_stop(void)
{
	RedisConnection *connections[] = {&link_commands, &link_subscriptions};

	if (link_loop == NULL)
		return;
	link_stopping = true;
	for (size_t i = 0; i < lengthof(connections); i++)
	{
		redisAsyncContext *context = connections[i]->context;

		connections[i]->context = NULL;
		if (context)
		{
			context->data = NULL;
			redisAsyncDisconnect(context);
		}
		uv_close((uv_handle_t *) &connections[i]->timer, NULL);
	}
}

/* Script replies: errors are counted; NOSCRIPT (after SCRIPT FLUSH) reloads. */
static void
on_script_reply(redisAsyncContext *context, void *reply_ptr, void *privdata)
{
	redisReply *reply = reply_ptr;
	const RedisScript *script = privdata;

	if (reply == NULL || reply->type != REDIS_REPLY_ERROR)
		return;
	presence_count(CTR_REDIS_ERRORS, 1);
	if (strncmp(reply->str, "NOSCRIPT", 8) == 0 && context->data)
		redisAsyncCommand(context, NULL, NULL, "SCRIPT LOAD %s", script->source);
	else
		ereport(LOG, (errmsg("presence: Redis %s script failed: %s", script->name, reply->str)));
}

static bool
run_script(const RedisScript *script, int nkeys, const char **args, int nargs,
		   redisCallbackFn *callback, void *privdata)
{
	const char *argv[REDIS_SCRIPT_ARGV_MAX];
	size_t		argvlen[REDIS_SCRIPT_ARGV_MAX];
	char		keys[8];
	int			argc = redis_script_argv(script, nkeys, args, nargs, argv, keys);

	if (argc < 0 || !link_ready(&link_commands))
		return false;
	for (int i = 0; i < argc; i++)
		argvlen[i] = strlen(argv[i]);
	return redisAsyncCommandArgv(link_commands.context, callback ? callback : on_script_reply,
								 callback ? privdata : (void *) script, argc, argv, argvlen) == REDIS_OK;
}

/*
 * A live connection of a user: refresh its entry, the user's
 * PresenceData and lastSeen, and publish message (may be NULL) always or
 * only when Redis did not know the connection.
 */
bool
redis_link_touch(const char *session_id, const char *user_id, const char *connection_id,
				 const char *presence_json, int64 now_ms, const char *message, bool publish_always)
{
	RedisUserKeys keys;
	const char *args[11] = {keys.user, keys.session, keys.conns, keys.channel,
		user_id, connection_id, presence_json, keys.now, keys.ttl, message ? message : "",
	publish_always ? "1" : "0"};

	redis_user_keys(&keys, session_id, user_id, now_ms);
	return run_script(&redis_touch_script, 4, args, lengthof(args), NULL, NULL);
}

/* A cursor move: the user's PresenceData and the message, nothing else. */
bool
redis_link_cursor(const char *session_id, const char *user_id, const char *presence_json,
				  const char *message)
{
	RedisUserKeys keys;
	const char *args[5] = {keys.user, keys.channel, presence_json, keys.ttl, message};

	redis_user_keys(&keys, session_id, user_id, 0);
	return run_script(&redis_cursor_script, 2, args, lengthof(args), NULL, NULL);
}

/* A connection of a user is gone (left, closed, silent): drop it, publish message. */
bool
redis_link_remove(const char *session_id, const char *user_id, const char *connection_id,
				  int64 now_ms, const char *message)
{
	RedisUserKeys keys;
	const char *args[9] = {keys.user, keys.session, keys.conns, keys.channel,
	user_id, connection_id, keys.now, keys.ttl, message ? message : ""};

	redis_user_keys(&keys, session_id, user_id, now_ms);
	return run_script(&redis_remove_script, 4, args, lengthof(args), NULL, NULL);
}

static void
on_snapshot(redisAsyncContext *context, void *reply_ptr, void *privdata)
{
	redisReply *reply = reply_ptr;
	char	   *session_id = privdata;

	if (reply && reply->type == REDIS_REPLY_ARRAY)
	{
		const char **entries = malloc(Max(reply->elements, 1) * sizeof(char *));
		int			count = 0;

		for (size_t i = 0; entries && i < reply->elements; i++)
			if (reply->element[i]->type == REDIS_REPLY_STRING)
				entries[count++] = reply->element[i]->str;
		link_handlers->snapshot(session_id, entries, entries ? count : 0);
		free(entries);
	}
	else
	{
		if (reply)
			presence_count(CTR_REDIS_ERRORS, 1);
		link_handlers->snapshot(session_id, NULL, 0);
	}
	free(session_id);
}

/* After SUBSCRIBE is confirmed, read who is already there. */
static void
request_snapshot(const char *session_id)
{
	RedisSessionKeys keys;
	const char *args[5] = {keys.session, keys.user_prefix, keys.conns_prefix, keys.now, keys.ttl};
	char	   *privdata = strdup(session_id);

	redis_session_keys(&keys, session_id, presence_now_ms());
	if (privdata == NULL || !run_script(&redis_snapshot_script, 1, args, lengthof(args), on_snapshot, privdata))
	{
		link_handlers->snapshot(session_id, NULL, 0);
		free(privdata);
	}
}

/*
 * Whether a session message is this worker's own: the local clients had
 * it already.  Our messages begin {"o":"<origin>", so most echoes are
 * dropped without parsing; live_remote.c checks the parsed origin again.
 */
static bool
own_echo(const char *payload, size_t len)
{
	size_t		origin_len = strlen(link_origin);

	return len > origin_len + 7 && memcmp(payload, "{\"o\":\"", 6) == 0 &&
		memcmp(payload + 6, link_origin, origin_len) == 0 && payload[6 + origin_len] == '"';
}

/*
 * Everything the subscriptions connection receives: confirmations of
 * SUBSCRIBE (then the snapshot is read) and messages, which go to
 * the handlers unless they are this worker's own echo.
 */
static void
on_subscription_message(redisAsyncContext *context, void *reply_ptr, void *privdata)
{
	redisReply *reply = reply_ptr;
	char		session_id[PRESENCE_SESSION_ID_MAX + 1];
	char		commands[REDIS_KEY_MAX];
	redisReply *kind,
			   *channel,
			   *payload;

	if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements < 3)
		return;
	kind = reply->element[0];
	channel = reply->element[1];
	payload = reply->element[2];
	if (kind->type != REDIS_REPLY_STRING || channel->type != REDIS_REPLY_STRING)
		return;
	redis_commands_channel(commands);

	if (strcmp(kind->str, "subscribe") == 0)
	{
		if (redis_session_of_channel(channel->str, channel->len, session_id))
			request_snapshot(session_id);
		return;
	}
	if (strcmp(kind->str, "message") != 0 || payload->type != REDIS_REPLY_STRING)
		return;
	if (channel->len == strlen(commands) && memcmp(channel->str, commands, channel->len) == 0)
		link_handlers->command(payload->str, payload->len);
	else if (!own_echo(payload->str, payload->len) &&
			 redis_session_of_channel(channel->str, channel->len, session_id))
		link_handlers->event(session_id, payload->str, payload->len);
}

/* Starts receiving a session's events; its snapshot follows the confirmation. */
bool
redis_link_watch(const char *session_id)
{
	char		channel[REDIS_KEY_MAX];

	if (!link_ready(&link_subscriptions))
		return false;
	redis_channel(channel, session_id);
	return redisAsyncCommand(link_subscriptions.context, on_subscription_message, NULL,
							 "SUBSCRIBE %s", channel) == REDIS_OK;
}

void
redis_link_unwatch(const char *session_id)
{
	char		channel[REDIS_KEY_MAX];

	if (!link_ready(&link_subscriptions))
		return;
	redis_channel(channel, session_id);
	redisAsyncCommand(link_subscriptions.context, on_subscription_message, NULL, "UNSUBSCRIBE %s", channel);
}

/* Sends a SQL command (broadcast, end_session, ...) to the other nodes. */
bool
redis_link_publish_command(const char *message)
{
	char		channel[REDIS_KEY_MAX];

	if (!link_ready(&link_commands))
		return false;
	redis_commands_channel(channel);
	return redisAsyncCommand(link_commands.context, NULL, NULL, "PUBLISH %s %s", channel, message) == REDIS_OK;
}
