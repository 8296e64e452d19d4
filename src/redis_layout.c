/*-------------------------------------------------------------------------
 * redis_layout.c
 *	  Where presence keeps live presence in Redis, and the scripts that
 *	  change it (ARCHITECTURE.md, "Redis layout"):
 *
 *	  {prefix}presence:{sessionId}:{userId}		  PresenceData JSON, TTL presence_ttl
 *	  {prefix}presence:session:{sessionId}		  sorted set, score lastSeen ms
 *	  {prefix}presence:conns:{sessionId}:{userId}  hash conn id -> lastSeen ms, same TTL
 *	  {prefix}presence:updates:{sessionId}		  pub/sub channel of presence changes
 *	  {prefix}presence:commands					  pub/sub channel of SQL commands
 *
 * A change touches several keys, so each is one Lua script: atomic, and
 * one round trip.  The sorted set has no TTL: the sweep (maintenance.c)
 * must find a dead node's users there to announce their timeout, and
 * Redis drops the set when its last member goes.  A connection id is node:worker:serial and lives in
 * the user's conns hash with the time it was last seen, so a user stays
 * present while any of their connections anywhere is fresh, and a dead
 * node's connections age out after presence_ttl without anyone having to
 * know the node died.
 *
 * Messages on a session channel are JSON objects: "o" the origin worker,
 * "k" the kind (join, update, cursor, leave, timeout), "c" the connection
 * id ("*" for all of the user's), "uid" the user id and "u" their
 * PresenceData when known.  What is read back from Redis is parsed and
 * validated here (redis_parse_*), apart from live state, so that the
 * parsers can be fuzzed on their own (fuzz/).
 *-------------------------------------------------------------------------
 */
#include "presence.h"

#include <openssl/sha.h>

#include "auth.h"
#include "protocol.h"
#include "redis_layout.h"

/*
 * KEYS: user, session zset, conns, channel.  ARGV: uid, conn, json, now,
 * ttl, message, always.  The message is published when always is "1",
 * or when Redis did not know the connection (a refresh after a sweep or
 * a Redis restart then announces the user again).
 */
RedisScript redis_touch_script = {"touch",
	"local now = tonumber(ARGV[4])\n"
	"local ttl = tonumber(ARGV[5])\n"
	"local new = redis.call('HSET', KEYS[3], ARGV[2], ARGV[4])\n"
	"local conns = redis.call('HGETALL', KEYS[3])\n"
	"for i = 1, #conns, 2 do\n"
	"  if tonumber(conns[i + 1]) < now - ttl then redis.call('HDEL', KEYS[3], conns[i]) end\n"
	"end\n"
	"redis.call('PEXPIRE', KEYS[3], ARGV[5])\n"
	"redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[5])\n"
	"redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])\n"
	"if ARGV[6] ~= '' and (ARGV[7] == '1' or new == 1) then redis.call('PUBLISH', KEYS[4], ARGV[6]) end\n"
	"return redis.call('HLEN', KEYS[3])\n",
""};

/*
 * KEYS: user, channel.  ARGV: json, ttl, message.  A cursor move of a
 * connection refreshed within the last third of the TTL: only the
 * PresenceData and the message, the most frequent change kept cheapest.
 */
RedisScript redis_cursor_script = {"cursor",
	"redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])\n"
	"redis.call('PUBLISH', KEYS[2], ARGV[3])\n"
	"return 1\n",
""};

/* KEYS: user, session zset, conns, channel.  ARGV: uid, conn, now, ttl, message. */
RedisScript redis_remove_script = {"remove",
	"local now = tonumber(ARGV[3])\n"
	"local ttl = tonumber(ARGV[4])\n"
	"redis.call('HDEL', KEYS[3], ARGV[2])\n"
	"local conns = redis.call('HGETALL', KEYS[3])\n"
	"for i = 1, #conns, 2 do\n"
	"  if tonumber(conns[i + 1]) < now - ttl then redis.call('HDEL', KEYS[3], conns[i]) end\n"
	"end\n"
	"local left = redis.call('HLEN', KEYS[3])\n"
	"if left == 0 then\n"
	"  redis.call('DEL', KEYS[1], KEYS[3])\n"
	"  redis.call('ZREM', KEYS[2], ARGV[1])\n"
	"end\n"
	"if ARGV[5] ~= '' then redis.call('PUBLISH', KEYS[4], ARGV[5]) end\n"
	"return left\n",
""};

/*
 * KEYS: session zset.  ARGV: user key prefix, conns key prefix, now, ttl.
 * Returns [PresenceData JSON, "conn conn ...", ...] for every user with a
 * fresh connection.
 */
