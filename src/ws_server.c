/*-------------------------------------------------------------------------
 * ws_server.c
 *	  The libwebsockets vhost of a ws worker: the upgrade gate (path,
 *	  Origin, connection limit), frames in (size, binary, rate limits)
 *	  and out (shared frames, one write per WRITEABLE), permessage-deflate;
 *	  plain HTTP on the same port goes to http_routes.c.
 *
 * lws runs on the worker's own libuv loop as a foreign loop, so it
 * installs no signal handlers of its own (PostgreSQL owns signals) and
 * shares the loop with everything else the worker waits on.  Every
 * callback here returns normally: nothing may raise a PostgreSQL error
 * through lws's stack frames.
 *-------------------------------------------------------------------------
 */
#include "presence.h"

#include <stdlib.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <libwebsockets.h>
#include <zlib.h>

#include "postmaster/postmaster.h"

#include "admission.h"
#include "clock.h"
#include "http_routes.h"
#include "live_state.h"
#include "protocol.h"
#include "requests.h"
#include "shmem.h"
#include "ws_server.h"

/* Sustained rate above this multiple of presence.rate_limit closes with 4029. */
#define ABUSE_FACTOR 5
/* The longest header of an unmasked frame (it fits in LWS_PRE); its bits. */
#define FRAME_HEADER_MAX 10
#define FRAME_FIN 0x80
#define FRAME_RSV1 0x40				/* permessage-deflate: a compressed message */
#define FRAME_OPCODE_TEXT 0x1
/* How the worker's one deflater compresses server messages. */
#define DEFLATE_LEVEL 6
#define DEFLATE_WINDOW_BITS 15
#define DEFLATE_MEM_LEVEL 8

StaticAssertDecl(LWS_PRE >= FRAME_HEADER_MAX, "a frame header must fit in LWS_PRE");

/* The permessage-deflate parameters of one offer that change what we do. */
typedef struct DeflateOffer
{
	bool		client_no_context_takeover;
	bool		server_max_window_bits;
	int			client_max_window_bits; /* 0 absent, -1 without a value */
} DeflateOffer;

/* lws per-connection data: what the handshake told us, then the Connection. */
typedef struct HandshakeData
{
	Connection *connection;
	bool		header_token;
	JwtVerdict	verdict;
	JwtIdentity identity;
	char		ip[64];
	char		user_agent[256];
	int			deflate_offers_seen;	/* CONFIRM_EXTENSION_OKAY calls so far */
	DeflateOffer deflate_offer; /* the one accepted */
	bool		deflate;		/* permessage-deflate is in use */
} HandshakeData;

static struct lws_context *ws_context = NULL;
static dlist_head ws_connections = DLIST_STATIC_INIT(ws_connections);
static uint64 ws_next_serial = 1;
static int	ws_worker_index;
static lws_retry_bo_t ping_policy;
static int	ws_partial_messages;	/* connections with a message half received */
static bool ws_stopping;
static struct lws_vhost *ws_vhost;
static int	ws_listen_fd = -1;
static uv_poll_t ws_listen_poll;

static bool listen_shared(uv_loop_t *loop);
static void evict_newcomer(void *socket);
static char ws_node_id[64];
static char ws_origin[96];
static z_stream ws_deflater;
static bool ws_deflater_ready;

static bool frame_write(struct lws *wsi, OutFrame *frame);
static size_t frame_header(unsigned char *payload, size_t len, bool compressed);
static int	ws_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user,
						void *in, size_t len);

static struct lws_protocols ws_protocols[] = {
	{"presence.v1", ws_callback, sizeof(HandshakeData), 4096, 0, NULL, 0},
	{NULL, NULL, 0, 0, 0, NULL, 0}
};

static const struct lws_extension ws_extensions[] = {
	{"permessage-deflate", lws_extension_callback_pm_deflate,
	"permessage-deflate; client_no_context_takeover; client_max_window_bits"},
	{NULL, NULL, NULL}
};

dlist_head *
ws_server_connections(void)
{
	return &ws_connections;
}

const char *
ws_server_node_id(void)
{
	return ws_node_id;
}

/* node:worker.start, the prefix of this worker's connection ids. */
const char *
ws_server_origin(void)
{
	return ws_origin;
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
	free(connection);
}

/*
 * Serialises a server message once, with LWS_PRE bytes of headroom, so
 * every connection it goes to shares the same bytes.
 */
