/*-------------------------------------------------------------------------
 * test_live_state.c
 *	  src/live_state.c without a server: joins and leaves aggregated over
 *	  a user's tabs, who receives which event, heartbeat timeout and
 *	  return, automatic away, one frame per pass, timed batching with
 *	  cursor coalescing and the way back, the participant limit, and the
 *	  commands SQL sends.  Single node (no mirror), a fake clock, and the
 *	  doubles of live_doubles.c for everything outside live_state.c.
 *
 * GUCs (live_doubles.c): batch_max 3, batch_interval 50 ms, heartbeat
 * 1000 + 1000 ms, away 2000 ms, max_participants 5.
 *-------------------------------------------------------------------------
 */
#include "live_doubles.h"
#include "unit.h"

#define ALICE "a11c0000-0000-0000-0000-000000000001"
#define BOB "b0b00000-0000-0000-0000-000000000002"
#define CAROL "ca201000-0000-0000-0000-000000000003"

#define T0 INT64CONST(1764526000000)

static void
setup(void)
{
	fake_now_ms = T0;
	presence_batch_max = 3;
	presence_batch_interval_ms = 50;
	presence_heartbeat_interval_ms = 1000;
	presence_heartbeat_timeout_ms = 1000;
	presence_away_threshold_ms = 2000;
	presence_max_participants = 5;
	doubles_reset();
}

/* Every case leaves nothing behind: no connection, no session, no pending event. */
static void
teardown(void)
{
	int			sessions,
				users;

	clients_close_all();
	live_flush(INT64_MAX);		/* as ws_worker.c does at shutdown: whatever is timed goes */
	live_publish();
	live_gauges(&sessions, &users);
	CHECK_EQ_INT(sessions, 0);
	CHECK_EQ_INT(users, 0);
	CHECK_EQ_INT(live_next_deadline(fake_now_ms), INT64_MAX);
	CHECK_EQ_INT(malformed_frames, 0);
}

/* A session_join as requests.c makes it: the message bookkeeping first, then the join. */
static JoinOutcome
join_with(TestClient *client, const char *session_id, const ClientRequest *request)
{
	live_message_received(&client->conn, REQ_SESSION_JOIN);
	return live_join(&client->conn, session_id, "operator", false, request);
}

static JoinOutcome
join(TestClient *client, const char *session_id)
{
	ClientRequest request;

	memset(&request, 0, sizeof(request));
	request.status = -1;
	return join_with(client, session_id, &request);
}

static bool
flush(void)
{
	return live_flush(fake_now_ms);
}

/*
 * The next step comes a batch window later: a case of more than
 * batch_max passes with events would otherwise be timed batching.
 */
static void
later(void)
{
	fake_now_ms += 2 * presence_batch_interval_ms;
}

/* A message that keeps a connection alive without being activity, and one that is activity. */
static void
heartbeat(TestClient *client)
{
	live_message_received(&client->conn, REQ_HEARTBEAT);
	live_heartbeat(&client->conn, NULL, NULL);
}

static void
active(TestClient *client)
{
	live_message_received(&client->conn, REQ_ACTIVITY);
}

static CursorPosition
cursor_at(const char *event_id, int64 position)
{
	CursorPosition cursor;

	memset(&cursor, 0, sizeof(cursor));
	cursor.present = true;
	strlcpy(cursor.event_id, event_id, sizeof(cursor.event_id));
	cursor.position = position;
	return cursor;
}

static void
set_cursor(TestClient *client, const char *session_id, int64 position)
{
	CursorPosition cursor = cursor_at("e1", position);

	live_message_received(&client->conn, REQ_CURSOR_UPDATE);
	CHECK(live_set_cursor(&client->conn, session_id, &cursor));
}

static SessionUser *
user_in(const char *session_id, const char *user_id)
{
	LiveSession *session = live_session_find(session_id);

	return session ? live_user_find(session, user_id) : NULL;
}

static size_t
event_count(json_t *frame)
{
	return json_array_size(json_object_get(frame, "events"));
}

static json_t *
event_at(json_t *frame, size_t i)
{
	return json_array_get(json_object_get(frame, "events"), i);
}

static const char *
field_of(json_t *event, const char *name)
{
	return json_string_value(json_object_get(json_object_get(event, "user"), name));
}

static int64
cursor_position_of(json_t *event)
{
	return json_integer_value(json_object_get(json_object_get(json_object_get(event, "user"), "cursor"),
											  "position"));
}

/* The i-th event of a frame is kind, about user_id. */
#define CHECK_EVENT(frame, i, kind, user_id) \
	do { \
		json_t	   *event_ = event_at((frame), (i)); \
		CHECK(event_ != NULL); \
		CHECK_STR(json_string_value(json_object_get(event_, "kind")), (kind)); \
		CHECK_STR(field_of(event_, "userId"), (user_id)); \
	} while (0)

/* A frame is a presence frame of session_id with n events. */
#define CHECK_PRESENCE(frame, session_id, n) \
	do { \
		json_t	   *frame_ = (frame); \
		CHECK(frame_ != NULL); \
		CHECK_STR(json_string_value(json_object_get(frame_, "type")), "presence"); \
		CHECK_STR(json_string_value(json_object_get(frame_, "sessionId")), (session_id)); \
		CHECK_EQ_INT(event_count(frame_), (n)); \
	} while (0)

/* The user_id entry of a session_joined reply's users, or NULL. */
static json_t *
joined_user(json_t *reply, const char *user_id)
{
	size_t		i;
	json_t	   *user;

	json_array_foreach(json_object_get(reply, "users"), i, user)
		if (strcmp(json_string_value(json_object_get(user, "userId")), user_id) == 0)
		return user;
	return NULL;
}

/* Activity rows of one type about one user. */
static int
rows_about(const char *activity_type, const char *user_id)
{
	size_t		i;
	json_t	   *row;
	int			count = 0;

	json_array_foreach(activity_rows, i, row)
		if (strcmp(json_string_value(json_object_get(row, "type")), activity_type) == 0 &&
			strcmp(json_string_value(json_object_get(row, "user")), user_id) == 0)
		count++;
	return count;
}

static const char *
details_string(json_t *row, const char *name)
{
	return json_string_value(json_object_get(json_object_get(row, "details"), name));
}

static json_t *
details_value(json_t *row, const char *name)
{
	return json_object_get(json_object_get(row, "details"), name);
}

