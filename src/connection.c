/*-------------------------------------------------------------------------
 * connection.c
 *	  The worker's connections: their lifetime (opened and detached by
 *	  ws_server.c, held by whoever still owes them an answer), their
 *	  output (a queue of shared frames, one write per WRITEABLE), their
 *	  close, and their rate limit.
 *
 * Frames go out whole, header included, as LWS_WRITE_HTTP, which lws
 * passes straight to the socket (keeping what the kernel does not take,
 * in order).  lws's permessage-deflate would compress every message per
 * connection, and it sends a large one over several WRITEABLEs, during
 * which a pong or ping it writes itself is mixed into the message (lws
 * 4.1 continues the drain with whatever is written next).  Ours
 * compresses a message once for every connection (frame.c), and only
 * when it is at least presence.compression_min_bytes.
 *
 * Called from inside lws callbacks: nothing here raises a PostgreSQL
 * error.
 *-------------------------------------------------------------------------
 */
#include "presence.h"

#include <libwebsockets.h>

#include "clock.h"
#include "connection.h"
#include "growable.h"
#include "shmem.h"

/* Sustained rate above this multiple of presence.rate_limit closes with 4029. */
#define ABUSE_FACTOR 5

StaticAssertDecl(LWS_PRE == FRAME_HEADROOM, "frame headroom must be what lws_write() expects");
StaticAssertDecl(LWS_PRE >= FRAME_HEADER_MAX, "a frame header must fit in LWS_PRE");

static dlist_head all_connections = DLIST_STATIC_INIT(all_connections);
/* the connection connections_take_turn() returns next; NULL: the first */
static dlist_node *next_in_turn;
static int	open_connections;
static uint64 next_serial = 1;
static char id_prefix[CONNECTION_ID_MAX + 1];

/* origin (node:worker.start) prefixes every connection id of this worker. */
void
connections_init(const char *origin)
{
	strlcpy(id_prefix, origin, sizeof(id_prefix));
}

dlist_head *
connections_all(void)
{
	return &all_connections;
}

int
connections_count(void)
{
	return open_connections;
}

static dlist_node *
node_after(dlist_node *node)
{
	return dlist_has_next(&all_connections, node) ? dlist_next_node(&all_connections, node) : NULL;
}

/*
 * The connections one after another, round and round, so that a caller
 * can visit a few at a time and still reach every one; NULL when there
 * are none.  A connection opened meanwhile takes its turn when the
 * round reaches the end of the list.
 */
Connection *
connections_take_turn(void)
{
	dlist_node *node;

	if (dlist_is_empty(&all_connections))
		return NULL;
	node = next_in_turn ? next_in_turn : dlist_head_node(&all_connections);
	next_in_turn = node_after(node);
	return dlist_container(Connection, all_node, node);
}

Connection *
connection_open(struct lws *wsi, const char *ip, const char *user_agent)
{
	Connection *connection = calloc(1, sizeof(Connection));

	if (connection == NULL || (connection->user_agent = strdup(user_agent)) == NULL)
	{
		free(connection);
		return NULL;
	}
	connection->wsi = wsi;
	connection->refs = 1;
	connection->serial = next_serial++;
	snprintf(connection->id, sizeof(connection->id), "%s:" UINT64_FORMAT, id_prefix, connection->serial);
	strlcpy(connection->ip, ip, sizeof(connection->ip));
	connection->opened_ms = presence_now_ms();
	connection->last_message_ms = connection->opened_ms;
	connection->last_heard_ms = connection->opened_ms;
	connection->tokens = 2.0 * presence_rate_limit;
	connection->tokens_at_ms = connection->opened_ms;
	connection->abuse_window_start_ms = connection->opened_ms;
	dlist_init(&connection->memberships);
	dlist_push_tail(&all_connections, &connection->all_node);
	open_connections++;
	return connection;
}