OutFrame *
frame_from_json(json_t *message, int64 created_us)
{
	size_t		len = json_dumpb(message, NULL, 0, JSON_COMPACT);
	OutFrame   *frame;
	json_t	   *type = json_object_get(message, "type");

	if (len == 0)
		return NULL;
	frame = malloc(offsetof(OutFrame, buffer) + LWS_PRE + len);
	if (frame == NULL)
		return NULL;
	frame->refs = 1;
	frame->created_us = created_us;
	frame->len = len;
	frame->payload = frame->buffer + LWS_PRE;
	frame->type_index = json_is_string(type) ? server_message_type_index(json_string_value(type)) : -1;
	json_dumpb(message, (char *) frame->payload, len, JSON_COMPACT);
	frame->wire_len = frame_header(frame->payload, len, false) + len;
	frame->wire = frame->payload + len - frame->wire_len;
	frame->deflate_tried = false;
	frame->deflated = NULL;
	return frame;
}

void
frame_release(OutFrame *frame)
{
	if (--frame->refs > 0)
		return;
	free(frame->deflated);
	free(frame);
}

/*
 * Writes the header of an unmasked, final text frame into the bytes just
 * before payload and returns its length.  RSV1 marks a permessage-deflate
 * payload (RFC 7692).
 */
static size_t
frame_header(unsigned char *payload, size_t len, bool compressed)
{
	unsigned char *header;
	size_t		header_len = len < 126 ? 2 : len < 65536 ? 4 : 10;

	header = payload - header_len;
	header[0] = FRAME_FIN | (compressed ? FRAME_RSV1 : 0) | FRAME_OPCODE_TEXT;
	if (len < 126)
		header[1] = (unsigned char) len;
	else if (len < 65536)
	{
		header[1] = 126;
		header[2] = (unsigned char) (len >> 8);
		header[3] = (unsigned char) len;
	}
	else
	{
		header[1] = 127;
		for (int i = 0; i < 8; i++)
			header[2 + i] = (unsigned char) ((uint64) len >> (56 - 8 * i));
	}
	return header_len;
}

/*
 * Makes the frame's compressed twin once, for every connection that
 * negotiated permessage-deflate: the worker's one deflater starts afresh
 * for each message (a server may always do without context takeover, so
 * the bytes suit every such connection, whatever it offered), flushes
 * with Z_SYNC_FLUSH and drops the 00 00 ff ff that ends it (RFC 7692
 * 7.2.1).  Left NULL when it would not be smaller or zlib fails: then the
 * plain frame goes, which RFC 7692 allows for any message.
 */
static void
frame_deflate(OutFrame *frame)
{
	unsigned char *out;
	size_t		capacity;
	size_t		len;

	frame->deflate_tried = true;
	if (!ws_deflater_ready)
	{
		if (deflateInit2(&ws_deflater, DEFLATE_LEVEL, Z_DEFLATED, -DEFLATE_WINDOW_BITS,
						 DEFLATE_MEM_LEVEL, Z_DEFAULT_STRATEGY) != Z_OK)
			return;
		ws_deflater_ready = true;
	}
	/* a sync flush may add a few bytes to what deflateBound counts */
	capacity = deflateBound(&ws_deflater, frame->len) + 16;
	out = malloc(FRAME_HEADER_MAX + capacity);
	if (out == NULL)
		return;
	ws_deflater.next_in = frame->payload;
	ws_deflater.avail_in = frame->len;
	ws_deflater.next_out = out + FRAME_HEADER_MAX;
	ws_deflater.avail_out = capacity;
	if (deflate(&ws_deflater, Z_SYNC_FLUSH) != Z_OK || ws_deflater.avail_in != 0 ||
		ws_deflater.avail_out == 0)
	{
		deflateReset(&ws_deflater);
		free(out);
		return;
	}
	len = capacity - ws_deflater.avail_out - 4;
	deflateReset(&ws_deflater);
	if (len >= frame->len)
	{
		free(out);
		return;
	}
	frame->deflated_len = frame_header(out + FRAME_HEADER_MAX, len, true) + len;
	/* the frame starts where the block does, so frame_release can free it */
	memmove(out, out + FRAME_HEADER_MAX + len - frame->deflated_len, frame->deflated_len);
	frame->deflated = out;
}