static void
two_users_join(void)
{
	TestClient *a = client_open(ALICE, "alice");
	TestClient *b = client_open(BOB, "bob");
	json_t	   *reply;
	const char *role = NULL;
	bool		is_owner = true;
	int			sessions,
				users;

	CHECK_EQ_INT(join(a, "s1"), LIVE_JOIN_OK);
	REQUIRE(reply_count(a) == 1);
	reply = reply_at(a, 0);
	CHECK_STR(json_string_value(json_object_get(reply, "type")), "session_joined");
	CHECK_STR(json_string_value(json_object_get(reply, "sessionId")), "s1");
	CHECK_STR(json_string_value(json_object_get(reply, "role")), "operator");
	CHECK(json_object_get(reply, "ref") == NULL);
	CHECK_EQ_INT(json_array_size(json_object_get(reply, "users")), 1);
	CHECK(joined_user(reply, ALICE) != NULL);
	flush();
	CHECK_EQ_INT(frame_count(a), 0);	/* its own join is not news to it */

	CHECK_EQ_INT(join(b, "s1"), LIVE_JOIN_OK);
	REQUIRE(reply_count(b) == 1);
	reply = reply_at(b, 0);
	CHECK_STR(json_string_value(json_object_get(reply, "type")), "session_joined");
	CHECK_EQ_INT(json_array_size(json_object_get(reply, "users")), 2);
	CHECK(joined_user(reply, ALICE) != NULL);
	CHECK(joined_user(reply, BOB) != NULL);
	CHECK_STR(json_string_value(json_object_get(joined_user(reply, ALICE), "status")), "online");
	CHECK_STR(json_string_value(json_object_get(joined_user(reply, ALICE), "username")), "alice");
	CHECK_EQ_INT(frame_count(a), 0);	/* nothing before the end of the pass */

	CHECK(flush());
	CHECK_EQ_INT(frame_count(a), 1);
	CHECK_PRESENCE(frame_at(a, 0), "s1", 1);
	CHECK_EVENT(frame_at(a, 0), 0, "join", BOB);
	CHECK_STR(field_of(event_at(frame_at(a, 0), 0), "username"), "bob");
	CHECK_STR(field_of(event_at(frame_at(a, 0), 0), "status"), "online");
	CHECK_STR(field_of(event_at(frame_at(a, 0), 0), "role"), "operator");
	CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(event_at(frame_at(a, 0), 0), "user"), "lastSeen")),
				 T0);
	CHECK_EQ_INT(frame_count(b), 0);
	CHECK_EQ_INT(reply_count(a), 1);
	CHECK(!flush());			/* nothing left */

	CHECK_EQ_INT(activity_row_count("user_joined"), 2);
	CHECK_STR(json_string_value(json_object_get(activity_row_last("user_joined"), "user")), BOB);
	CHECK_EQ_INT(json_integer_value(json_object_get(activity_row_last("user_joined"), "source")), b->conn.serial);
	CHECK_STR(details_string(activity_row_last("user_joined"), "worker"), "test-node/0");
	CHECK(details_value(activity_row_last("user_joined"), "status") == NULL);

	CHECK(live_is_joined(&a->conn, "s1", &role, &is_owner));
	CHECK_STR(role, "operator");
	CHECK(!is_owner);
	live_gauges(&sessions, &users);
	CHECK_EQ_INT(sessions, 1);
	CHECK_EQ_INT(users, 2);
}

static void
join_carries_status_activity_cursor(void)
{
	TestClient *a = client_open(ALICE, "alice");
	TestClient *b = client_open(BOB, "bob");
	ClientRequest request;
	json_t	   *event;

	join(a, "s1");
	flush();
	memset(&request, 0, sizeof(request));
	request.status = STATUS_AWAY;
	request.activity = "reading";
	request.cursor = cursor_at("e7", 42);
	request.ref = json_string("j1");
	CHECK_EQ_INT(join_with(b, "s1", &request), LIVE_JOIN_OK);
	REQUIRE(reply_count(b) == 1);
	CHECK_STR(json_string_value(json_object_get(reply_at(b, 0), "ref")), "j1");
	CHECK_STR(json_string_value(json_object_get(joined_user(reply_at(b, 0), BOB), "status")), "away");
	flush();
	REQUIRE(frame_count(a) == 1);
	event = event_at(frame_at(a, 0), 0);
	CHECK_EVENT(frame_at(a, 0), 0, "join", BOB);
	CHECK_STR(field_of(event, "status"), "away");
	CHECK_STR(field_of(event, "activity"), "reading");
	CHECK_EQ_INT(cursor_position_of(event), 42);

	/* joining again answers session_joined again, and changes nothing */
	CHECK_EQ_INT(join_with(b, "s1", &request), LIVE_JOIN_OK);
	CHECK_EQ_INT(reply_count(b), 2);
	CHECK_STR(json_string_value(json_object_get(reply_at(b, 1), "type")), "session_joined");
	flush();
	CHECK_EQ_INT(frame_count(a), 1);
	CHECK_EQ_INT(activity_row_count("user_joined"), 2);
	/* the log has the status the join set */
	CHECK_STR(details_string(activity_row_last("user_joined"), "status"), "away");
	CHECK_EQ_INT(activity_row_count("status_changed"), 0);
	json_decref(request.ref);
}

static void
multi_tab_one_join_one_leave(void)
{
	TestClient *b = client_open(BOB, "bob");
	TestClient *a1 = client_open(ALICE, "alice");
	TestClient *a2 = client_open(ALICE, "alice");
	json_t	   *last;

	join(b, "s1");
	flush();
	later();
	join(a1, "s1");
	flush();
	REQUIRE(frame_count(b) == 1);
	CHECK_PRESENCE(frame_at(b, 0), "s1", 1);
	CHECK_EVENT(frame_at(b, 0), 0, "join", ALICE);

	/* the second tab: no news for anyone, and one Alice in its session_joined */
	later();
	join(a2, "s1");
	flush();
	CHECK_EQ_INT(frame_count(b), 1);
	CHECK_EQ_INT(frame_count(a1), 0);
	CHECK_EQ_INT(frame_count(a2), 0);
	REQUIRE(reply_count(a2) == 1);
	CHECK_EQ_INT(json_array_size(json_object_get(reply_at(a2, 0), "users")), 2);
	CHECK_EQ_INT(user_in("s1", ALICE)->connections, 2);

	/* what one tab causes, the other tab sees: exclusion is per connection */
	later();
	set_cursor(a1, "s1", 9);
	flush();
	CHECK_EQ_INT(frame_count(a1), 0);
	REQUIRE(frame_count(a2) == 1);
	CHECK_EVENT(frame_at(a2, 0), 0, "cursor", ALICE);
	REQUIRE(frame_count(b) == 2);
	CHECK_EVENT(frame_at(b, 1), 0, "cursor", ALICE);

	/* closing one tab: Alice is still there */
	later();
	client_close(a1);
	flush();
	CHECK_EQ_INT(frame_count(b), 2);
	CHECK_EQ_INT(frame_count(a2), 1);
	CHECK_EQ_INT(activity_row_count("user_left"), 0);
	CHECK_EQ_INT(user_in("s1", ALICE)->connections, 1);

	/* closing the last: one leave, shown offline */
	later();
	client_close(a2);
	flush();
	REQUIRE(frame_count(b) == 3);
	CHECK_PRESENCE(frame_at(b, 2), "s1", 1);
	CHECK_EVENT(frame_at(b, 2), 0, "leave", ALICE);
	CHECK_STR(field_of(event_at(frame_at(b, 2), 0), "status"), "offline");
	CHECK(user_in("s1", ALICE) == NULL);

	CHECK_EQ_INT(rows_about("user_joined", ALICE), 1);	/* one per user, not per tab */
	CHECK_EQ_INT(rows_about("user_left", ALICE), 1);
	CHECK_EQ_INT(activity_row_count("user_joined"), 2);	/* Bob's and Alice's */
	CHECK_EQ_INT(activity_row_count("user_left"), 1);
	last = activity_row_last("user_left");
	CHECK_STR(json_string_value(json_object_get(last, "user")), ALICE);
	CHECK_STR(json_string_value(json_object_get(last, "session")), "s1");
}