RedisScript redis_snapshot_script = {"snapshot",
	"local now = tonumber(ARGV[3])\n"
	"local ttl = tonumber(ARGV[4])\n"
	"local out = {}\n"
	"for _, uid in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do\n"
	"  local data = redis.call('GET', ARGV[1] .. uid)\n"
	"  if data then\n"
	"    local conns = redis.call('HGETALL', ARGV[2] .. uid)\n"
	"    local fresh = {}\n"
	"    for i = 1, #conns, 2 do\n"
	"      if tonumber(conns[i + 1]) >= now - ttl then table.insert(fresh, conns[i]) end\n"
	"    end\n"
	"    if #fresh > 0 then\n"
	"      table.insert(out, data)\n"
	"      table.insert(out, table.concat(fresh, ' '))\n"
	"    end\n"
	"  end\n"
	"end\n"
	"return out\n",
""};

/*
 * KEYS: session zset, channel.  ARGV: user key prefix, conns key prefix,
 * now, ttl, origin.  Removes users none of whose connections was seen
 * within ttl and publishes one timeout for each; atomic, so when several
 * nodes sweep, each user times out once.  Returns the removed user ids.
 */
RedisScript redis_sweep_script = {"sweep",
	"local now = tonumber(ARGV[3])\n"
	"local ttl = tonumber(ARGV[4])\n"
	"local removed = {}\n"
	"for _, uid in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - ttl)) do\n"
	"  local conns_key = ARGV[2] .. uid\n"
	"  local conns = redis.call('HGETALL', conns_key)\n"
	"  local fresh = 0\n"
	"  for i = 1, #conns, 2 do\n"
	"    if tonumber(conns[i + 1]) >= now - ttl then fresh = fresh + 1 end\n"
	"  end\n"
	"  if fresh == 0 then\n"
	"    redis.call('DEL', ARGV[1] .. uid, conns_key)\n"
	"    redis.call('ZREM', KEYS[1], uid)\n"
	"    redis.call('PUBLISH', KEYS[2], cjson.encode({o = ARGV[5], k = 'timeout', c = '*', uid = uid}))\n"
	"    table.insert(removed, uid)\n"
	"  end\n"
	"end\n"
	"return removed\n",
""};

bool
redis_configured(void)
{
	return presence_redis_url != NULL && presence_redis_url[0] != '\0';
}

/* Computes each script's SHA-1 once, so EVALSHA needs no SCRIPT LOAD round trip. */
void
redis_scripts_init(void)
{
	RedisScript *scripts[] = {&redis_touch_script, &redis_cursor_script, &redis_remove_script,
	&redis_snapshot_script, &redis_sweep_script};

	for (size_t i = 0; i < lengthof(scripts); i++)
	{
		unsigned char digest[SHA_DIGEST_LENGTH];

		SHA1((const unsigned char *) scripts[i]->source, strlen(scripts[i]->source), digest);
		for (int b = 0; b < SHA_DIGEST_LENGTH; b++)
			snprintf(scripts[i]->sha1 + 2 * b, 3, "%02x", digest[b]);
	}
}

/*
 * Parses redis://[[user:]password@]host[:port][/db].  Returns false with
 * *problem naming what is wrong (never the password).
 */
bool
redis_parse_url(const char *url, RedisTarget *target, const char **problem)
{
	const char *rest;
	const char *at;
	const char *slash;
	const char *colon;
	size_t		host_len;

	memset(target, 0, sizeof(*target));
	target->port = 6379;
	if (strncmp(url, "redis://", 8) != 0)
	{
		*problem = "presence.redis_url must start with redis://";
		return false;
	}
	rest = url + 8;
	slash = strchr(rest, '/');
	at = strrchr(rest, '@');
	if (at && slash && at > slash)
		at = NULL;
	if (at)
	{
		const char *separator = memchr(rest, ':', at - rest);
		const char *password = separator ? separator + 1 : rest;

		if (separator && separator > rest)
		{
			if ((size_t) (separator - rest) >= sizeof(target->user))
				goto too_long;
			memcpy(target->user, rest, separator - rest);
		}
		if ((size_t) (at - password) >= sizeof(target->password))
			goto too_long;
		memcpy(target->password, password, at - password);
		rest = at + 1;
	}
	slash = strchr(rest, '/');
	host_len = slash ? (size_t) (slash - rest) : strlen(rest);
	colon = memchr(rest, ':', host_len);
	if (colon)
	{
		char	   *end;
		long		port = strtol(colon + 1, &end, 10);

		if (end != rest + host_len || port < 1 || port > 65535)
		{
			*problem = "presence.redis_url has an invalid port";
			return false;
		}
		target->port = (int) port;
		host_len = colon - rest;
	}
	if (host_len == 0 || host_len >= sizeof(target->host))
	{
		*problem = "presence.redis_url needs a host";
		return false;
	}
	memcpy(target->host, rest, host_len);
	if (slash && slash[1] != '\0')
	{
		char	   *end;
		long		db = strtol(slash + 1, &end, 10);

		if (*end != '\0' || db < 0 || db > 1000000)
		{
			*problem = "presence.redis_url has an invalid database number";
			return false;
		}
		target->db = (int) db;
	}
	return true;

too_long:
	*problem = "presence.redis_url credentials are too long";
	return false;
}