/* Queues a frame for a connection; it goes out on the next WRITEABLE. */
void
ws_send_frame(Connection *connection, OutFrame *frame)
{
	/* once a close is decided nothing more is queued, so it is not delayed */
	if (connection->wsi == NULL || connection->close_code != 0)
		return;
	/* a client whose unsent output passes presence.max_client_backlog is too slow to keep */
	if (connection->out_bytes + frame->len > (size_t) presence_max_client_backlog_kb * 1024)
	{
		ws_close(connection, 1008, "client is not reading fast enough");
		return;
	}

	/*
	 * Nothing queued and nothing half-sent: write at once.  Going through
	 * lws_callback_on_writable would cost two epoll_ctl calls per frame,
	 * more than the send itself; a send the kernel cannot take whole is
	 * kept by lws, and later frames then queue until WRITEABLE.  (lws's
	 * own deflater, which spreads a large message over later WRITEABLEs,
	 * is never used: frame_write writes whole frames.)
	 */
	if (connection->out_count == 0 && !lws_partial_buffered(connection->wsi))
	{
		if (!frame_write(connection->wsi, frame))
			ws_close(connection, 1011, "write failed");
		return;
	}
	if (connection->out_count == connection->out_capacity)
	{
		int			capacity = Max(4, connection->out_capacity * 2);
		OutFrame  **grown = malloc(capacity * sizeof(OutFrame *));

		if (grown == NULL)
		{
			ws_close(connection, 1011, "out of memory");
			return;
		}
		for (int i = 0; i < connection->out_count; i++)
			grown[i] = connection->out[(connection->out_head + i) % connection->out_capacity];
		free(connection->out);
		connection->out = grown;
		connection->out_capacity = capacity;
		connection->out_head = 0;
	}
	frame->refs++;
	connection->out[(connection->out_head + connection->out_count++) % connection->out_capacity] = frame;
	connection->out_bytes += frame->len;
	lws_callback_on_writable(connection->wsi);
}

/* Sends one message to one connection; takes ownership of message. */
void
ws_send_json(Connection *connection, json_t *message)
{
	OutFrame   *frame;

	if (message == NULL)
		return;
	frame = frame_from_json(message, 0);
	json_decref(message);
	if (frame)
	{
		ws_send_frame(connection, frame);
		frame_release(frame);
	}
}

/*
 * Closes a connection with a WebSocket close code.  Frames already
 * queued go first; the close itself happens on the next WRITEABLE.
 */
void
ws_close(Connection *connection, int code, const char *reason)
{
	if (connection->wsi == NULL || connection->close_code != 0)
		return;
	connection->close_code = code;
	strlcpy(connection->close_reason, reason, sizeof(connection->close_reason));
	lws_callback_on_writable(connection->wsi);
}

/* Does the request's Origin (when sent) match presence.allowed_origins? */
static bool
origin_allowed(struct lws *wsi)
{
	char		origin[512];
	char	   *list;
	char	   *item;
	char	   *save = NULL;
	bool		allowed = false;

	if (lws_hdr_total_length(wsi, WSI_TOKEN_ORIGIN) <= 0)
		return true;
	if (lws_hdr_copy(wsi, origin, sizeof(origin), WSI_TOKEN_ORIGIN) < 0)
		return false;
	list = strdup(presence_allowed_origins ? presence_allowed_origins : "");
	if (list == NULL)
		return false;
	for (item = strtok_r(list, ",", &save); item && !allowed; item = strtok_r(NULL, ",", &save))
	{
		while (*item == ' ')
			item++;
		for (char *end = item + strlen(item); end > item && end[-1] == ' ';)
			*--end = '\0';
		allowed = strcmp(item, "*") == 0 || strcasecmp(item, origin) == 0;
	}
	free(list);
	return allowed;
}

/*
 * A header's value as text that is safe to store (protocol_clean_text):
 * any length is read, then repaired and cut to out_size.
 */
static void
copy_header_text(struct lws *wsi, enum lws_token_indexes header, char *out, size_t out_size)
{
	int			len = lws_hdr_total_length(wsi, header);
	char	   *raw = len > 0 ? malloc(len + 1) : NULL;

	out[0] = '\0';
	if (raw && lws_hdr_copy(wsi, raw, len + 1, header) >= 0)
		protocol_clean_text(raw, strlen(raw), out, out_size);
	free(raw);
}

/* Reads the Authorization header; verifies a Bearer token if there is one. */
static void
read_handshake(struct lws *wsi, HandshakeData *handshake)
{
	int			len = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_AUTHORIZATION);

	lws_get_peer_simple(wsi, handshake->ip, sizeof(handshake->ip));
	copy_header_text(wsi, WSI_TOKEN_HTTP_USER_AGENT, handshake->user_agent, sizeof(handshake->user_agent));
	if (len > 0)
	{
		char	   *header = malloc(len + 1);

		handshake->header_token = true;
		handshake->verdict = JWT_MALFORMED;
		if (header && lws_hdr_copy(wsi, header, len + 1, WSI_TOKEN_HTTP_AUTHORIZATION) > 0 &&
			strncasecmp(header, "Bearer ", 7) == 0)
		{
			const char *token = header + 7;

			while (*token == ' ')
				token++;
			handshake->verdict = jwt_verify(token, strlen(token), presence_jwt_secret,
											presence_jwt_audience, presence_jwt_leeway_s,
											presence_now_ms() / 1000, &handshake->identity);
		}
		free(header);
	}
}

