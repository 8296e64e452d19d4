/*-------------------------------------------------------------------------
 * worker_db.h
 *	  The SQL a ws worker runs: each call is one short, bounded transaction
 *	  whose errors are caught and turned into a DbResult, so it is safe to
 *	  call from inside a libwebsockets callback.
 *-------------------------------------------------------------------------
 */
#ifndef PRESENCE_WORKER_DB_H
#define PRESENCE_WORKER_DB_H

#include <jansson.h>

#include "protocol.h"

typedef enum DbResult
{
	DB_OK,
	DB_NOT_FOUND,				/* no such session / user */
	DB_FORBIDDEN,				/* exists, but not for this user */
	DB_CONFLICT,				/* e.g. the session id is taken */
	DB_INVALID,					/* the data itself was refused (SQLSTATE class 22, 23, P0, 55) */
	DB_READ_ONLY,				/* a standby: the write goes to the primary */
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
extern DbResult db_resolve_user(const char *user_id, const char *token_name, char *username);
/* Room for a session's status and a participant's role, as db_session_state fills them. */
#define DB_STATUS_MAX 15
#define DB_ROLE_MAX 15

extern DbResult db_session_state(const char *session_id, const char *user_id,
								 char *status, char *role, bool *is_owner);
extern DbResult db_session_access(const char *session_id, const char *user_id,
								  char *role, bool *is_owner);
extern DbResult db_count_participants(const char *session_id, const char *user_ids, int *count);
extern DbResult db_create_session(const char *owner_id, const ClientRequest *request,
								  json_t **session);
extern void db_create_session_params(const char *owner_id, const ClientRequest *request,
									 const char **params);

/* Statements a standby sends to the primary as they are (primary_link.c). */
#define DB_CREATE_SESSION_SQL \
	"SELECT presence._create_session_described($1::uuid, $2, $3::jsonb, $4, $5, $6)"
#define DB_END_SESSION_SQL "SELECT presence.end_session($1, $2)"
#define DB_ENSURE_USER_SQL "SELECT presence._ensure_user($1::uuid, $2)"
extern DbResult db_end_session(const char *session_id, const char *user_id, const char *status);

#endif							/* PRESENCE_WORKER_DB_H */