static void
second_tab_joining_with_status_is_an_update(void)
{
	TestClient *b = client_open(BOB, "bob");
	TestClient *a1 = client_open(ALICE, "alice");
	TestClient *a2 = client_open(ALICE, "alice");
	ClientRequest request;

	join(b, "s1");
	join(a1, "s1");
	flush();
	client_forget(b);
	client_forget(a1);
	memset(&request, 0, sizeof(request));
	request.status = STATUS_AWAY;
	join_with(a2, "s1", &request);
	flush();
	REQUIRE(frame_count(b) == 1);
	CHECK_EVENT(frame_at(b, 0), 0, "update", ALICE);
	CHECK_STR(field_of(event_at(frame_at(b, 0), 0), "status"), "away");
	CHECK_EQ_INT(frame_count(a1), 1);
	CHECK_EQ_INT(frame_count(a2), 0);
	CHECK_EQ_INT(activity_row_count("user_joined"), 2);
	/* and the log has it, as a status change that no one chose automatically */
	REQUIRE(activity_row_count("status_changed") == 1);
	CHECK_STR(details_string(activity_row_last("status_changed"), "status"), "away");
	CHECK(json_is_false(details_value(activity_row_last("status_changed"), "automatic")));
}

static void
leave_and_session_freed(void)
{
	TestClient *a = client_open(ALICE, "alice");
	TestClient *b = client_open(BOB, "bob");
	int			sessions,
				users;

	join(a, "s1");
	join(b, "s1");
	flush();
	client_forget(a);
	client_forget(b);
	CHECK(live_leave(&a->conn, "s1"));
	CHECK(!live_is_joined(&a->conn, "s1", NULL, NULL));
	CHECK(dlist_is_empty(&a->conn.memberships));
	CHECK(!live_leave(&a->conn, "s1"));
	flush();
	REQUIRE(frame_count(b) == 1);
	CHECK_EVENT(frame_at(b, 0), 0, "leave", ALICE);
	CHECK_EQ_INT(frame_count(a), 0);	/* gone from the session: its own leave is not sent to it */
	CHECK_EQ_INT(activity_row_count("user_left"), 1);

	CHECK(live_leave(&b->conn, "s1"));
	flush();
	live_gauges(&sessions, &users);
	CHECK_EQ_INT(sessions, 0);
	CHECK(live_session_find("s1") == NULL);
}

static void
not_joined_is_refused(void)
{
	TestClient *a = client_open(ALICE, "alice");
	CursorPosition cursor = cursor_at("e1", 1);
	int			sessions,
				users;

	CHECK(!live_set_status(&a->conn, "s1", STATUS_AWAY, NULL));
	CHECK(!live_set_cursor(&a->conn, "s1", &cursor));
	CHECK(!live_leave(&a->conn, "s1"));
	CHECK(!live_is_joined(&a->conn, "s1", NULL, NULL));
	live_heartbeat(&a->conn, "s1", &cursor);
	live_message_received(&a->conn, REQ_CURSOR_UPDATE);
	CHECK(!flush());
	live_gauges(&sessions, &users);
	CHECK_EQ_INT(sessions, 0);	/* none made by asking */

	/* joined to one session is not joined to another */
	join(a, "s1");
	CHECK(!live_set_status(&a->conn, "s2", STATUS_AWAY, NULL));
	CHECK(!live_set_cursor(&a->conn, "s2", &cursor));
	CHECK(!live_leave(&a->conn, "s2"));
	CHECK(live_session_find("s2") == NULL);
	CHECK_EQ_INT(json_array_size(activity_rows), 1);	/* only the join's */
}

static void
heartbeat_timeout_and_resume(void)
{
	TestClient *a = client_open(ALICE, "alice");
	TestClient *b = client_open(BOB, "bob");
	json_t	   *row;
	int			sessions,
				users;

	join(a, "s1");
	join(b, "s1");
	flush();
	client_forget(a);
	client_forget(b);

	/* Bob talks, Alice is silent; interval + timeout is 2000 ms */
	fake_now_ms = T0 + 1500;
	active(b);
	fake_now_ms = T0 + 1999;
	live_sweep(fake_now_ms);
	flush();
	CHECK_EQ_INT(frame_count(b), 0);
	CHECK(!a->conn.silent);

	fake_now_ms = T0 + 2000;
	live_sweep(fake_now_ms);
	CHECK(a->conn.silent);
	CHECK_EQ_INT(counters[CTR_HEARTBEATS_MISSED], 1);
	flush();
	REQUIRE(frame_count(b) == 1);
	CHECK_PRESENCE(frame_at(b, 0), "s1", 1);
	CHECK_EVENT(frame_at(b, 0), 0, "timeout", ALICE);
	CHECK_STR(field_of(event_at(frame_at(b, 0), 0), "status"), "offline");
	CHECK_EQ_INT(activity_row_count("user_timeout"), 1);
	row = activity_row_last("user_timeout");
	CHECK_STR(json_string_value(json_object_get(row, "user")), ALICE);
	CHECK_EQ_INT(json_integer_value(details_value(row, "silent_ms")), 2000);
	CHECK_EQ_INT(json_integer_value(json_object_get(row, "source")), a->conn.serial);
	live_gauges(&sessions, &users);
	CHECK_EQ_INT(users, 1);
	CHECK(live_is_joined(&a->conn, "s1", NULL, NULL));	/* silent, still joined */

	/* a silent connection times out once */
	fake_now_ms = T0 + 2600;
	active(b);
	live_sweep(fake_now_ms);
	flush();
	CHECK_EQ_INT(counters[CTR_HEARTBEATS_MISSED], 1);
	CHECK_EQ_INT(frame_count(b), 1);

	/* any message brings Alice back with a join */
	fake_now_ms = T0 + 3000;
	live_message_received(&a->conn, REQ_HEARTBEAT);
	CHECK(!a->conn.silent);
	flush();
	REQUIRE(frame_count(b) == 2);
	CHECK_EVENT(frame_at(b, 1), 0, "join", ALICE);
	CHECK_STR(field_of(event_at(frame_at(b, 1), 0), "status"), "online");
	row = activity_row_last("user_joined");
	CHECK_STR(json_string_value(json_object_get(row, "user")), ALICE);
	CHECK(json_is_true(details_value(row, "resumed")));
	CHECK_EQ_INT(activity_row_count("user_joined"), 3);
	live_gauges(&sessions, &users);
	CHECK_EQ_INT(users, 2);
}