static Connection *
connection_open(struct lws *wsi, HandshakeData *handshake)
{
	Connection *connection = calloc(1, sizeof(Connection));

	if (connection == NULL)
		return NULL;
	connection->wsi = wsi;
	connection->refs = 1;
	connection->serial = ws_next_serial++;
	snprintf(connection->id, sizeof(connection->id), "%s:" UINT64_FORMAT, ws_origin, connection->serial);
	strlcpy(connection->ip, handshake->ip, sizeof(connection->ip));
	strlcpy(connection->user_agent, handshake->user_agent, sizeof(connection->user_agent));
	connection->opened_ms = presence_now_ms();
	connection->last_message_ms = connection->opened_ms;
	connection->tokens = 2.0 * presence_rate_limit;
	connection->tokens_at_ms = connection->opened_ms;
	connection->abuse_window_start_ms = connection->opened_ms;
	dlist_init(&connection->memberships);
	dlist_push_tail(&ws_connections, &connection->all_node);
	return connection;
}

/*
 * Token bucket of presence.rate_limit per second with a burst of twice
 * that.  Returns false when the message must be refused; closes the
 * connection when it keeps sending at ABUSE_FACTOR times the limit.
 */
static bool
rate_allows(Connection *connection, int64 now_ms)
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
		ws_close(connection, 4029, "rate limit exceeded");
		return false;
	}
	if (connection->tokens < 1.0)
		return false;
	connection->tokens -= 1.0;
	return true;
}

/* A data chunk of a WebSocket message; whole messages go to request_handle. */
static int
receive_chunk(struct lws *wsi, Connection *connection, const char *in, size_t len)
{
	int64		now_ms;

	if (connection->close_code != 0 || ws_stopping)
		return 0;
	if (lws_frame_is_binary(wsi))
	{
		ws_close(connection, 1003, "binary frames are not supported");
		return 0;
	}
	if (connection->rx_len + len > (size_t) presence_max_message_bytes)
	{
		ws_close(connection, 1009, "message too big");
		return 0;
	}
	presence_count(CTR_BYTES_IN, len);
	if (!lws_is_final_fragment(wsi) || connection->rx_len > 0)
	{
		if (connection->rx_capacity < connection->rx_len + len + 1)
		{
			size_t		capacity = Max(connection->rx_len + len + 1, 2 * connection->rx_capacity);
			char	   *grown = realloc(connection->rx, capacity);

			if (grown == NULL)
			{
				ws_close(connection, 1011, "out of memory");
				return 0;
			}
			connection->rx = grown;
			connection->rx_capacity = capacity;
		}
		if (connection->rx_len == 0)
			ws_partial_messages++;
		memcpy(connection->rx + connection->rx_len, in, len);
		connection->rx_len += len;
		if (!lws_is_final_fragment(wsi))
			return 0;
		in = connection->rx;
		len = connection->rx_len;
	}

	now_ms = presence_now_ms();
	if (!rate_allows(connection, now_ms))
	{
		if (connection->close_code == 0)
			request_fail(connection, NULL, "rate_limited", "too many messages; slow down");
	}
	else
		request_handle(connection, in, len);
	if (connection->rx_len > 0)
		ws_partial_messages--;
	connection->rx_len = 0;
	if (connection->rx_capacity > 65536)
	{
		free(connection->rx);
		connection->rx = NULL;
		connection->rx_capacity = 0;
	}
	return 0;
}

/*
 * Writes one frame now and counts it; false when the connection failed.
 *
 * The frame is complete, header included, and goes out as LWS_WRITE_HTTP,
 * which lws passes straight to the socket (keeping what the kernel does
 * not take, in order).  lws's permessage-deflate would compress every
 * message per connection, and it sends a large one over several
 * WRITEABLEs, during which a pong or ping it writes itself is mixed into
 * the message (lws 4.1 continues the drain with whatever is written
 * next).  Ours compresses a message once for every connection, and only
 * when it is at least presence.compression_min_bytes.
 */
static bool
frame_write(struct lws *wsi, OutFrame *frame)
{
	HandshakeData *handshake = lws_wsi_user(wsi);
	bool		compress = handshake->deflate && frame->len >= (size_t) presence_compression_min_bytes;
	unsigned char *wire;
	size_t		wire_len;

	if (compress && !frame->deflate_tried)
		frame_deflate(frame);
	wire = compress && frame->deflated ? frame->deflated : frame->wire;
	wire_len = compress && frame->deflated ? frame->deflated_len : frame->wire_len;
	if (lws_write(wsi, wire, wire_len, LWS_WRITE_HTTP) < (int) wire_len)
		return false;
	presence_count_message_out(frame->type_index);
	presence_count(CTR_BYTES_OUT, frame->len);
	if (frame->created_us != 0)
		presence_record_latency(presence_now_us() - frame->created_us);
	return true;
}

