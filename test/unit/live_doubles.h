/*-------------------------------------------------------------------------
 * live_doubles.h
 *	  Test doubles for what src/live_state.c calls outside itself, so the
 *	  state machine runs in a plain process: connections that record what
 *	  they are sent, an activity queue that records rows, a fake clock,
 *	  and the database, shared memory and GUCs as the test sets them.
 *	  See README.md for why they exist only here.
 *-------------------------------------------------------------------------
 */
#ifndef PRESENCE_LIVE_DOUBLES_H
#define PRESENCE_LIVE_DOUBLES_H

/* the PostgreSQL headers before jansson's, as every file of src/ has them */
#include "presence.h"

#include "live_internal.h"

#include "activity.h"
#include "clock.h"

/*
 * A client as the tests see it: the Connection live_state.c works on,
 * and what reached it.  frames: every message sent through
 * connection_send_frame (presence events, broadcasts, session_ended),
 * parsed back from the frame's bytes; replies: every message given to
 * connection_send_json (session_joined, session_removed).
 */
typedef struct TestClient
{
	Connection	conn;			/* first, so a Connection * is a TestClient * */
	json_t	   *frames;			/* array */
	json_t	   *replies;		/* array */
} TestClient;

/* The fake clock (Unix milliseconds); tests move it, nothing else does. */
extern int64 fake_now_ms;
extern void clock_advance(int64 ms);

extern TestClient *client_open(const char *user_id, const char *username);
extern void client_close(TestClient *client);	/* live_connection_closed, then freed */
extern void clients_close_all(void);
extern int	clients_open(void);

/* What reached a client: counts, the i-th frame, and forgetting it all. */
extern int	frame_count(TestClient *client);
extern json_t *frame_at(TestClient *client, int i);
extern int	reply_count(TestClient *client);
extern json_t *reply_at(TestClient *client, int i);
extern void client_forget(TestClient *client);

/* activity_enqueue: each row as {session, user, type, details (object or null), source (serial)} */
extern json_t *activity_rows;
extern int	activity_row_count(const char *activity_type);
extern json_t *activity_row_last(const char *activity_type);

/* db_count_participants: what it answers, and what it was asked */
extern DbResult db_count_result;
extern int	db_count_answer;
extern int	db_count_calls;
extern char db_count_last_user_ids[4096];

/* presence_count and presence_users_publish */
extern uint64 counters[CTR_COUNT];
extern int	published_entries;
extern int	published_removed;

/* Bad frames sent (a header that does not match the payload) are counted here. */
extern int	malformed_frames;

extern void doubles_reset(void);
extern void doubles_free(void);

#endif							/* PRESENCE_LIVE_DOUBLES_H */
