/*-------------------------------------------------------------------------
 * permissions.h
 *	  The application's permission function (presence.permission_function):
 *	  the one call of it, as its owner, that has_permission() and the ws
 *	  workers share, and the workers' cached, bounded way of asking it.
 *-------------------------------------------------------------------------
 */
#ifndef PRESENCE_PERMISSIONS_H
#define PRESENCE_PERMISSIONS_H

#include "presence.h"

/* The actions of the matrix, which the function is asked about too. */
typedef enum PermissionAction
{
	PERM_VIEW,
	PERM_COMMENT,
	PERM_OPERATE,
	PERM_MANAGE,
	PERM_END,
	PERM_AUDIT,
	PERM_ACTION_COUNT
} PermissionAction;

/* A connection's answers in one session, kept for presence.permission_cache_ttl. */
typedef struct PermissionCache
{
	int64		expires_ms[PERM_ACTION_COUNT];	/* 0: not asked */
	bool		allowed[PERM_ACTION_COUNT];
} PermissionCache;

/* What the function said; a failure (error, timeout, back-off) is no answer. */
typedef enum PermissionAnswer
{
	PERMISSION_DENIED,
	PERMISSION_ALLOWED,
	PERMISSION_UNANSWERED
} PermissionAnswer;

extern bool permission_function_set(void);
extern PermissionAnswer permission_ask(const char *session_id, const char *user_id,
									   PermissionAction action, PermissionCache *cache);
extern bool permission_allowed(const char *session_id, const char *user_id,
							   PermissionAction action, PermissionCache *cache);
extern void permission_remember(PermissionCache *cache, PermissionAction action, bool allowed);

/* Inline: live state clears caches and links without the function's SQL side (test/unit). */
static inline void
permission_cache_clear(PermissionCache *cache)
{
	memset(cache, 0, sizeof(*cache));
}

extern void permission_backoff_reset(void);

#endif							/* PRESENCE_PERMISSIONS_H */
