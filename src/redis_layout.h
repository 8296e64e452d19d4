/*-------------------------------------------------------------------------
 * redis_layout.h
 *	  The Redis side of presence, shared by the ws workers (async), the
 *	  maintenance worker and SQL functions (blocking): where to connect,
 *	  key and channel names, and the Lua scripts that change them.
 *-------------------------------------------------------------------------
 */
#ifndef PRESENCE_REDIS_LAYOUT_H
#define PRESENCE_REDIS_LAYOUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

typedef struct RedisTarget
{
	char		host[256];
	int			port;
	char		user[128];		/* "" for AUTH with a password only */
	char		password[256];	/* "" for no AUTH */
	int			db;
} RedisTarget;

/* A Lua script, with the SHA-1 EVALSHA names it by. */
typedef struct RedisScript
{
	const char *name;
	const char *source;
	char		sha1[41];
} RedisScript;

extern RedisScript redis_touch_script;
extern RedisScript redis_cursor_script;
extern RedisScript redis_remove_script;
extern RedisScript redis_snapshot_script;
extern RedisScript redis_sweep_script;

extern bool redis_configured(void);
extern bool redis_parse_url(const char *url, RedisTarget *target, const char **problem);
extern void redis_scripts_init(void);

/* The most arguments (keys included) a script takes, and the EVALSHA vector that carries them. */
#define REDIS_SCRIPT_MAX_ARGS 13
#define REDIS_SCRIPT_ARGV_MAX (REDIS_SCRIPT_MAX_ARGS + 3)
extern int	redis_script_argv(const RedisScript *script, int nkeys, const char **args, int nargs,
							  const char **argv, char *nkeys_text);

/* Key and channel names; out has room for REDIS_KEY_MAX bytes. */
#define REDIS_KEY_MAX 512
extern void redis_session_key(char *out, const char *session_id);
extern void redis_channel(char *out, const char *session_id);
extern void redis_commands_channel(char *out);
extern const char *redis_session_of_channel(const char *channel, size_t len, char *session_id);

/* Everything a script about one user of a session names, as strings. */
typedef struct RedisUserKeys
{
	char		user[REDIS_KEY_MAX];
	char		session[REDIS_KEY_MAX];
	char		conns[REDIS_KEY_MAX];
	char		channel[REDIS_KEY_MAX];
	char		now[24];
	char		ttl[24];
} RedisUserKeys;

/* Everything a script about a whole session names, as strings. */
typedef struct RedisSessionKeys
{
	char		session[REDIS_KEY_MAX];
	char		channel[REDIS_KEY_MAX];
	char		user_prefix[REDIS_KEY_MAX];
	char		conns_prefix[REDIS_KEY_MAX];
	char		now[24];
	char		ttl[24];
} RedisSessionKeys;

extern void redis_user_keys(RedisUserKeys *keys, const char *session_id, const char *user_id, int64_t now_ms);
extern void redis_session_keys(RedisSessionKeys *keys, const char *session_id, int64_t now_ms);

/*
 * Messages and PresenceData read back from Redis, parsed and validated
 * (another node, or anyone who can write to Redis, made them): every
 * string is one the schema allows and fits its buffer, so what is kept
 * can be serialised again.  Strings point into root, which the caller
 * frees with json_decref once done.
 */
#define REDIS_CONNECTION_ID_MAX 95	/* Connection.id without terminator */

typedef struct RedisEvent
{
	json_t	   *root;
	const char *origin;
	const char *kind;			/* join, update, cursor, leave, timeout */
	const char *connection_id;	/* "*" for all of the user's */
	const char *user_id;		/* canonical UUID */
	json_t	   *presence;		/* "u" when an object, else NULL */
} RedisEvent;

typedef struct RedisCommand
{
	json_t	   *root;
	const char *origin;			/* the node that published it */
	const char *command;
	const char *session_id;		/* a valid session id */
	const char *user_id;		/* canonical UUID, or NULL */
	json_t	   *payload;		/* or NULL */
} RedisCommand;

/* The fields of one PresenceData; NULL / false / -1 when missing or malformed. */
typedef struct RedisPresence
{
	const char *user_id;		/* canonical UUID */
	const char *username;
	const char *role;
	int			status;			/* PresenceStatus (online / away), or -1 */
	bool		has_last_seen;
	int64_t		last_seen_ms;
	bool		has_cursor;
	const char *cursor_event_id;
	int64_t		cursor_position;
	const char *activity;
} RedisPresence;

extern bool redis_parse_event(const char *payload, size_t len, RedisEvent *event);
extern bool redis_parse_command(const char *payload, size_t len, RedisCommand *command);
extern void redis_parse_presence(json_t *data, RedisPresence *presence);

#endif							/* PRESENCE_REDIS_LAYOUT_H */