/* The socket is gone: the connection leaves the list; holders see it closed. */
void
connection_detach(Connection *connection)
{
	if (next_in_turn == &connection->all_node)
		next_in_turn = node_after(next_in_turn);
	dlist_delete(&connection->all_node);
	open_connections--;
	connection->wsi = NULL;
	connection_release(connection);
}

bool
connection_is_open(const Connection *connection)
{
	return connection->wsi != NULL;
}

void
connection_hold(Connection *connection)
{
	connection->refs++;
}

/* Forgets the frames a connection has not sent yet. */
static void
drop_output(Connection *connection)
{
	for (int i = 0; i < connection->out_count; i++)
		frame_release(connection->out[(connection->out_head + i) % connection->out_capacity]);
	connection->out_count = 0;
	connection->out_bytes = 0;
}

void
connection_release(Connection *connection)
{
	if (--connection->refs > 0)
		return;
	drop_output(connection);
	free(connection->out);
	free(connection->rx);
	free(connection->user_agent);
	free(connection);
}

/* Writes one frame now and counts it; false when the connection failed. */
static bool
frame_write(Connection *connection, OutFrame *frame)
{
	bool		compress = connection->compressed && frame->len >= (size_t) presence_compression_min_bytes;
	unsigned char *wire;
	size_t		wire_len;

	if (compress)
		frame_deflate(frame);
	wire = compress && frame->deflated ? frame->deflated : frame->wire;
	wire_len = compress && frame->deflated ? frame->deflated_len : frame->wire_len;
	if (lws_write(connection->wsi, wire, wire_len, LWS_WRITE_HTTP) < (int) wire_len)
		return false;
	/* a keepalive ping is not a message: messages_out counts what clients are sent to read */
	if (frame != frame_ping())
		presence_count_delivery(frame->type_index, frame->len,
								frame->created_us != 0 ? Max(presence_now_us() - frame->created_us, 0) : -1);
	return true;
}

/* Makes room for one more queued frame, oldest moved to the front. */
static bool
out_reserve(Connection *connection)
{
	int			capacity = connection->out_capacity;
	OutFrame  **grown;

	if (connection->out_count < capacity)
		return true;
	capacity = growable_capacity(capacity, 4);
	if ((grown = malloc(capacity * sizeof(OutFrame *))) == NULL)
		return false;
	for (int i = 0; i < connection->out_count; i++)
		grown[i] = connection->out[(connection->out_head + i) % connection->out_capacity];
	free(connection->out);
	connection->out = grown;
	connection->out_capacity = capacity;
	connection->out_head = 0;
	return true;
}

/* Queues a frame for a connection; it goes out on the next WRITEABLE. */
void
connection_send_frame(Connection *connection, OutFrame *frame)
{
	/* once a close is decided nothing more is queued, so it is not delayed */
	if (connection->wsi == NULL || connection->close_code != 0)
		return;
	/* a client whose unsent output passes presence.max_client_backlog is too slow to keep */
	if (connection->out_bytes + frame->len > (size_t) presence_max_client_backlog_kb * 1024)
	{
		connection_close(connection, 1008, "client is not reading fast enough");
		return;
	}

	/*
	 * Nothing queued and nothing half-sent: write at once.  Going through
	 * lws_callback_on_writable would cost two epoll_ctl calls per frame,
	 * more than the send itself; a send the kernel cannot take whole is
	 * kept by lws, and later frames then queue until WRITEABLE.
	 */
	if (connection->out_count == 0 && !lws_partial_buffered(connection->wsi))
	{
		if (!frame_write(connection, frame))
			connection_close(connection, 1011, "write failed");
		return;
	}
	if (!out_reserve(connection))
	{
		connection_close(connection, 1011, "out of memory");
		return;
	}
	frame_hold(frame);
	connection->out[(connection->out_head + connection->out_count++) % connection->out_capacity] = frame;
	connection->out_bytes += frame->len;
	lws_callback_on_writable(connection->wsi);
}

