/*-------------------------------------------------------------------------
 * sql_checks.h
 *	  The whole-batch check of log_activity_batch(), for the batch writer
 *	  (activity_batch.c).
 *-------------------------------------------------------------------------
 */
#ifndef PRESENCE_SQL_CHECKS_H
#define PRESENCE_SQL_CHECKS_H

#include "fmgr.h"
#include "utils/uuid.h"

/* log_activity_batch's arguments, in order. */
typedef enum ActivityRowArray
{
	ACTIVITY_SESSION_IDS,
	ACTIVITY_USER_IDS,
	ACTIVITY_TYPES,
	ACTIVITY_DETAILS,
	ACTIVITY_IP_ADDRESSES,
	ACTIVITY_USER_AGENTS,
	ACTIVITY_CREATED_ATS,
	ACTIVITY_ROW_ARRAYS
} ActivityRowArray;

/* One of log_activity_batch's parallel arrays, split into its elements. */
typedef struct BatchArray
{
	const char *name;			/* argument name, for messages */
	Datum	   *values;
	bool	   *nulls;
	int			count;			/* 0 for a NULL argument */
} BatchArray;

/* A checked batch: the arguments and the session row id of every row. */
typedef struct ActivityRows
{
	int			count;
	BatchArray	arrays[ACTIVITY_ROW_ARRAYS];
	pg_uuid_t  *sessions;
} ActivityRows;

extern void activity_rows_check(FunctionCallInfo fcinfo, bool lock, ActivityRows *rows);

#endif							/* PRESENCE_SQL_CHECKS_H */