static void
redis_user_key(char *out, const char *session_id, const char *user_id)
{
	snprintf(out, REDIS_KEY_MAX, "%spresence:%s:%s", presence_redis_prefix, session_id, user_id);
}

static void
redis_user_key_prefix(char *out, const char *session_id)
{
	snprintf(out, REDIS_KEY_MAX, "%spresence:%s:", presence_redis_prefix, session_id);
}

void
redis_session_key(char *out, const char *session_id)
{
	snprintf(out, REDIS_KEY_MAX, "%spresence:session:%s", presence_redis_prefix, session_id);
}

static void
redis_conns_key(char *out, const char *session_id, const char *user_id)
{
	snprintf(out, REDIS_KEY_MAX, "%spresence:conns:%s:%s", presence_redis_prefix, session_id, user_id);
}

static void
redis_conns_key_prefix(char *out, const char *session_id)
{
	snprintf(out, REDIS_KEY_MAX, "%spresence:conns:%s:", presence_redis_prefix, session_id);
}

void
redis_channel(char *out, const char *session_id)
{
	snprintf(out, REDIS_KEY_MAX, "%spresence:updates:%s", presence_redis_prefix, session_id);
}

void
redis_commands_channel(char *out)
{
	snprintf(out, REDIS_KEY_MAX, "%spresence:commands", presence_redis_prefix);
}

/* The session id of a session channel name, or NULL when it is not one. */
const char *
redis_session_of_channel(const char *channel, size_t len, char *session_id)
{
	char		prefix[REDIS_KEY_MAX];
	size_t		prefix_len;

	redis_channel(prefix, "");
	prefix_len = strlen(prefix);
	if (len <= prefix_len || len - prefix_len > PRESENCE_SESSION_ID_MAX ||
		memcmp(channel, prefix, prefix_len) != 0)
		return NULL;
	memcpy(session_id, channel + prefix_len, len - prefix_len);
	session_id[len - prefix_len] = '\0';
	return session_id;
}

void
redis_user_keys(RedisUserKeys *keys, const char *session_id, const char *user_id, int64_t now_ms)
{
	redis_user_key(keys->user, session_id, user_id);
	redis_session_key(keys->session, session_id);
	redis_conns_key(keys->conns, session_id, user_id);
	redis_channel(keys->channel, session_id);
	snprintf(keys->now, sizeof(keys->now), INT64_FORMAT, (int64) now_ms);
	snprintf(keys->ttl, sizeof(keys->ttl), "%d", presence_presence_ttl_ms);
}

/*
 * The argument vector of EVALSHA for a script: the command, its SHA-1,
 * the key count, then args (its keys, then its arguments).  argv has room
 * for REDIS_SCRIPT_ARGV_MAX entries and nkeys_text for 8 bytes; returns
 * the number of entries, or -1 when there are more than
 * REDIS_SCRIPT_MAX_ARGS args.
 */
int
redis_script_argv(const RedisScript *script, int nkeys, const char **args, int nargs,
				  const char **argv, char *nkeys_text)
{
	if (nargs > REDIS_SCRIPT_MAX_ARGS)
		return -1;
	snprintf(nkeys_text, 8, "%d", nkeys);
	argv[0] = "EVALSHA";
	argv[1] = script->sha1;
	argv[2] = nkeys_text;
	for (int i = 0; i < nargs; i++)
		argv[3 + i] = args[i];
	return 3 + nargs;
}

void
redis_session_keys(RedisSessionKeys *keys, const char *session_id, int64_t now_ms)
{
	redis_session_key(keys->session, session_id);
	redis_channel(keys->channel, session_id);
	redis_user_key_prefix(keys->user_prefix, session_id);
	redis_conns_key_prefix(keys->conns_prefix, session_id);
	snprintf(keys->now, sizeof(keys->now), INT64_FORMAT, (int64) now_ms);
	snprintf(keys->ttl, sizeof(keys->ttl), "%d", presence_presence_ttl_ms);
}

/* A string member of at most max_len bytes, or NULL (missing, not a string, too long). */
static const char *
fitting_string(json_t *object, const char *name, size_t max_len)
{
	json_t	   *value = json_object_get(object, name);

	if (!json_is_string(value) || json_string_length(value) > max_len ||
		strlen(json_string_value(value)) != json_string_length(value))
		return NULL;
	return json_string_value(value);
}

