/*-------------------------------------------------------------------------
 * activity.h
 *	  The worker's activity queue and its bulk flush.
 *-------------------------------------------------------------------------
 */
#ifndef PRESENCE_ACTIVITY_H
#define PRESENCE_ACTIVITY_H

#include <jansson.h>

#include "connection.h"

/* A row as its handlers see it, once written or refused. */
typedef struct ActivityRow
{
	const char *id;				/* the activity_log id; "" when refused */
	const char *session_id;
	const char *user_id;		/* NULL for system rows */
	const char *activity_type;
	const char *details;		/* JSON object text, or NULL */
	int64		created_ms;
	bool		announce;		/* the session's clients are to see it */
} ActivityRow;

/*
 * What the queue calls up into, from the worker's main loop; requester
 * and ref are what activity_enqueue was given (requester may have closed:
 * connection_is_open).
 */
typedef struct ActivityHandlers
{
	void		(*committed) (const ActivityRow *row, Connection *requester, json_t *ref);
	void		(*refused) (const ActivityRow *row, Connection *requester, json_t *ref);
} ActivityHandlers;

extern void activity_init(const ActivityHandlers *handlers);
extern bool activity_enqueue(const char *session_id, const char *user_id, const char *activity_type,
							 json_t *details, Connection *source, Connection *requester,
							 json_t *ref, bool announce);
extern bool activity_flush_due(int64 now_ms, bool force);
extern int64 activity_next_deadline(void);
extern bool activity_flush(void);
extern int	activity_pending(void);

#endif							/* PRESENCE_ACTIVITY_H */