/* Sends one message to one connection; takes ownership of message. */
void
connection_send_json(Connection *connection, json_t *message)
{
	OutFrame   *frame;

	if (message == NULL)
		return;
	frame = frame_from_json(message, 0);
	json_decref(message);
	if (frame)
	{
		connection_send_frame(connection, frame);
		frame_release(frame);
	}
}

/*
 * Closes a connection with a WebSocket close code.  Frames already
 * queued go first; the close itself happens on the next WRITEABLE.
 */
void
connection_close(Connection *connection, int code, const char *reason)
{
	if (connection->wsi == NULL || connection->close_code != 0)
		return;
	connection->close_code = code;
	strlcpy(connection->close_reason, reason, sizeof(connection->close_reason));
	lws_callback_on_writable(connection->wsi);
}

/*
 * Drops a socket without a closing handshake, on lws's next service,
 * which it is woken for: its timers run only after a socket event, and
 * the socket of a peer that has gone may have none.
 */
void
connection_drop_socket(struct lws *wsi)
{
	lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
	lws_cancel_service_pt(wsi);
}

/* For a peer that no longer answers, which would not read a close frame either. */
void
connection_abort(Connection *connection)
{
	if (connection->wsi)
		connection_drop_socket(connection->wsi);
}

/*
 * SERVER_WRITEABLE: a pending close, or the oldest queued frame.  Returns
 * what the lws callback returns (-1: the connection failed).
 *
 * A close starts lws's closing handshake directly (LWS_TO_KILL_SYNC with
 * the reason set) instead of returning -1: on that path the libuv build
 * of lws 4.1 closes the socket a second time before the close frame is
 * written, and the client would see 1006 instead of our close code.
 */
int
connection_write_next(Connection *connection)
{
	struct lws *wsi = connection->wsi;
	OutFrame   *frame;
	bool		written;

	if (connection->closing)
		return 0;
	if (connection->out_count == 0 && connection->close_code != 0)
	{
		lws_close_reason(wsi, (enum lws_close_status) connection->close_code,
						 (unsigned char *) connection->close_reason, strlen(connection->close_reason));
		connection->closing = true;
		lws_set_timeout(wsi, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_SYNC);
		return 0;
	}
	if (connection->out_count == 0)
		return 0;
	frame = connection->out[connection->out_head];
	connection->out_head = (connection->out_head + 1) % connection->out_capacity;
	connection->out_count--;
	connection->out_bytes -= frame->len;
	written = frame_write(connection, frame);
	frame_release(frame);
	if (!written)
		return -1;
	if (connection->out_count > 0 || connection->close_code != 0)
		lws_callback_on_writable(wsi);
	return 0;
}

/*
 * Token bucket of presence.rate_limit per second with a burst of twice
 * that.  Returns false when the message must be refused; closes the
 * connection when it keeps sending at ABUSE_FACTOR times the limit.
 */
bool
connection_rate_allows(Connection *connection, int64 now_ms)
{
	double		burst = 2.0 * presence_rate_limit;

	connection->tokens = Min(burst, connection->tokens +
							 (double) (now_ms - connection->tokens_at_ms) * presence_rate_limit / 1000.0);
	connection->tokens_at_ms = now_ms;
	if (now_ms - connection->abuse_window_start_ms >= 1000)
	{
		connection->abuse_window_start_ms = now_ms;
		connection->abuse_window_messages = 0;
	}
	if (++connection->abuse_window_messages > ABUSE_FACTOR * presence_rate_limit)
	{
		connection_close(connection, 4029, "rate limit exceeded");
		return false;
	}
	if (connection->tokens < 1.0)
		return false;
	connection->tokens -= 1.0;
	return true;
}

/*
 * Shutdown: every client gets the close code at once.  Frames still
 * queued are dropped, so a client that stopped reading does not keep
 * its close waiting behind them.
 */
void
connections_close_all(int code, const char *reason)
{
	dlist_iter	iter;

	dlist_foreach(iter, &all_connections)
	{
		Connection *connection = dlist_container(Connection, all_node, iter.cur);

		drop_output(connection);
		connection_close(connection, code, reason);
	}
}