/*
 * SERVER_WRITEABLE: a pending close, or the oldest queued frame.
 *
 * A close starts lws's closing handshake directly (LWS_TO_KILL_SYNC with
 * the reason set) instead of returning -1: on that path the libuv build
 * of lws 4.1 closes the socket a second time before the close frame is
 * written, and the client would see 1006 instead of our close code.
 */
static int
write_next(struct lws *wsi, Connection *connection)
{
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
	written = frame_write(wsi, frame);
	frame_release(frame);
	if (!written)
		return -1;
	if (connection->out_count > 0 || connection->close_code != 0)
		lws_callback_on_writable(wsi);
	return 0;
}

/*
 * Refuses an upgrade with a plain-text HTTP status.  lws_return_http_status()
 * would answer "HTTP/1.0" at this point (lws reads the request's version
 * only after the upgrade callback), which strict clients such as Python's
 * websockets cannot read; the status line is written here instead.
 */
static void
refuse_upgrade(struct lws *wsi, int status, const char *reason, const char *message)
{
	unsigned char buffer[LWS_PRE + 512];
	unsigned char *start = buffer + LWS_PRE;
	unsigned char *end = buffer + sizeof(buffer) - 1;
	unsigned char *p = start;
	size_t		len = strlen(message);

	p += lws_snprintf((char *) p, lws_ptr_diff(end, p), "HTTP/1.1 %d %s\r\n", status, reason);
	if (lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CONTENT_TYPE,
									 (const unsigned char *) "text/plain", 10, &p, end) ||
		lws_add_http_header_content_length(wsi, len, &p, end) ||
		lws_add_http_header_by_token(wsi, WSI_TOKEN_CONNECTION,
									 (const unsigned char *) "close", 5, &p, end) ||
		lws_finalize_http_header(wsi, &p, end) || (size_t) lws_ptr_diff(end, p) < len)
		return;
	memcpy(p, message, len);
	p += len;
	(void) lws_write(wsi, start, lws_ptr_diff(p, start), LWS_WRITE_HTTP);
}

/*
 * The upgrade gate, while the request headers are still readable: path
 * /ws, Origin, the node's connection limit.  Refusals are plain HTTP.
 */
static int
confirm_upgrade(struct lws *wsi)
{
	char		uri[256];

	if (lws_hdr_copy(wsi, uri, sizeof(uri), WSI_TOKEN_GET_URI) < 0 ||
		(strcmp(uri, "/ws") != 0 && strcmp(uri, "/") != 0))
		refuse_upgrade(wsi, HTTP_STATUS_NOT_FOUND, "Not Found", "WebSocket endpoint is /ws\n");
	else if (!origin_allowed(wsi))
		refuse_upgrade(wsi, HTTP_STATUS_FORBIDDEN, "Forbidden", "origin not allowed\n");
	else if (presence_connections_total() >= presence_max_connections)
		refuse_upgrade(wsi, HTTP_STATUS_SERVICE_UNAVAILABLE, "Service Unavailable", "too many connections\n");
	else
		return 0;
	presence_count(CTR_CONNECTIONS_REFUSED, 1);
	return 1;
}

/*
 * Reads the index'th (0 first) permessage-deflate offer of the request's
 * Sec-WebSocket-Extensions; false when there is none.
 */
static bool
read_deflate_offer(struct lws *wsi, int index, DeflateOffer *offer)
{
	char		header[1024];
	char	   *save_item = NULL;

	memset(offer, 0, sizeof(*offer));
	if (lws_hdr_copy(wsi, header, sizeof(header), WSI_TOKEN_EXTENSIONS) < 0)
		return false;
	for (char *item = strtok_r(header, ",", &save_item); item; item = strtok_r(NULL, ",", &save_item))
	{
		char	   *save_param = NULL;
		char	   *param = strtok_r(item, "; \t", &save_param);

		if (param == NULL || strcmp(param, "permessage-deflate") != 0 || index-- > 0)
			continue;
		while ((param = strtok_r(NULL, "; \t", &save_param)) != NULL)
		{
			char	   *value = strchr(param, '=');

			if (value)
				*value++ = '\0';
			if (strcmp(param, "client_no_context_takeover") == 0)
				offer->client_no_context_takeover = true;
			else if (strcmp(param, "server_max_window_bits") == 0)
				offer->server_max_window_bits = true;
			else if (strcmp(param, "client_max_window_bits") == 0)
				offer->client_max_window_bits = value ? atoi(value + (*value == '"')) : -1;
		}
		return true;
	}
	return false;
}