static void
timeout_only_when_last_tab_is_silent(void)
{
	TestClient *b = client_open(BOB, "bob");
	TestClient *a1 = client_open(ALICE, "alice");
	TestClient *a2 = client_open(ALICE, "alice");

	join(b, "s1");
	join(a1, "s1");
	join(a2, "s1");
	flush();
	client_forget(b);

	fake_now_ms = T0 + 1000;
	active(a2);					/* activity, so that Alice is not away at 2000 */
	active(b);
	fake_now_ms = T0 + 2000;
	live_sweep(fake_now_ms);		/* a1 is silent, a2 is not */
	flush();
	CHECK(a1->conn.silent);
	CHECK(!a2->conn.silent);
	CHECK_EQ_INT(counters[CTR_HEARTBEATS_MISSED], 1);
	CHECK_EQ_INT(frame_count(b), 0);
	CHECK_EQ_INT(activity_row_count("user_timeout"), 0);

	fake_now_ms = T0 + 2500;
	active(b);
	fake_now_ms = T0 + 3000;
	live_sweep(fake_now_ms);		/* now a2 too */
	flush();
	CHECK_EQ_INT(counters[CTR_HEARTBEATS_MISSED], 2);
	REQUIRE(frame_count(b) == 1);
	CHECK_EVENT(frame_at(b, 0), 0, "timeout", ALICE);
	CHECK_EQ_INT(activity_row_count("user_timeout"), 1);
	CHECK_EQ_INT(json_integer_value(details_value(activity_row_last("user_timeout"), "silent_ms")), 2000);

	/* closing a silent tab is no second departure */
	client_close(a1);
	client_close(a2);
	flush();
	CHECK_EQ_INT(frame_count(b), 1);
	CHECK_EQ_INT(activity_row_count("user_left"), 0);
}

static void
away_after_threshold_despite_heartbeats(void)
{
	TestClient *a = client_open(ALICE, "alice");
	TestClient *b = client_open(BOB, "bob");
	json_t	   *row;
	json_t	   *event;

	join(a, "s1");
	join(b, "s1");
	flush();
	client_forget(a);
	client_forget(b);

	/* heartbeats keep Alice's lastSeen, not her activity; Bob is active */
	fake_now_ms = T0 + 1000;
	heartbeat(a);
	active(b);
	fake_now_ms = T0 + 1900;
	heartbeat(a);
	CHECK_EQ_INT(user_in("s1", ALICE)->last_seen_ms, T0 + 1900);
	CHECK_EQ_INT(user_in("s1", ALICE)->last_activity_ms, T0);
	fake_now_ms = T0 + 1999;
	live_sweep(fake_now_ms);
	flush();
	CHECK_EQ_INT(frame_count(b), 0);

	fake_now_ms = T0 + 2000;
	live_sweep(fake_now_ms);
	flush();
	REQUIRE(frame_count(b) == 1);
	CHECK_PRESENCE(frame_at(b, 0), "s1", 1);
	event = event_at(frame_at(b, 0), 0);
	CHECK_EVENT(frame_at(b, 0), 0, "update", ALICE);
	CHECK_STR(field_of(event, "status"), "away");
	CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(event, "user"), "lastSeen")), T0 + 1900);
	/* a server event: Alice is told too */
	REQUIRE(frame_count(a) == 1);
	CHECK_EVENT(frame_at(a, 0), 0, "update", ALICE);
	row = activity_row_last("status_changed");
	REQUIRE(row != NULL);
	CHECK_STR(json_string_value(json_object_get(row, "user")), ALICE);
	CHECK_STR(details_string(row, "status"), "away");
	CHECK(json_is_true(details_value(row, "automatic")));
	CHECK_EQ_INT(json_integer_value(json_object_get(row, "source")), 0);
	CHECK_EQ_INT(activity_row_count("status_changed"), 1);	/* Bob stays online */

	/* once away, the sweep leaves her be; heartbeats and her own status request do not count */
	fake_now_ms = T0 + 2100;
	live_sweep(fake_now_ms);
	heartbeat(a);
	live_message_received(&a->conn, REQ_PRESENCE_UPDATE);
	flush();
	CHECK_EQ_INT(frame_count(b), 1);
	CHECK_EQ_INT(activity_row_count("status_changed"), 1);

	/* any other message is activity: online again */
	fake_now_ms = T0 + 2200;
	live_message_received(&a->conn, REQ_CURSOR_UPDATE);
	flush();
	REQUIRE(frame_count(b) == 2);
	CHECK_EVENT(frame_at(b, 1), 0, "update", ALICE);
	CHECK_STR(field_of(event_at(frame_at(b, 1), 0), "status"), "online");
	CHECK_EQ_INT(frame_count(a), 1);	/* caused by Alice's connection this time */
	row = activity_row_last("status_changed");
	CHECK_STR(details_string(row, "status"), "online");
	CHECK(json_is_true(details_value(row, "automatic")));
	CHECK_EQ_INT(json_integer_value(json_object_get(row, "source")), a->conn.serial);
	CHECK_EQ_INT(activity_row_count("status_changed"), 2);
}

static void
away_set_by_the_user_stays(void)
{
	TestClient *a = client_open(ALICE, "alice");
	TestClient *b = client_open(BOB, "bob");
	json_t	   *row;

	join(a, "s1");
	join(b, "s1");
	flush();
	client_forget(b);

	CHECK(live_set_status(&a->conn, "s1", STATUS_AWAY, "lunch"));
	flush();
	REQUIRE(frame_count(b) == 1);
	CHECK_EVENT(frame_at(b, 0), 0, "update", ALICE);
	CHECK_STR(field_of(event_at(frame_at(b, 0), 0), "status"), "away");
	CHECK_STR(field_of(event_at(frame_at(b, 0), 0), "activity"), "lunch");
	row = activity_row_last("status_changed");
	REQUIRE(row != NULL);
	CHECK(json_is_false(details_value(row, "automatic")));
	CHECK_STR(details_string(row, "status"), "away");

	/* activity does not undo an away the user chose */
	live_message_received(&a->conn, REQ_CURSOR_UPDATE);
	flush();
	CHECK_EQ_INT(frame_count(b), 1);
	fake_now_ms = T0 + 1500;
	heartbeat(a);
	active(b);
	fake_now_ms = T0 + 2500;
	live_sweep(fake_now_ms);
	flush();
	CHECK_EQ_INT(frame_count(b), 1);
	CHECK_EQ_INT(activity_row_count("status_changed"), 1);

	/* the same status again is an update, but no row */
	CHECK(live_set_status(&a->conn, "s1", STATUS_AWAY, NULL));
	flush();
	CHECK_EQ_INT(frame_count(b), 2);
	CHECK_STR(field_of(event_at(frame_at(b, 1), 0), "activity"), "lunch");	/* kept */
	CHECK_EQ_INT(activity_row_count("status_changed"), 1);
	CHECK(live_set_status(&a->conn, "s1", STATUS_ONLINE, NULL));
	CHECK_EQ_INT(activity_row_count("status_changed"), 2);
}

static void
heartbeat_cursor_is_a_cursor_move(void)
{
	TestClient *a = client_open(ALICE, "alice");
	TestClient *b = client_open(BOB, "bob");
	CursorPosition c3 = cursor_at("e1", 3);
	CursorPosition c4 = cursor_at("e1", 4);
	CursorPosition other_event = cursor_at("e2", 4);

	join(a, "s1");
	join(b, "s1");
	flush();
	client_forget(a);
	client_forget(b);

	fake_now_ms = T0 + 10;
	live_heartbeat(&a->conn, "s1", &c3);
	flush();
	REQUIRE(frame_count(b) == 1);
	CHECK_EVENT(frame_at(b, 0), 0, "cursor", ALICE);
	CHECK_EQ_INT(cursor_position_of(event_at(frame_at(b, 0), 0)), 3);
	CHECK_EQ_INT(user_in("s1", ALICE)->last_seen_ms, T0 + 10);

	live_heartbeat(&a->conn, "s1", &c3);	/* unchanged: no event */
	live_heartbeat(&a->conn, NULL, NULL);
	flush();
	CHECK_EQ_INT(frame_count(b), 1);
	live_heartbeat(&a->conn, "s2", &c4);	/* another session: not this one */
	flush();
	CHECK_EQ_INT(frame_count(b), 1);
	live_heartbeat(&a->conn, NULL, &c4);	/* every session of the connection */
	live_heartbeat(&a->conn, "s1", &other_event);
	flush();
	REQUIRE(frame_count(b) == 2);
	CHECK_PRESENCE(frame_at(b, 1), "s1", 2);
	CHECK_EQ_INT(frame_count(a), 0);
	CHECK_EQ_INT(activity_row_count("cursor"), 0);	/* cursors are not logged */
	CHECK_EQ_INT(json_array_size(activity_rows), 2);
}