/* A user id as this extension writes them: a lower-case hyphenated UUID. */
static const char *
canonical_user_id(json_t *object, const char *name)
{
	const char *user_id = fitting_string(object, name, PRESENCE_UUID_LEN);
	char		canonical[PRESENCE_UUID_LEN + 1];

	if (user_id == NULL || !jwt_parse_uuid(user_id, canonical) || strcmp(canonical, user_id) != 0)
		return NULL;
	return user_id;
}

/* A connection id: node:worker:serial (or "*"), printable, no spaces (snapshots list them space-separated). */
static bool
valid_connection_id(const char *connection_id)
{
	size_t		len = strlen(connection_id);

	if (len < 1 || len > REDIS_CONNECTION_ID_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char) connection_id[i] <= ' ' || (unsigned char) connection_id[i] >= 0x7f)
			return false;
	return true;
}

/*
 * Parses a message of a session channel (see the header of this file).
 * Returns false, with nothing to free, unless it is an object with a
 * string origin and kind, a valid connection id and a user id.
 */
bool
redis_parse_event(const char *payload, size_t len, RedisEvent *event)
{
	json_t	   *presence;

	memset(event, 0, sizeof(*event));
	event->root = json_loadb(payload, len, 0, NULL);
	if (event->root == NULL)
		return false;
	event->origin = fitting_string(event->root, "o", REDIS_KEY_MAX);
	event->kind = fitting_string(event->root, "k", 64);
	event->connection_id = fitting_string(event->root, "c", REDIS_CONNECTION_ID_MAX);
	event->user_id = canonical_user_id(event->root, "uid");
	presence = json_object_get(event->root, "u");
	event->presence = json_is_object(presence) ? presence : NULL;
	if (event->origin == NULL || event->kind == NULL || event->connection_id == NULL ||
		event->user_id == NULL || !valid_connection_id(event->connection_id))
	{
		json_decref(event->root);
		memset(event, 0, sizeof(*event));
		return false;
	}
	return true;
}

/*
 * Parses a message of the commands channel: {"o": node, "cmd": name,
 * "sessionId": id, "userId": uuid (optional), "payload": any (optional)}.
 * Returns false, with nothing to free, when it is not one.
 */
bool
redis_parse_command(const char *payload, size_t len, RedisCommand *command)
{
	json_t	   *user_id;

	memset(command, 0, sizeof(*command));
	command->root = json_loadb(payload, len, 0, NULL);
	if (command->root == NULL)
		return false;
	command->origin = fitting_string(command->root, "o", REDIS_KEY_MAX);
	command->command = fitting_string(command->root, "cmd", 64);
	command->session_id = fitting_string(command->root, "sessionId", PRESENCE_SESSION_ID_MAX);
	user_id = json_object_get(command->root, "userId");
	command->user_id = canonical_user_id(command->root, "userId");
	command->payload = json_object_get(command->root, "payload");
	if (command->origin == NULL || command->command == NULL || command->session_id == NULL ||
		!protocol_valid_session_id(command->session_id) ||
		(user_id != NULL && !json_is_null(user_id) && command->user_id == NULL))
	{
		json_decref(command->root);
		memset(command, 0, sizeof(*command));
		return false;
	}
	return true;
}

/*
 * Reads a PresenceData object (docs/protocol.md) as another node wrote it:
 * each field that is missing, of the wrong type or longer than the
 * schema allows is left NULL / false / -1, never truncated (a cut could
 * split a UTF-8 sequence, and the user could then not be serialised).
 */
void
redis_parse_presence(json_t *data, RedisPresence *presence)
{
	json_t	   *value;
	json_t	   *cursor = json_object_get(data, "cursor");
	json_t	   *position = json_object_get(cursor, "position");

	memset(presence, 0, sizeof(*presence));
	presence->user_id = canonical_user_id(data, "userId");
	presence->username = fitting_string(data, "username", PRESENCE_USERNAME_MAX);
	presence->role = fitting_string(data, "role", 15);
	value = json_object_get(data, "status");
	presence->status = !json_is_string(value) ? -1 :
		strcmp(json_string_value(value), "away") == 0 ? STATUS_AWAY : STATUS_ONLINE;
	value = json_object_get(data, "lastSeen");
	presence->has_last_seen = json_is_integer(value);
	presence->last_seen_ms = presence->has_last_seen ? (int64_t) json_integer_value(value) : 0;
	presence->cursor_event_id = json_is_object(cursor) ?
		fitting_string(cursor, "eventId", PRESENCE_EVENT_ID_MAX) : NULL;
	presence->has_cursor = presence->cursor_event_id != NULL && json_is_integer(position);
	presence->cursor_position = presence->has_cursor ? (int64_t) json_integer_value(position) : 0;
	if (!presence->has_cursor)
		presence->cursor_event_id = NULL;
	presence->activity = fitting_string(data, "activity", PRESENCE_ACTIVITY_MAX);
}
