/*-------------------------------------------------------------------------
 * db_write.h
 *	  The one way a ws worker writes: a statement named once, with text
 *	  parameters, run where the database can take it (db_write.c).
 *-------------------------------------------------------------------------
 */
#ifndef PRESENCE_DB_WRITE_H
#define PRESENCE_DB_WRITE_H

#include "worker_db.h"

/* The statements a ws worker writes with; their SQL is in db_write.c. */
typedef enum DbStatement
{
	DB_ENSURE_USER,				/* (user id, name) -> the stored name */
	DB_CREATE_SESSION,			/* (owner, operation, metadata, target, objective, session id) -> JSON */
	DB_END_SESSION,				/* (session id, status, owner) -> a row when the owner ended it */
	DB_END_SESSION_PERMITTED,	/* (session id, status, user) -> a row; presence.permission_function allowed it */
	DB_LOG_ACTIVITY_BATCH,		/* seven array literals -> one activity id per row */
	DB_STATEMENTS
} DbStatement;

#define DB_STATEMENT_MAX_PARAMS 7

struct pg_result;

/*
 * What a statement answered: its outcome and, read with db_reply_value,
 * its first column, row by row (valid while the callback runs).
 */
typedef struct DbReply
{
	DbResult	result;
	int			rows;
	char	  **copied;			/* from SPI: rows values, malloc'd */
	const struct pg_result *primary;	/* from the primary: its result */
} DbReply;

typedef void (*DbDone) (const DbReply *reply, void *arg);

/*
 * On a primary, runs inside the write's transaction before the statement:
 * takes what the write would otherwise wait for, and may rewrite params
 * (they are the caller's).  Returns false when nothing is left to write
 * (the reply is then DB_OK with no rows).
 */
typedef bool (*DbBeforeWrite) (const char **params, void *arg);

extern bool db_submit(DbStatement statement, const char **params, DbBeforeWrite before,
					  DbDone done, void *arg);
extern bool db_writes_go_to_primary(void);
extern const char *db_reply_value(const DbReply *reply, int row);

#endif							/* PRESENCE_DB_WRITE_H */