/*
 * CONFIRM_EXTENSION_OKAY, once per permessage-deflate offer in the order
 * the client listed them, until one is accepted (non-zero declines).  lws
 * answers only the options without a value, so an offer that asks for
 * server_max_window_bits, which must be answered to be accepted, is
 * declined; the next offer, or none, is taken.
 */
static int
confirm_deflate(struct lws *wsi, HandshakeData *handshake)
{
	DeflateOffer *offer = &handshake->deflate_offer;

	if (!read_deflate_offer(wsi, handshake->deflate_offers_seen++, offer))
		return 1;
	if (offer->server_max_window_bits ||
		(offer->client_max_window_bits > 0 &&
		 (offer->client_max_window_bits < 8 || offer->client_max_window_bits > 15)))
		return 1;
	return 0;
}

/*
 * Once permessage-deflate is negotiated, before any data: makes lws's
 * inflater right.  lws 4.1.6 gets the server side backwards: it inflates
 * with the window of server_max_window_bits (the client compresses with
 * client_max_window_bits, which we never answer, hence 15 bits) and resets
 * the inflater after each message when server_no_context_takeover is set
 * (which is about our deflater).  So the server_* options set here are
 * the inflater's: the client's window, and a reset exactly when the
 * client said it starts afresh for each message, which frees the window
 * between messages.  lws's deflater, configured by the client_* ones, is
 * never used (frame_write).
 */
static void
deflate_established(struct lws *wsi, HandshakeData *handshake)
{
	handshake->deflate = lws_set_extension_option(wsi, "permessage-deflate",
												  "server_max_window_bits", "15") == 0;
	if (handshake->deflate)
		lws_set_extension_option(wsi, "permessage-deflate", "server_no_context_takeover",
								 handshake->deflate_offer.client_no_context_takeover ? "1" : "0");
}

static int
ws_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
	HandshakeData *handshake = user;
	Connection *connection = handshake ? handshake->connection : NULL;

	switch (reason)
	{
		case LWS_CALLBACK_HTTP:
			return http_serve(wsi, in ? (const char *) in : "/");

		case LWS_CALLBACK_HTTP_FILE_COMPLETION:
			return lws_http_transaction_completed(wsi) ? -1 : 0;

		case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
			return confirm_upgrade(wsi);

		case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
			read_handshake(wsi, handshake);
			return 0;

		case LWS_CALLBACK_CONFIRM_EXTENSION_OKAY:
			return confirm_deflate(wsi, handshake);

		case LWS_CALLBACK_WSI_DESTROY:
			if (lws_get_opaque_user_data(wsi))
				admission_done(lws_get_opaque_user_data(wsi));
			lws_set_opaque_user_data(wsi, NULL);
			return 0;

		case LWS_CALLBACK_ESTABLISHED:
			if (lws_get_opaque_user_data(wsi))
				admission_upgraded(lws_get_opaque_user_data(wsi));
			if (!presence_connection_admit())
			{
				presence_count(CTR_CONNECTIONS_REFUSED, 1);
				lws_close_reason(wsi, (enum lws_close_status) 1013, (unsigned char *) "too many connections", 20);
				return -1;
			}
			connection = connection_open(wsi, handshake);
			if (connection == NULL)
			{
				presence_connection_release();
				return -1;
			}
			handshake->connection = connection;
			presence_count(CTR_CONNECTIONS_OPENED, 1);
			if (presence_compression)
				deflate_established(wsi, handshake);
			if (handshake->header_token)
			{
				if (handshake->verdict == JWT_VALID)
					request_admit(connection, &handshake->identity, NULL);
				else
				{
					presence_count(CTR_AUTH_FAILURES, 1);
					ws_close(connection, 4001, jwt_verdict_message(handshake->verdict));
				}
			}
			return 0;

		case LWS_CALLBACK_RECEIVE:
			if (connection == NULL)
				return -1;
			return receive_chunk(wsi, connection, in, len);

		case LWS_CALLBACK_SERVER_WRITEABLE:
			if (connection == NULL)
				return -1;
			return write_next(wsi, connection);

		case LWS_CALLBACK_CLOSED:
			if (connection == NULL)
				return 0;
			if (connection->rx_len > 0)
				ws_partial_messages--;
			live_connection_closed(connection);
			dlist_delete(&connection->all_node);
			connection->wsi = NULL;
			handshake->connection = NULL;
			presence_connection_release();
			connection_release(connection);
			return 0;

		default:
			break;
	}
	return lws_callback_http_dummy(wsi, reason, user, in, len);
}

