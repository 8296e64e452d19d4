/*-------------------------------------------------------------------------
 * redis_sync.c
 *	  Blocking Redis access for SQL functions (online_users) and the
 *	  maintenance worker (the sweep of users whose node died).
 *
 * Every call is bounded by presence.redis_connect_timeout, connecting and
 * reading alike, and a failure is reported to the caller, which falls
 * back to the local view or tries again on its next round: nothing here
 * raises an error through hiredis.  The connection is kept for the
 * process's next call and dropped after any failure.
 *-------------------------------------------------------------------------
 */
#include "presence.h"

#include <hiredis/hiredis.h>

#include "redis_layout.h"
#include "redis_sync.h"

static redisContext *sync_context = NULL;

static void
sync_drop(void)
{
	if (sync_context)
		redisFree(sync_context);
	sync_context = NULL;
}

/* reply when it is not an error; else NULL, and the connection is dropped. */
static redisReply *
sync_checked(redisReply *reply)
{
	if (reply == NULL || reply->type == REDIS_REPLY_ERROR)
	{
		if (reply)
			freeReplyObject(reply);
		sync_drop();
		return NULL;
	}
	return reply;
}

static redisReply *
sync_command_argv(int argc, const char **argv)
{
	return sync_checked(redisCommandArgv(sync_context, argc, argv, NULL));
}

/* Connects (or reuses the connection), with AUTH and SELECT from the URL. */
static bool
sync_connect(void)
{
	RedisTarget target;
	const char *problem;
	struct timeval timeout = {presence_redis_connect_timeout_ms / 1000,
	(presence_redis_connect_timeout_ms % 1000) * 1000};
	redisReply *reply;

	if (sync_context != NULL)
		return true;
	if (!redis_configured() || !redis_parse_url(presence_redis_url, &target, &problem))
		return false;
	redis_scripts_init();
	sync_context = redisConnectWithTimeout(target.host, target.port, timeout);
	if (sync_context == NULL || sync_context->err || redisSetTimeout(sync_context, timeout) != REDIS_OK)
	{
		sync_drop();
		return false;
	}
	if (target.password[0])
	{
		const char *auth_user[3] = {"AUTH", target.user, target.password};
		const char *auth[2] = {"AUTH", target.password};

		reply = target.user[0] ? sync_command_argv(3, auth_user) : sync_command_argv(2, auth);
		if (reply == NULL)
			return false;
		freeReplyObject(reply);
	}
	if (target.db != 0)
	{
		char		db[16];
		const char *select[2] = {"SELECT", db};

		snprintf(db, sizeof(db), "%d", target.db);
		if ((reply = sync_command_argv(2, select)) == NULL)
			return false;
		freeReplyObject(reply);
	}
	return true;
}

/*
 * Runs a layout script: EVALSHA, and EVAL (which also caches it) when
 * Redis does not know it yet.  args are the script's keys then arguments.
 */
static redisReply *
redis_sync_script(const RedisScript *script, int nkeys, const char **args, int nargs)
{
	const char *argv[REDIS_SCRIPT_ARGV_MAX];
	char		keys[8];
	int			argc = redis_script_argv(script, nkeys, args, nargs, argv, keys);
	redisReply *reply;

	if (argc < 0 || !sync_connect())
		return NULL;
	reply = redisCommandArgv(sync_context, argc, argv, NULL);
	if (reply && reply->type == REDIS_REPLY_ERROR && strncmp(reply->str, "NOSCRIPT", 8) == 0)
	{
		freeReplyObject(reply);
		argv[0] = "EVAL";
		argv[1] = script->source;
		reply = redisCommandArgv(sync_context, argc, argv, NULL);
	}
	return sync_checked(reply);
}

/* The session's users with a fresh connection, as the snapshot script reads them. */
redisReply *
redis_sync_session_users(const char *session_id, int64 now_ms)
{
	RedisSessionKeys keys;
	const char *args[5] = {keys.session, keys.user_prefix, keys.conns_prefix, keys.now, keys.ttl};

	redis_session_keys(&keys, session_id, now_ms);
	return redis_sync_script(&redis_snapshot_script, 1, args, lengthof(args));
}

/*
 * One SCAN step over the sessions' sorted sets.  Returns the reply
 * ([next cursor, [keys]]) or NULL.
 */
redisReply *
redis_sync_scan_sessions(const char *cursor)
{
	char		pattern[REDIS_KEY_MAX];
	const char *argv[6] = {"SCAN", cursor, "MATCH", pattern, "COUNT", "200"};

	if (!sync_connect())
		return NULL;
	redis_session_key(pattern, "*");
	return sync_command_argv(lengthof(argv), argv);
}

/*
 * Times out the users of a session none of whose connections was seen
 * within presence_ttl: their node is gone.  Returns the removed user ids
 * (array reply) or NULL.
 */
redisReply *
redis_sync_sweep_session(const char *session_id, const char *origin, int64 now_ms)
{
	RedisSessionKeys keys;
	const char *args[7] = {keys.session, keys.channel, keys.user_prefix, keys.conns_prefix,
	keys.now, keys.ttl, origin};

	redis_session_keys(&keys, session_id, now_ms);
	return redis_sync_script(&redis_sweep_script, 2, args, lengthof(args));
}
