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
 * PresenceData when known.
 *-------------------------------------------------------------------------
 */
#include "presence.h"

#include <openssl/sha.h>

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

void
redis_user_key(char *out, const char *session_id, const char *user_id)
{
	snprintf(out, REDIS_KEY_MAX, "%spresence:%s:%s", presence_redis_prefix, session_id, user_id);
}

void
redis_user_key_prefix(char *out, const char *session_id)
{
	snprintf(out, REDIS_KEY_MAX, "%spresence:%s:", presence_redis_prefix, session_id);
}

void
redis_session_key(char *out, const char *session_id)
{
	snprintf(out, REDIS_KEY_MAX, "%spresence:session:%s", presence_redis_prefix, session_id);
}

void
redis_conns_key(char *out, const char *session_id, const char *user_id)
{
	snprintf(out, REDIS_KEY_MAX, "%spresence:conns:%s:%s", presence_redis_prefix, session_id, user_id);
}

void
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
