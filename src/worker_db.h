/*-------------------------------------------------------------------------
 * worker_db.h
 *	  The SQL a ws worker runs through SPI: each call is one short,
 *	  bounded transaction whose errors are caught and turned into a
 *	  DbResult, so it is safe to call from inside a libwebsockets callback.
 *	  Writes go through db_write.h, which uses it on a primary.
 *-------------------------------------------------------------------------
 */
#ifndef PRESENCE_WORKER_DB_H
#define PRESENCE_WORKER_DB_H

#include "presence.h"

typedef enum DbResult
{
	DB_OK,
	DB_NOT_FOUND,				/* no such session / user */
	DB_FORBIDDEN,				/* exists, but not for this user */
	DB_CONFLICT,				/* e.g. the session id is taken */
	DB_INVALID,					/* the data itself was refused (SQLSTATE class 22, 23, P0, 55) */
	DB_BUSY,					/* a lock or the statement time ran out: retry later */
	DB_FAILED					/* anything else: transient, worth retrying */
} DbResult;

typedef DbResult (*DbWork) (void *arg);

/* How long a process's transactions may wait (db_set_waits). */
typedef enum DbWaits
{
	DB_WAITS_LOOP,				/* an event loop: presence.db_lock_timeout, presence.db_statement_timeout */
	DB_WAITS_BACKGROUND			/* no clients waiting: a few seconds per lock, statements unbounded */
} DbWaits;

extern void db_set_waits(DbWaits waits);

extern DbResult db_run(const char *activity, DbWork work, void *arg);
extern DbResult db_classify_sqlstate(const char *sqlstate);
extern bool db_extension_ready(void);
extern DbResult db_resolve_user(const char *user_id, char *username);
/* Room for a session's status and a participant's role, as db_session_state fills them. */
#define DB_STATUS_MAX 15
#define DB_ROLE_MAX PRESENCE_ROLE_MAX

extern DbResult db_session_state(const char *session_id, const char *user_id,
								 char *status, char *role, bool *is_owner);
extern DbResult db_session_access(const char *session_id, const char *user_id,
								  char *role, bool *is_owner);
extern DbResult db_session_owner(const char *session_id, const char *user_id);
extern DbResult db_count_participants(const char *session_id, const char *user_ids, int *count);

/* For the statements of db_write.c and activity.c, inside db_run work. */
struct _SPI_plan;
extern struct _SPI_plan *db_prepared(struct _SPI_plan **slot, const char *sql, int nargs, Oid *argtypes);
extern void db_execute(struct _SPI_plan *plan, Datum *args, const char *nulls, bool read_only);

#endif							/* PRESENCE_WORKER_DB_H */