/* lws's log lines go to the server log; never ERROR from here. */
static void
lws_log_to_postgres(int level, const char *line)
{
	size_t		len = strlen(line);

	while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
		len--;
	ereport(level == LLL_ERR ? WARNING : LOG,
			(errmsg("presence: libwebsockets: %.*s", (int) len, line)));
}

/* Creates the lws context on the worker's libuv loop and starts listening. */
bool
ws_server_start(uv_loop_t *loop, int worker_index)
{
	struct lws_context_creation_info info;
	void	   *foreign_loops[1] = {loop};
	char		hostname[48];

	ws_worker_index = worker_index;
	if (gethostname(hostname, sizeof(hostname)) != 0)
		strlcpy(hostname, "localhost", sizeof(hostname));
	hostname[sizeof(hostname) - 1] = '\0';
	snprintf(ws_node_id, sizeof(ws_node_id), "%s-%d", hostname, PostPortNumber);
	/* the start time tells this run's connections from an earlier one's */
	snprintf(ws_origin, sizeof(ws_origin), "%s:%d.%llx", ws_node_id, worker_index,
			 (unsigned long long) presence_now_ms());

	lws_set_log_level(LLL_ERR | LLL_WARN, lws_log_to_postgres);
	memset(&info, 0, sizeof(info));
	/* we listen ourselves (listen_shared); lws serves what we accept */
	info.port = CONTEXT_PORT_NO_LISTEN_SERVER;
	info.protocols = ws_protocols;
	info.extensions = presence_compression ? ws_extensions : NULL;
	info.options = LWS_SERVER_OPTION_LIBUV |
		LWS_SERVER_OPTION_VALIDATE_UTF8 |
		LWS_SERVER_OPTION_SKIP_PROTOCOL_INIT;
	info.foreign_loops = foreign_loops;
	if (presence_ping_interval_s > 0)
	{
		ping_policy.secs_since_valid_ping = (uint16_t) presence_ping_interval_s;
		ping_policy.secs_since_valid_hangup = (uint16_t) Min(presence_ping_interval_s * 2 + 10, 65535);
		info.retry_and_idle_policy = &ping_policy;
	}
	info.timeout_secs = 30;
	info.max_http_header_data = 16384;
	/* one header table for every newcomer admission.c allows, so trickled
	 * headers cannot keep a legitimate client waiting for a table */
	info.max_http_header_pool = (unsigned short) Min(presence_max_unauthenticated + 1, 65535);
	info.timeout_secs_ah_idle = (presence_handshake_timeout_ms + 999) / 1000;
	admission_init(evict_newcomer);
	info.server_string = "presence";
	info.vhost_name = "presence";
	if (presence_ssl_cert_file && presence_ssl_cert_file[0])
	{
		info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
		info.ssl_cert_filepath = presence_ssl_cert_file;
		info.ssl_private_key_filepath = presence_ssl_key_file;
	}
	ws_context = lws_create_context(&info);
	if (ws_context == NULL || (ws_vhost = lws_get_vhost_by_name(ws_context, "presence")) == NULL)
		return false;
	return listen_shared(loop);
}