static void
one_frame_per_pass(void)
{
	TestClient *a = client_open(ALICE, "alice");
	TestClient *b = client_open(BOB, "bob");
	TestClient *c = client_open(CAROL, "carol");

	join(a, "s1");
	join(b, "s1");
	join(c, "s1");
	flush();
	client_forget(a);
	client_forget(b);
	client_forget(c);

	/* three cursor moves of one user in a pass: one frame, three events, in order */
	fake_now_ms += 100;
	set_cursor(a, "s1", 1);
	set_cursor(a, "s1", 2);
	set_cursor(a, "s1", 3);
	CHECK_EQ_INT(live_next_deadline(fake_now_ms), fake_now_ms);	/* due in this pass */
	CHECK(flush());
	REQUIRE(frame_count(b) == 1);
	CHECK_PRESENCE(frame_at(b, 0), "s1", 3);
	for (int i = 0; i < 3; i++)
	{
		CHECK_EVENT(frame_at(b, 0), i, "cursor", ALICE);
		CHECK_EQ_INT(cursor_position_of(event_at(frame_at(b, 0), i)), i + 1);
	}
	CHECK_EQ_INT(frame_count(c), 1);
	CHECK_EQ_INT(frame_count(a), 0);
	CHECK_EQ_INT(live_next_deadline(fake_now_ms), INT64_MAX);

	/* two users in one pass: each sees the other's, the third sees both in one frame */
	client_forget(b);
	client_forget(c);
	set_cursor(a, "s1", 4);
	set_cursor(b, "s1", 5);
	flush();
	REQUIRE(frame_count(c) == 1);
	CHECK_PRESENCE(frame_at(c, 0), "s1", 2);
	CHECK_EVENT(frame_at(c, 0), 0, "cursor", ALICE);
	CHECK_EVENT(frame_at(c, 0), 1, "cursor", BOB);
	REQUIRE(frame_count(a) == 1);
	CHECK_PRESENCE(frame_at(a, 0), "s1", 1);
	CHECK_EVENT(frame_at(a, 0), 0, "cursor", BOB);
	REQUIRE(frame_count(b) == 1);
	CHECK_PRESENCE(frame_at(b, 0), "s1", 1);
	CHECK_EVENT(frame_at(b, 0), 0, "cursor", ALICE);
}

static void
sessions_are_batched_apart(void)
{
	TestClient *a = client_open(ALICE, "alice");
	TestClient *b = client_open(BOB, "bob");

	join(a, "s1");
	join(a, "s2");
	join(b, "s1");
	join(b, "s2");
	flush();
	client_forget(a);
	client_forget(b);
	set_cursor(a, "s1", 1);
	set_cursor(a, "s2", 2);
	flush();
	REQUIRE(frame_count(b) == 2);	/* one frame per session */
	CHECK_EQ_INT(event_count(frame_at(b, 0)), 1);
	CHECK_EQ_INT(event_count(frame_at(b, 1)), 1);
	CHECK(strcmp(json_string_value(json_object_get(frame_at(b, 0), "sessionId")),
				 json_string_value(json_object_get(frame_at(b, 1), "sessionId"))) != 0);
}

static void
timed_batching_coalesces_and_returns(void)
{
	TestClient *a = client_open(ALICE, "alice");
	TestClient *b = client_open(BOB, "bob");
	TestClient *c = client_open(CAROL, "carol");
	int64		t;
	json_t	   *frame;

	join(a, "s1");
	join(b, "s1");
	join(c, "s1");
	flush();
	client_forget(a);
	client_forget(b);
	client_forget(c);

	/* batch_max (3) passes with events in a window are delivered at once */
	t = fake_now_ms = T0 + 1000;
	for (int i = 1; i <= 3; i++)
	{
		set_cursor(a, "s1", i);
		CHECK_EQ_INT(live_next_deadline(fake_now_ms), fake_now_ms);
		flush();
		CHECK_EQ_INT(frame_count(b), i);
		fake_now_ms++;
	}
	CHECK(!live_session_find("s1")->timed);
	CHECK_EQ_INT(frame_count(c), 3);
	CHECK_EQ_INT(frame_count(a), 0);
	client_forget(c);

	/* the fourth makes the session timed: held until the window ends */
	set_cursor(a, "s1", 4);
	CHECK(!flush());
	CHECK_EQ_INT(frame_count(b), 3);
	CHECK(live_session_find("s1")->timed);
	CHECK_EQ_INT(live_next_deadline(fake_now_ms), t + 50);

	/* meanwhile: one user's cursor moves coalesce (latest wins), others' events stay */
	fake_now_ms = t + 4;
	set_cursor(a, "s1", 5);
	CHECK(live_set_status(&c->conn, "s1", STATUS_AWAY, NULL));
	CHECK(live_set_status(&c->conn, "s1", STATUS_ONLINE, NULL));
	set_cursor(c, "s1", 100);
	flush();
	fake_now_ms = t + 5;
	set_cursor(a, "s1", 6);
	flush();
	fake_now_ms = t + 49;
	CHECK(!flush());
	CHECK_EQ_INT(live_next_deadline(fake_now_ms), t + 50);
	CHECK_EQ_INT(frame_count(b), 3);
	CHECK_EQ_INT(frame_count(c), 0);

	/* the window is over: one frame */
	fake_now_ms = t + 50;
	CHECK(flush());
	REQUIRE(frame_count(b) == 4);
	frame = frame_at(b, 3);
	CHECK_PRESENCE(frame, "s1", 4);
	/* the latest cursor of a user comes after everything before it */
	CHECK_EVENT(frame, 0, "update", CAROL);
	CHECK_STR(field_of(event_at(frame, 0), "status"), "away");
	CHECK_EVENT(frame, 1, "update", CAROL);
	CHECK_STR(field_of(event_at(frame, 1), "status"), "online");
	CHECK_EVENT(frame, 2, "cursor", CAROL);
	CHECK_EQ_INT(cursor_position_of(event_at(frame, 2)), 100);
	CHECK_EVENT(frame, 3, "cursor", ALICE);
	CHECK_EQ_INT(cursor_position_of(event_at(frame, 3)), 6);
	/* each sender still misses only its own */
	REQUIRE(frame_count(a) == 1);
	CHECK_PRESENCE(frame_at(a, 0), "s1", 3);
	REQUIRE(frame_count(c) == 1);
	CHECK_PRESENCE(frame_at(c, 0), "s1", 1);
	CHECK_EQ_INT(cursor_position_of(event_at(frame_at(c, 0), 0)), 6);
	CHECK_EQ_INT(live_next_deadline(fake_now_ms), INT64_MAX);

	/* still timed in the next window: an event waits for its end */
	fake_now_ms = t + 60;
	set_cursor(a, "s1", 7);
	CHECK(!flush());
	CHECK_EQ_INT(live_next_deadline(fake_now_ms), t + 100);
	CHECK_EQ_INT(frame_count(b), 4);
	/* that window was quiet (one pass): delivered at its end, and the session is immediate again */
	fake_now_ms = t + 100;
	CHECK(flush());
	REQUIRE(frame_count(b) == 5);
	CHECK_EQ_INT(cursor_position_of(event_at(frame_at(b, 4), 0)), 7);
	CHECK(!live_session_find("s1")->timed);
	fake_now_ms = t + 101;
	set_cursor(a, "s1", 8);
	set_cursor(a, "s1", 9);		/* immediate: not coalesced */
	CHECK_EQ_INT(live_next_deadline(fake_now_ms), fake_now_ms);
	CHECK(flush());
	REQUIRE(frame_count(b) == 6);
	CHECK_PRESENCE(frame_at(b, 5), "s1", 2);
}

