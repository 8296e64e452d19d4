/*-------------------------------------------------------------------------
 * primary_link.h
 *	  A standby's asynchronous libpq link to the primary, for writes.
 *-------------------------------------------------------------------------
 */
#ifndef PRESENCE_PRIMARY_LINK_H
#define PRESENCE_PRIMARY_LINK_H

#include <uv.h>

#include "libpq-fe.h"

#define PRIMARY_LINK_MAX_PARAMS 8

/* Called once per statement: the result (owned by the link), or NULL when the connection failed. */
typedef void (*PrimaryReply) (PGresult *result, void *context);

extern void primary_link_start(uv_loop_t *loop);
extern bool primary_link_send(const char *sql, int nparams, const char *const *params,
							  PrimaryReply done, void *context);
extern char *primary_conninfo_for_writes(void);
extern void primary_link_stop(void);

#endif							/* PRESENCE_PRIMARY_LINK_H */