/* admission.c's way to close a newcomer: on lws's next service of it. */
static void
evict_newcomer(void *socket)
{
	lws_set_timeout((struct lws *) socket, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
}

/*
 * Accepts what the listening socket has ready and hands each connection
 * admission.c lets in to lws, which carries its Newcomer record until it
 * authenticates.  Bounded per call so a connection storm cannot starve
 * the rest of the loop; libuv calls again while more are pending.
 */
static void
accept_ready(uv_poll_t *poll, int status, int events)
{
	for (int i = 0; i < 64; i++)
	{
		struct sockaddr_storage peer;
		socklen_t	peer_len = sizeof(peer);
		int			fd = accept4(ws_listen_fd, (struct sockaddr *) &peer, &peer_len, SOCK_NONBLOCK | SOCK_CLOEXEC);
		char		address[64];
		Newcomer   *newcomer;
		lws_sock_file_fd_type descriptor;
		struct lws *wsi;

		if (fd < 0)
			break;
		if (getnameinfo((struct sockaddr *) &peer, peer_len, address, sizeof(address), NULL, 0, NI_NUMERICHOST) != 0)
			strlcpy(address, "unknown", sizeof(address));
		newcomer = admission_admit(address, presence_now_ms());
		if (newcomer == NULL)
		{
			presence_count(CTR_CONNECTIONS_REFUSED, 1);
			close(fd);
			continue;
		}
		descriptor.sockfd = fd;
		wsi = lws_adopt_descriptor_vhost(ws_vhost, LWS_ADOPT_SOCKET | LWS_ADOPT_HTTP |
										 (presence_ssl_cert_file && presence_ssl_cert_file[0] ? LWS_ADOPT_ALLOW_SSL : 0),
										 descriptor, NULL, NULL);
		if (wsi == NULL)
		{
			admission_done(newcomer);
			close(fd);
			continue;
		}
		admission_bind(newcomer, wsi);
		lws_set_opaque_user_data(wsi, newcomer);
	}
}

/*
 * A connection's client authenticated: it is no longer a newcomer, and
 * counts against presence.max_connections only.
 */
void
ws_connection_authenticated(Connection *connection)
{
	Newcomer   *newcomer = connection->wsi ? lws_get_opaque_user_data(connection->wsi) : NULL;

	if (newcomer)
	{
		lws_set_opaque_user_data(connection->wsi, NULL);
		admission_done(newcomer);
	}
}

/*
 * The listening socket, with SO_REUSEPORT so every ws worker of the node
 * binds the same port and the kernel spreads connections over them (lws
 * 4.1 sets SO_REUSEPORT on no platform, so it cannot listen for us).
 */
static bool
listen_shared(uv_loop_t *loop)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
	struct addrinfo *address = NULL;
	char		port[16];
	int			one = 1;

	snprintf(port, sizeof(port), "%d", presence_port);
	if (getaddrinfo(presence_listen_address[0] ? presence_listen_address : NULL, port, &hints, &address) != 0)
		return false;
	ws_listen_fd = socket(address->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (ws_listen_fd < 0 ||
		setsockopt(ws_listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
		setsockopt(ws_listen_fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
		bind(ws_listen_fd, address->ai_addr, address->ai_addrlen) != 0 ||
		listen(ws_listen_fd, SOMAXCONN) != 0)
	{
		int			save_errno = errno;

		freeaddrinfo(address);
		if (ws_listen_fd >= 0)
			close(ws_listen_fd);
		ws_listen_fd = -1;
		errno = save_errno;
		return false;
	}
	freeaddrinfo(address);
	uv_poll_init(loop, &ws_listen_poll, ws_listen_fd);
	uv_poll_start(&ws_listen_poll, UV_READABLE, accept_ready);
	return true;
}

/*
 * Stops accepting, and reading what connected clients send: the first
 * step of a shutdown, after which the clients' leaves are final.
 */
void
ws_server_stop_listening(void)
{
	ws_stopping = true;
	if (ws_listen_fd < 0)
		return;
	uv_poll_stop(&ws_listen_poll);
	uv_close((uv_handle_t *) &ws_listen_poll, NULL);
	close(ws_listen_fd);
	ws_listen_fd = -1;
}

/*
 * Shutdown: every client gets the close code at once.  Frames still
 * queued are dropped, so a client that stopped reading does not keep
 * its close waiting behind them.
 */
void
ws_server_close_all(int code, const char *reason)
{
	dlist_iter	iter;

	dlist_foreach(iter, &ws_connections)
	{
		Connection *connection = dlist_container(Connection, all_node, iter.cur);

		drop_output(connection);
		ws_close(connection, code, reason);
	}
}

/*
 * Some lws work is not triggered by any socket event: the rest of a
 * permessage-deflate message, inflated 1 KiB per step.  lws's libuv glue
 * does it from an idle handle that it starts only after a socket event,
 * so a message of more than a few steps would wait for the client's next
 * frame.  Waking lws through its event pipe restarts that handle; the
 * worker calls this after each run of the loop.
 */
void
ws_server_service_pending(void)
{
	/* only while a message is half received: waking lws costs every pass */
	if (ws_context && ws_partial_messages > 0 && lws_service_adjust_timeout(ws_context, 1, 0) == 0)
		lws_cancel_service(ws_context);
}

void
ws_server_destroy(void)
{
	if (ws_context)
		lws_context_destroy(ws_context);
	ws_context = NULL;
	if (ws_deflater_ready)
		deflateEnd(&ws_deflater);
	ws_deflater_ready = false;
}

/*
 * Connection timers: the handshake deadline (admission.c), authentication
 * deadline (4008) and token expiry (4001, so a client reconnects with a
 * fresh token).
 */
void
ws_server_sweep(int64 now_ms)
{
	dlist_iter	iter;

	admission_sweep(now_ms);

	dlist_foreach(iter, &ws_connections)
	{
		Connection *connection = dlist_container(Connection, all_node, iter.cur);

		if (!connection->authenticated)
		{
			if (now_ms - connection->opened_ms >= presence_auth_timeout_ms)
				ws_close(connection, 4008, "authentication timeout");
		}
		else if (now_ms / 1000 > connection->token_expires_at + presence_jwt_leeway_s)
			ws_close(connection, 4001, "token expired");
	}
}