static void
timed_batching_ends_after_quiet_interval(void)
{
	TestClient *a = client_open(ALICE, "alice");
	TestClient *b = client_open(BOB, "bob");
	int64		t;

	join(a, "s1");
	join(b, "s1");
	flush();
	client_forget(b);
	t = fake_now_ms = T0 + 1000;
	for (int i = 1; i <= 4; i++)
	{
		set_cursor(a, "s1", i);
		flush();
		fake_now_ms++;
	}
	CHECK(live_session_find("s1")->timed);
	CHECK_EQ_INT(frame_count(b), 3);
	fake_now_ms = t + 50;
	flush();
	CHECK_EQ_INT(frame_count(b), 4);

	/* nothing for more than an interval: the next event goes at once */
	fake_now_ms = t + 200;
	set_cursor(a, "s1", 10);
	CHECK(!live_session_find("s1")->timed);
	CHECK_EQ_INT(live_next_deadline(fake_now_ms), fake_now_ms);
	flush();
	REQUIRE(frame_count(b) == 5);
	CHECK_EQ_INT(cursor_position_of(event_at(frame_at(b, 4), 0)), 10);
}

static void
shutdown_flush_delivers_timed_batch(void)
{
	TestClient *a = client_open(ALICE, "alice");
	TestClient *b = client_open(BOB, "bob");

	join(a, "s1");
	join(b, "s1");
	flush();
	client_forget(b);
	fake_now_ms = T0 + 1000;
	for (int i = 1; i <= 4; i++)
	{
		set_cursor(a, "s1", i);
		flush();
		fake_now_ms++;
	}
	CHECK(live_session_find("s1")->timed);
	CHECK_EQ_INT(frame_count(b), 3);
	/* ws_worker.c at shutdown: no timed batch is left behind (and no overflow) */
	CHECK(live_flush(INT64_MAX));
	REQUIRE(frame_count(b) == 4);
	CHECK_EQ_INT(cursor_position_of(event_at(frame_at(b, 3), 0)), 4);
	CHECK_EQ_INT(live_next_deadline(fake_now_ms), INT64_MAX);
}

/* user N of the participant-limit tests */
static void
nth_user(int n, char *user_id)
{
	snprintf(user_id, PRESENCE_UUID_LEN + 1, "00000000-0000-0000-0000-%012d", n);
}

static void
session_full(void)
{
	TestClient *users[8];
	char		user_id[PRESENCE_UUID_LEN + 1];
	TestClient *second_tab;
	int			sessions,
				present;

	for (int i = 0; i < 5; i++)
	{
		nth_user(i + 1, user_id);
		users[i] = client_open(user_id, "user");
		CHECK_EQ_INT(join(users[i], "s1"), LIVE_JOIN_OK);
	}
	flush();
	for (int i = 0; i < 5; i++)
		client_forget(users[i]);
	CHECK_EQ_INT(db_count_calls, 0);	/* below the limit the database is not asked */

	/* the database says the five are all participants: full */
	nth_user(6, user_id);
	users[5] = client_open(user_id, "user");
	db_count_answer = 5;
	CHECK_EQ_INT(join(users[5], "s1"), LIVE_JOIN_FULL);
	CHECK_EQ_INT(db_count_calls, 1);
	CHECK_EQ_INT(strlen(db_count_last_user_ids), 5 * PRESENCE_UUID_LEN + 4);
	nth_user(1, user_id);
	CHECK(strncmp(db_count_last_user_ids, user_id, PRESENCE_UUID_LEN) == 0);
	CHECK(db_count_last_user_ids[PRESENCE_UUID_LEN] == ',');
	CHECK_EQ_INT(reply_count(users[5]), 0);
	CHECK(!live_is_joined(&users[5]->conn, "s1", NULL, NULL));
	flush();
	for (int i = 0; i < 5; i++)
		CHECK_EQ_INT(frame_count(users[i]), 0);
	CHECK_EQ_INT(activity_row_count("user_joined"), 5);
	live_gauges(&sessions, &present);
	CHECK_EQ_INT(present, 5);

	/* a present user's second tab is no new participant */
	nth_user(1, user_id);
	second_tab = client_open(user_id, "user");
	CHECK_EQ_INT(join(second_tab, "s1"), LIVE_JOIN_OK);
	CHECK_EQ_INT(db_count_calls, 1);

	/* the database counts only current participants: one of the five was removed */
	db_count_answer = 4;
	CHECK_EQ_INT(join(users[5], "s1"), LIVE_JOIN_OK);
	CHECK_EQ_INT(db_count_calls, 2);
	live_gauges(&sessions, &present);
	CHECK_EQ_INT(present, 6);

	/* no answer from the database: this worker's own live users count (6 >= 5) */
	nth_user(7, user_id);
	users[6] = client_open(user_id, "user");
	db_count_result = DB_FAILED;
	CHECK_EQ_INT(join(users[6], "s1"), LIVE_JOIN_FULL);
	CHECK_EQ_INT(db_count_calls, 3);
	CHECK(!live_is_joined(&users[6]->conn, "s1", NULL, NULL));
}

static void
session_ended_command(void)
{
	TestClient *a = client_open(ALICE, "alice");
	TestClient *b = client_open(BOB, "bob");
	TestClient *c = client_open(CAROL, "carol");
	json_t	   *status = json_string("failed");
	int			sessions,
				users;

	join(a, "s1");
	join(b, "s1");
	join(c, "s2");
	set_cursor(a, "s1", 1);		/* pending events are dropped with the session */
	live_apply_command(CMD_SESSION_ENDED, "s1", NULL, status);
	json_decref(status);
	REQUIRE(frame_count(a) == 1);
	CHECK_STR(json_string_value(json_object_get(frame_at(a, 0), "type")), "session_ended");
	CHECK_STR(json_string_value(json_object_get(frame_at(a, 0), "sessionId")), "s1");
	CHECK_STR(json_string_value(json_object_get(frame_at(a, 0), "status")), "failed");
	REQUIRE(frame_count(b) == 1);
	CHECK_EQ_INT(frame_count(c), 0);
	CHECK(!live_is_joined(&a->conn, "s1", NULL, NULL));
	CHECK(!live_is_joined(&b->conn, "s1", NULL, NULL));
	CHECK(live_is_joined(&c->conn, "s2", NULL, NULL));
	flush();
	CHECK_EQ_INT(frame_count(a), 1);	/* no leave events after the end */
	CHECK_EQ_INT(frame_count(b), 1);
	CHECK_EQ_INT(activity_row_count("user_left"), 0);
	live_gauges(&sessions, &users);
	CHECK_EQ_INT(sessions, 1);
	CHECK_EQ_INT(users, 1);

	/* without a status text: completed */
	live_apply_command(CMD_SESSION_ENDED, "s2", NULL, NULL);
	REQUIRE(frame_count(c) == 1);
	CHECK_STR(json_string_value(json_object_get(frame_at(c, 0), "status")), "completed");
	live_apply_command(CMD_SESSION_ENDED, "nobody-here", NULL, NULL);	/* harmless */
}

