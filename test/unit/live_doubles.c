/*-------------------------------------------------------------------------
 * live_doubles.c
 *	  The doubles of live_doubles.h: what connection.c, activity.c,
 *	  worker_db.c, shmem.c, clock.c and config.c give live_state.c in the
 *	  server, reduced to recording and answering as the test says.  None
 *	  of those files is linked: they need libwebsockets, SPI or shared
 *	  memory.  frame.c, protocol.c and growable.c are the real ones.
 *-------------------------------------------------------------------------
 */
#include "live_doubles.h"

/* GUCs (config.c) that live_state.c reads: small, so tests reach them. */
int			presence_batch_max = 3;
int			presence_batch_interval_ms = 50;
int			presence_heartbeat_interval_ms = 1000;
int			presence_heartbeat_timeout_ms = 1000;
int			presence_away_threshold_ms = 2000;
int			presence_max_participants = 5;
int			presence_presence_ttl_ms = 60000;

int64		fake_now_ms;

json_t	   *activity_rows;
DbResult	db_count_result;
int			db_count_answer;
int			db_count_calls;
char		db_count_last_user_ids[4096];
uint64		counters[CTR_COUNT];
int			published_entries;
int			published_removed;
int			malformed_frames;

static dlist_head test_connections = DLIST_STATIC_INIT(test_connections);
static uint64 next_serial = 1;

/* node.c */
const char *
presence_node_id(void)
{
	return "test-node";
}

/* clock.c */
int64
presence_now_us(void)
{
	return fake_now_ms * 1000;
}

int64
presence_now_ms(void)
{
	return fake_now_ms;
}

void
clock_advance(int64 ms)
{
	fake_now_ms += ms;
}

/* connection.c */
dlist_head *
connections_all(void)
{
	return &test_connections;
}

/* Whether the frame's bytes are one unmasked final text frame of its payload. */
static bool
frame_well_formed(const OutFrame *frame)
{
	size_t		header_len = frame->len < 126 ? 2 : frame->len < 65536 ? 4 : 10;

	return frame->wire[0] == 0x81 && frame->wire_len == header_len + frame->len &&
		frame->wire + header_len == frame->payload &&
		(header_len != 2 || frame->wire[1] == frame->len);
}

void
connection_send_frame(Connection *connection, OutFrame *frame)
{
	TestClient *client = (TestClient *) connection;
	json_t	   *message = json_loadb((const char *) frame->payload, frame->len, 0, NULL);

	if (!frame_well_formed(frame) || message == NULL)
		malformed_frames++;
	if (message)
		json_array_append_new(client->frames, message);
}

/* Takes the caller's reference, as connection.c does. */
void
connection_send_json(Connection *connection, json_t *message)
{
	TestClient *client = (TestClient *) connection;

	if (message)
		json_array_append_new(client->replies, message);
}

TestClient *
client_open(const char *user_id, const char *username)
{
	TestClient *client = calloc(1, sizeof(TestClient));

	client->conn.wsi = (struct lws *) (uintptr_t) 0x1;
	client->conn.refs = 1;
	client->conn.serial = next_serial++;
	snprintf(client->conn.id, sizeof(client->conn.id), "test:0.0:%llu",
			 (unsigned long long) client->conn.serial);
	client->conn.authenticated = true;
	strlcpy(client->conn.user_id, user_id, sizeof(client->conn.user_id));
	strlcpy(client->conn.username, username, sizeof(client->conn.username));
	client->conn.opened_ms = fake_now_ms;
	client->conn.last_message_ms = fake_now_ms;
	dlist_init(&client->conn.memberships);
	dlist_push_tail(&test_connections, &client->conn.all_node);
	client->frames = json_array();
	client->replies = json_array();
	return client;
}

void
client_close(TestClient *client)
{
	live_connection_closed(&client->conn);
	dlist_delete(&client->conn.all_node);
	json_decref(client->frames);
	json_decref(client->replies);
	free(client);
}

void
clients_close_all(void)
{
	while (!dlist_is_empty(&test_connections))
		client_close((TestClient *) dlist_container(Connection, all_node,
													dlist_head_node(&test_connections)));
}

int
clients_open(void)
{
	dlist_iter	iter;
	int			count = 0;

	dlist_foreach(iter, &test_connections)
		count++;
	return count;
}

int
frame_count(TestClient *client)
{
	return (int) json_array_size(client->frames);
}

json_t *
frame_at(TestClient *client, int i)
{
	return json_array_get(client->frames, i);
}

int
reply_count(TestClient *client)
{
	return (int) json_array_size(client->replies);
}

json_t *
reply_at(TestClient *client, int i)
{
	return json_array_get(client->replies, i);
}

void
client_forget(TestClient *client)
{
	json_array_clear(client->frames);
	json_array_clear(client->replies);
}

/* activity.c: the row as the queue would hold it, details as given (not taken). */
bool
activity_enqueue(const char *session_id, const char *user_id, const char *activity_type,
				 json_t *details, Connection *source, Connection *requester,
				 json_t *ref, bool announce)
{
	json_array_append_new(activity_rows,
						  json_pack("{s:s, s:s?, s:s, s:O?, s:I, s:b}",
									"session", session_id, "user", user_id, "type", activity_type,
									"details", details,
									"source", (json_int_t) (source ? source->serial : 0),
									"announce", announce));
	return true;
}

int
activity_row_count(const char *activity_type)
{
	size_t		i;
	json_t	   *row;
	int			count = 0;

	json_array_foreach(activity_rows, i, row)
		if (strcmp(json_string_value(json_object_get(row, "type")), activity_type) == 0)
		count++;
	return count;
}

json_t *
activity_row_last(const char *activity_type)
{
	json_t	   *last = NULL;
	size_t		i;
	json_t	   *row;

	json_array_foreach(activity_rows, i, row)
		if (strcmp(json_string_value(json_object_get(row, "type")), activity_type) == 0)
		last = row;
	return last;
}

/* worker_db.c */
DbResult
db_count_participants(const char *session_id, const char *user_ids, int *count)
{
	db_count_calls++;
	strlcpy(db_count_last_user_ids, user_ids, sizeof(db_count_last_user_ids));
	if (db_count_result == DB_OK)
		*count = db_count_answer;
	return db_count_result;
}

/* shmem.c */
void
presence_count(PresenceCounter counter, uint64 n)
{
	counters[counter] += n;
}

void
presence_users_publish(LiveUserEntry *entries, int count, LiveUserKey *removed, int nremoved)
{
	published_entries += count;
	published_removed += nremoved;
}

void
doubles_reset(void)
{
	if (activity_rows == NULL)
		activity_rows = json_array();
	json_array_clear(activity_rows);
	db_count_result = DB_OK;
	db_count_answer = 0;
	db_count_calls = 0;
	db_count_last_user_ids[0] = '\0';
	memset(counters, 0, sizeof(counters));
	published_entries = 0;
	published_removed = 0;
	malformed_frames = 0;
}

void
doubles_free(void)
{
	if (activity_rows)
		json_decref(activity_rows);
	activity_rows = NULL;
}
