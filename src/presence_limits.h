/*-------------------------------------------------------------------------
 * presence_limits.h
 *	  Sizes of what travels on the wire and is stored: fixed by the schema
 *	  (sql/presence--1.0.sql) and docs/protocol.md.  Plain C, for the
 *	  parsers that are built without PostgreSQL's headers too.
 *-------------------------------------------------------------------------
 */
#ifndef PRESENCE_LIMITS_H
#define PRESENCE_LIMITS_H

#define PRESENCE_UUID_LEN		36	/* textual UUID without terminator */
#define PRESENCE_SESSION_ID_MAX 128
#define PRESENCE_USERNAME_MAX	255
#define PRESENCE_ACTIVITY_MAX	256
#define PRESENCE_ACTIVITY_TYPE_MAX 64
#define PRESENCE_EVENT_ID_MAX	128
#define PRESENCE_OPERATION_ID_MAX 255
#define PRESENCE_TARGET_MAX		500
#define PRESENCE_OBJECTIVE_MAX	10000
#define PRESENCE_END_STATUS_MAX 16
#define PRESENCE_ROLE_MAX		15

#endif							/* PRESENCE_LIMITS_H */