static void
participant_removed_command(void)
{
	TestClient *a = client_open(ALICE, "alice");
	TestClient *b1 = client_open(BOB, "bob");
	TestClient *b2 = client_open(BOB, "bob");

	join(a, "s1");
	join(b1, "s1");
	join(b2, "s1");
	flush();
	client_forget(a);
	client_forget(b1);
	client_forget(b2);
	live_apply_command(CMD_PARTICIPANT_REMOVED, "s1", BOB, NULL);
	REQUIRE(reply_count(b1) == 1);
	CHECK_STR(json_string_value(json_object_get(reply_at(b1, 0), "type")), "session_removed");
	CHECK_STR(json_string_value(json_object_get(reply_at(b1, 0), "sessionId")), "s1");
	CHECK_EQ_INT(reply_count(b2), 1);
	CHECK_EQ_INT(reply_count(a), 0);
	CHECK(!live_is_joined(&b1->conn, "s1", NULL, NULL));
	CHECK(!live_is_joined(&b2->conn, "s1", NULL, NULL));
	flush();
	REQUIRE(frame_count(a) == 1);
	CHECK_PRESENCE(frame_at(a, 0), "s1", 1);
	CHECK_EVENT(frame_at(a, 0), 0, "leave", BOB);
	CHECK_EQ_INT(activity_row_count("user_left"), 1);
	live_apply_command(CMD_PARTICIPANT_REMOVED, "s1", CAROL, NULL);	/* not there: nothing */
	live_apply_command(CMD_PARTICIPANT_REMOVED, "s9", BOB, NULL);
	flush();
	CHECK_EQ_INT(frame_count(a), 1);
}

static void
role_changed_command(void)
{
	TestClient *a = client_open(ALICE, "alice");
	TestClient *b = client_open(BOB, "bob");
	json_t	   *viewer = json_string("viewer");
	const char *role = NULL;

	join(a, "s1");
	join(b, "s1");
	flush();
	client_forget(a);
	client_forget(b);
	live_apply_command(CMD_PARTICIPANT_CHANGED, "s1", ALICE, viewer);
	flush();
	REQUIRE(frame_count(b) == 1);
	CHECK_EVENT(frame_at(b, 0), 0, "update", ALICE);
	CHECK_STR(field_of(event_at(frame_at(b, 0), 0), "role"), "viewer");
	CHECK_EQ_INT(frame_count(a), 1);	/* a server event: Alice learns it too */
	CHECK(live_is_joined(&a->conn, "s1", &role, NULL));
	CHECK_STR(role, "viewer");
	live_apply_command(CMD_PARTICIPANT_CHANGED, "s1", ALICE, viewer);	/* unchanged: no event */
	live_apply_command(CMD_PARTICIPANT_CHANGED, "s1", ALICE, NULL);	/* no role: ignored */
	flush();
	CHECK_EQ_INT(frame_count(b), 1);
	json_decref(viewer);
}

static void
broadcast_command(void)
{
	TestClient *a = client_open(ALICE, "alice");
	TestClient *b = client_open(BOB, "bob");
	TestClient *c = client_open(CAROL, "carol");
	json_t	   *payload = json_pack("{s:i}", "x", 1);
	json_t	   *message = json_pack("{s:s}", "type", "broadcast");

	join(a, "s1");
	join(b, "s1");
	join(c, "s2");
	flush();
	client_forget(a);
	client_forget(b);
	live_apply_command(CMD_BROADCAST, "s1", NULL, payload);
	REQUIRE(frame_count(a) == 1);
	CHECK_STR(json_string_value(json_object_get(frame_at(a, 0), "type")), "broadcast");
	CHECK_STR(json_string_value(json_object_get(frame_at(a, 0), "sessionId")), "s1");
	CHECK(json_equal(json_object_get(frame_at(a, 0), "payload"), payload));
	CHECK_EQ_INT(frame_count(b), 1);
	CHECK_EQ_INT(frame_count(c), 0);
	CHECK_EQ_INT(payload->refcount, 1);	/* not kept */
	CHECK_EQ_INT(live_send_to_session("s1", message), 2);
	CHECK_EQ_INT(live_send_to_session("s9", message), 0);
	live_apply_command(CMD_BROADCAST, "s1", NULL, NULL);	/* no payload: nothing */
	CHECK_EQ_INT(frame_count(a), 2);
	json_decref(payload);
	json_decref(message);
}

static void
publish_changed_and_departed_users(void)
{
	TestClient *a = client_open(ALICE, "alice");
	TestClient *b = client_open(BOB, "bob");

	join(a, "s1");
	join(b, "s1");
	flush();
	live_publish();
	CHECK_EQ_INT(published_entries, 2);
	CHECK_EQ_INT(published_removed, 0);
	live_publish();				/* nothing changed: nothing published */
	CHECK_EQ_INT(published_entries, 2);
	heartbeat(a);
	live_publish();
	CHECK_EQ_INT(published_entries, 3);
	client_close(a);
	flush();
	live_publish();
	CHECK_EQ_INT(published_removed, 1);
	CHECK_EQ_INT(published_entries, 3);	/* freed users are not published as entries */
}

static void
many_sessions_grow_the_table(void)
{
	enum
	{
		N = 2100					/* past 1024 and 2048 buckets */
	};
	static TestClient *clients[N];
	char		session_id[32];
	int			sessions,
				users;

	for (int i = 0; i < N; i++)
	{
		char		user_id[PRESENCE_UUID_LEN + 1];

		nth_user(i, user_id);
		clients[i] = client_open(user_id, "user");
		snprintf(session_id, sizeof(session_id), "s-%d", i);
		CHECK_EQ_INT(join(clients[i], session_id), LIVE_JOIN_OK);
	}
	flush();
	live_gauges(&sessions, &users);
	CHECK_EQ_INT(sessions, N);
	CHECK_EQ_INT(users, N);
	for (int i = 0; i < N; i++)
	{
		snprintf(session_id, sizeof(session_id), "s-%d", i);
		if (!live_is_joined(&clients[i]->conn, session_id, NULL, NULL) || live_session_find(session_id) == NULL)
		{
			CHECK(!"every session is found after the table grew");
			break;
		}
	}
	for (int i = 0; i < N; i += 2)
		client_close(clients[i]);
	flush();
	live_gauges(&sessions, &users);
	CHECK_EQ_INT(sessions, N / 2);
	CHECK(live_session_find("s-1") != NULL);
	CHECK(live_session_find("s-0") == NULL);
}

/*
 * A user whose only connection timed out joins again from a new tab a
 * while later: present afresh, online and active, so the next sweep does
 * not mark them away (as the resume of a silent connection does too).
 */
static void
rejoin_after_timeout_is_online_and_active(void)
{
	TestClient *b = client_open(BOB, "bob");
	TestClient *a1 = client_open(ALICE, "alice");
	TestClient *a2;

	join(b, "s1");
	join(a1, "s1");
	flush();
	for (int64 t = 500; t <= 5000; t += 500)
	{
		fake_now_ms = T0 + t;
		active(b);
		live_sweep(fake_now_ms);	/* a1 times out at T0 + 2000 */
	}
	CHECK(a1->conn.silent);
	flush();
	client_forget(b);

	a2 = client_open(ALICE, "alice");	/* a new tab, 5 s later */
	CHECK_EQ_INT(join(a2, "s1"), LIVE_JOIN_OK);
	flush();
	REQUIRE(frame_count(b) == 1);
	CHECK_EVENT(frame_at(b, 0), 0, "join", ALICE);
	CHECK_STR(field_of(event_at(frame_at(b, 0), 0), "status"), "online");

	fake_now_ms += 1;			/* the next sweep, 1 ms after the join */
	active(b);
	live_sweep(fake_now_ms);
	flush();
	CHECK_EQ_INT(frame_count(b), 1);	/* no automatic "update" to away */
	CHECK_EQ_INT(activity_row_count("status_changed"), 0);
	CHECK_EQ_INT(user_in("s1", ALICE)->status, STATUS_ONLINE);
}

/*
 * docs/protocol.md: "No message other than heartbeat for away_threshold
 * makes the user away; the next such message makes them online again".
 * A session_join from a second tab is such a message, though the new
 * connection had no membership when live_message_received saw it: the
 * join itself counts as activity.
 */
static void
second_tab_join_ends_auto_away(void)
{
	TestClient *b = client_open(BOB, "bob");
	TestClient *a1 = client_open(ALICE, "alice");
	TestClient *a2 = client_open(ALICE, "alice");

	join(b, "s1");
	join(a1, "s1");
	flush();
	fake_now_ms = T0 + 1000;
	heartbeat(a1);
	active(b);
	fake_now_ms = T0 + 2000;
	live_sweep(fake_now_ms);
	CHECK_EQ_INT(user_in("s1", ALICE)->status, STATUS_AWAY);
	flush();
	client_forget(b);

	join(a2, "s1");
	flush();
	CHECK_EQ_INT(user_in("s1", ALICE)->status, STATUS_ONLINE);
	CHECK_EQ_INT(frame_count(b), 1);
}

/*
 * A resumed connection's first message is activity too when it is not
 * a heartbeat, also when the user was still visible through another tab:
 * it ends automatic away.
 */
static void
resumed_tab_activity_ends_auto_away(void)
{
	TestClient *b = client_open(BOB, "bob");
	TestClient *a1 = client_open(ALICE, "alice");
	TestClient *a2 = client_open(ALICE, "alice");

	join(b, "s1");
	join(a1, "s1");
	join(a2, "s1");
	flush();
	fake_now_ms = T0 + 1000;
	heartbeat(a1);
	active(b);
	fake_now_ms = T0 + 2000;
	live_sweep(fake_now_ms);	/* a2 silent, Alice away (a1 only heartbeats) */
	CHECK(a2->conn.silent);
	CHECK_EQ_INT(user_in("s1", ALICE)->status, STATUS_AWAY);
	flush();
	client_forget(b);

	fake_now_ms = T0 + 2100;
	set_cursor(a2, "s1", 5);	/* a cursor_update from the silent tab */
	flush();
	CHECK_EQ_INT(user_in("s1", ALICE)->status, STATUS_ONLINE);
}

/*
 * Timed batching keeps only a user's latest cursor event, and puts it
 * last: clients apply the events in order, each carrying the user's
 * PresenceData after its change, so an "update" that came between the
 * two cursor moves must not be left carrying the older cursor at the end.
 */
static void
coalesced_cursor_comes_last(void)
{
	TestClient *a = client_open(ALICE, "alice");
	TestClient *b = client_open(BOB, "bob");
	json_t	   *frame;
	json_t	   *last;

	join(a, "s1");
	join(b, "s1");
	flush();
	client_forget(b);
	fake_now_ms = T0 + 1000;
	for (int i = 1; i <= 4; i++)
	{
		set_cursor(a, "s1", i);
		flush();
		fake_now_ms++;
	}
	CHECK(live_session_find("s1")->timed);	/* cursor 4 is pending */
	CHECK(live_set_status(&a->conn, "s1", STATUS_AWAY, NULL));	/* carries cursor 4 */
	set_cursor(a, "s1", 5);		/* replaces cursor 4, after the update */
	fake_now_ms = T0 + 1050;
	flush();
	REQUIRE(frame_count(b) == 4);
	frame = frame_at(b, 3);
	last = event_at(frame, event_count(frame) - 1);
	REQUIRE(last != NULL);
	/* the state a client is left with after applying the frame in order */
	CHECK_EQ_INT(cursor_position_of(last), 5);
	CHECK_STR(field_of(last, "status"), "away");
}

int
main(int argc, char **argv)
{
	int			status;

	UNIT_MAIN_BEGIN(argc, argv);
	if (!live_state_init(0))
		return 2;
	unit_setup = setup;
	unit_teardown = teardown;
	UNIT_RUN(two_users_join);
	UNIT_RUN(join_carries_status_activity_cursor);
	UNIT_RUN(multi_tab_one_join_one_leave);
	UNIT_RUN(second_tab_joining_with_status_is_an_update);
	UNIT_RUN(leave_and_session_freed);
	UNIT_RUN(not_joined_is_refused);
	UNIT_RUN(heartbeat_timeout_and_resume);
	UNIT_RUN(timeout_only_when_last_tab_is_silent);
	UNIT_RUN(away_after_threshold_despite_heartbeats);
	UNIT_RUN(away_set_by_the_user_stays);
	UNIT_RUN(heartbeat_cursor_is_a_cursor_move);
	UNIT_RUN(one_frame_per_pass);
	UNIT_RUN(sessions_are_batched_apart);
	UNIT_RUN(timed_batching_coalesces_and_returns);
	UNIT_RUN(timed_batching_ends_after_quiet_interval);
	UNIT_RUN(shutdown_flush_delivers_timed_batch);
	UNIT_RUN(session_full);
	UNIT_RUN(session_ended_command);
	UNIT_RUN(participant_removed_command);
	UNIT_RUN(role_changed_command);
	UNIT_RUN(broadcast_command);
	UNIT_RUN(publish_changed_and_departed_users);
	UNIT_RUN(many_sessions_grow_the_table);
	UNIT_RUN(rejoin_after_timeout_is_online_and_active);
	UNIT_RUN(second_tab_join_ends_auto_away);
	UNIT_RUN(resumed_tab_activity_ends_auto_away);
	UNIT_RUN(coalesced_cursor_comes_last);
	status = unit_main_end("test_live_state");
	frame_deflater_end();
	doubles_free();
	return status;
}
