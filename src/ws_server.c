/*-------------------------------------------------------------------------
 * ws_server.c
 *	  The libwebsockets vhost of a ws worker: the shared listening
 *	  socket, the upgrade gate (path, Origin, connection limit), the
 *	  handshake (Authorization header, permessage-deflate), whole
 *	  messages in (size, binary, fragments) and WRITEABLE out; plain HTTP
 *	  on the same port goes to http_endpoints.c.
 *
 * The transport knows nothing of what a message means: it calls up only
 * through the WsHandlers it was started with, the way lws calls us
 * through its lws_protocols table.  Connections and their output belong
 * to connection.c.
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

#include "admission.h"
#include "clock.h"
#include "connection.h"
#include "http_endpoints.h"
#include "listen_socket.h"
#include "protocol.h"
#include "proxies.h"
#include "shmem.h"
#include "tls.h"
#include "ws_server.h"

/* The permessage-deflate parameters of one offer that change what we do. */
typedef struct DeflateOffer
{
	bool		server_max_window_bits;
	int			client_max_window_bits; /* 0 absent, -1 without a value */
} DeflateOffer;

/*
 * What the handshake told us, kept from the request headers until the
 * WebSocket is established, then freed: per connection it is most of a
 * kilobyte that an open connection no longer needs.
 */
typedef struct Handshake
{
	bool		header_token;
	JwtVerdict	verdict;
	JwtIdentity identity;
	char		ip[CONNECTION_IP_MAX + 1];
	char		user_agent[CONNECTION_USER_AGENT_MAX + 1];
	int			deflate_offers_seen;	/* CONFIRM_EXTENSION_OKAY calls so far */
	bool		deflate_accepted;
} Handshake;

/* lws per-connection data: the handshake while it lasts, then the Connection. */
typedef struct SocketData
{
	Handshake  *handshake;
	Connection *connection;
} SocketData;

static struct lws_context *ws_context = NULL;
static const WsHandlers *ws_handlers;
/*
 * No validity timers (hangup 0): lws's default would ping every 300 s
 * through a per-connection timer list that costs O(n) per re-arm;
 * keepalive.c pings instead.
 */
static const lws_retry_bo_t no_lws_keepalive = {.secs_since_valid_ping = 0, .secs_since_valid_hangup = 0};
static int	ws_partial_messages;	/* connections with a message half received */
static bool ws_stopping;
static bool ws_tls;				/* the vhost serves wss:// (from start to stop) */
static struct lws_vhost *ws_vhost;
static int	ws_listen_fd = -1;
static uv_poll_t ws_listen_poll;

static bool listen_shared(uv_loop_t *loop);
static void evict_newcomer(void *socket);
static int	ws_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user,
						void *in, size_t len);

/*
 * lws's receive buffer, allocated per connection for its lifetime: small,
 * because most messages are; a longer one arrives in pieces that
 * receive_chunk joins.
 */
#define WS_RX_BUFFER_BYTES 1024
/*
 * The most lws hands the socket in one write; it defaults to the receive
 * buffer's size and keeps the rest of a longer frame in a copy of its
 * own, so it is set far above any frame: the kernel takes what it can.
 */
#define WS_TX_PACKET_BYTES (1 << 20)

static struct lws_protocols ws_protocols[] = {
	{"presence.v1", ws_callback, sizeof(SocketData), WS_RX_BUFFER_BYTES, 0, NULL, WS_TX_PACKET_BYTES},
	{NULL, NULL, 0, 0, 0, NULL, 0}
};

static const struct lws_extension ws_extensions[] = {
	{"permessage-deflate", lws_extension_callback_pm_deflate,
	"permessage-deflate; client_no_context_takeover; client_max_window_bits"},
	{NULL, NULL, NULL}
};

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

/*
 * Reads the client's address (the peer's, or from a trusted proxy the one
 * it forwards), its User-Agent and the Authorization header; verifies a
 * Bearer token if there is one.
 */
static void
read_handshake(struct lws *wsi, Handshake *handshake)
{
	int			len = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_AUTHORIZATION);

	lws_get_peer_simple(wsi, handshake->ip, sizeof(handshake->ip));
	if (proxy_is_trusted(handshake->ip))
	{
		char		forwarded_for[1024];

		/*
		 * Whole or not at all: cut, the value would keep its left part,
		 * which the client wrote, and lose what the proxy appended.
		 */
		if (lws_hdr_total_length(wsi, WSI_TOKEN_X_FORWARDED_FOR) < (int) sizeof(forwarded_for))
		{
			copy_header_text(wsi, WSI_TOKEN_X_FORWARDED_FOR, forwarded_for, sizeof(forwarded_for));
			(void) proxy_client_address(forwarded_for, handshake->ip, sizeof(handshake->ip));
		}
	}
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
			handshake->verdict = jwt_verify_client_token(token, strlen(token), presence_now_ms() / 1000,
														 &handshake->identity);
		}
		free(header);
	}
}

/* A data chunk of a WebSocket message; whole messages go to the message handler. */
static int
receive_chunk(struct lws *wsi, Connection *connection, const char *in, size_t len)
{
	if (connection->close_code != 0 || ws_stopping)
		return 0;
	if (lws_frame_is_binary(wsi))
	{
		connection_close(connection, 1003, "binary frames are not supported");
		return 0;
	}
	if (connection->rx_len + len > (size_t) presence_max_message_bytes)
	{
		connection_close(connection, 1009, "message too big");
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
				connection_close(connection, 1011, "out of memory");
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

	ws_handlers->message(connection, in, len);
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
			if (strcmp(param, "server_max_window_bits") == 0)
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
confirm_deflate(struct lws *wsi, Handshake *handshake)
{
	DeflateOffer offer;

	if (!read_deflate_offer(wsi, handshake->deflate_offers_seen++, &offer))
		return 1;
	if (offer.server_max_window_bits ||
		(offer.client_max_window_bits > 0 &&
		 (offer.client_max_window_bits < 8 || offer.client_max_window_bits > 15)))
		return 1;
	handshake->deflate_accepted = true;
	return 0;
}

#define EXTENSIONS_HEADER "Sec-WebSocket-Extensions:"
#define DEFLATE_ANSWER EXTENSIONS_HEADER " permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n"

/*
 * ADD_HEADERS of the 101 response, right after the line where lws
 * answered the accepted permessage-deflate offer: the line is rewritten
 * to ask for no context takeover both ways (RFC 7692 7.1.1: a server may
 * answer both even when the offer did not ask).  Then neither side keeps
 * a window between messages: the client's inflater frees its window after
 * each message, and ours (deflate_established) holds none while a
 * connection is idle, where a 15-bit window with context takeover, what
 * browsers offer, would keep 32 KB and zlib's state per connection.  Our
 * messages are compressed afresh each time anyway (frame.c).  Returns
 * false when the line is not where lws writes it.
 */
static bool
answer_deflate(struct lws_process_html_args *args)
{
	char	   *line_end = args->p - 2;
	char	   *line = line_end;
	size_t		answer_len = strlen(DEFLATE_ANSWER);

	if (memcmp(line_end, "\r\n", 2) != 0)
		return false;
	/* the response's status line ends with a newline before any header line */
	while (line[-1] != '\n')
		line--;
	if (strncasecmp(line, EXTENSIONS_HEADER, strlen(EXTENSIONS_HEADER)) != 0 ||
		answer_len > (size_t) (args->p - line) + (size_t) args->max_len)
		return false;
	memcpy(line, DEFLATE_ANSWER, answer_len);
	args->max_len -= (int) (line + answer_len - args->p);
	args->p = line + answer_len;
	return true;
}

/*
 * Once permessage-deflate is negotiated, before any data: makes lws's
 * inflater right.  lws 4.1.6 gets the server side backwards: it inflates
 * with the window of server_max_window_bits (the client compresses with
 * client_max_window_bits, which we never answer, hence 15 bits) and resets
 * the inflater after each message when server_no_context_takeover is set
 * (which is about our deflater).  So the server_* options set here are
 * the inflater's: the client's window, and a reset after each message, as
 * answer_deflate asked the client to start afresh for each.  lws's
 * deflater, configured by the client_* ones, is never used (connection.c
 * writes whole frames).
 */
static bool
deflate_established(struct lws *wsi)
{
	return lws_set_extension_option(wsi, "permessage-deflate", "server_max_window_bits", "15") == 0 &&
		lws_set_extension_option(wsi, "permessage-deflate", "server_no_context_takeover", "1") == 0;
}

static int
ws_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
	SocketData *socket_data;
	Handshake  *handshake;
	Connection *connection;

	/* their user is OpenSSL's, not a connection's */
	switch (reason)
	{
		case LWS_CALLBACK_OPENSSL_LOAD_EXTRA_SERVER_VERIFY_CERTS:
			tls_context_created(user);
			return 0;
		case LWS_CALLBACK_OPENSSL_PERFORM_CLIENT_CERT_VERIFICATION:
			/* len is OpenSSL's verdict against presence.ssl_ca_file; lws would take any */
			return len != 0 ? 0 : 1;
		default:
			break;
	}
	socket_data = user;
	handshake = socket_data ? socket_data->handshake : NULL;
	connection = socket_data ? socket_data->connection : NULL;
	switch (reason)
	{
		case LWS_CALLBACK_HTTP:
			return http_endpoint_serve(wsi, in ? (const char *) in : "/");

		case LWS_CALLBACK_HTTP_FILE_COMPLETION:
			return lws_http_transaction_completed(wsi) ? -1 : 0;

		case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
			return confirm_upgrade(wsi);

		case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
			if (socket_data == NULL || handshake != NULL ||
				(socket_data->handshake = calloc(1, sizeof(Handshake))) == NULL)
				return 1;
			read_handshake(wsi, socket_data->handshake);
			return 0;

		case LWS_CALLBACK_CONFIRM_EXTENSION_OKAY:
			return handshake ? confirm_deflate(wsi, handshake) : 1;

		case LWS_CALLBACK_ADD_HEADERS:
			/* a refusal (non-zero) here fails the upgrade, which no client could read */
			if (handshake && handshake->deflate_accepted && !answer_deflate(in))
				ereport(WARNING, (errmsg("presence: permessage-deflate answered without no_context_takeover")));
			return 0;

		case LWS_CALLBACK_WSI_DESTROY:
			if (lws_get_opaque_user_data(wsi))
				admission_done(lws_get_opaque_user_data(wsi));
			lws_set_opaque_user_data(wsi, NULL);
			if (handshake)
			{
				free(handshake);
				socket_data->handshake = NULL;
			}
			return 0;

		case LWS_CALLBACK_ESTABLISHED:
			if (lws_get_opaque_user_data(wsi))
				admission_upgraded(lws_get_opaque_user_data(wsi));
			if (handshake == NULL)
				return -1;
			if (!presence_connection_admit())
			{
				presence_count(CTR_CONNECTIONS_REFUSED, 1);
				lws_close_reason(wsi, (enum lws_close_status) 1013, (unsigned char *) "too many connections", 20);
				return -1;
			}
			connection = connection_open(wsi, handshake->ip, handshake->user_agent);
			if (connection == NULL)
			{
				presence_connection_release();
				return -1;
			}
			socket_data->connection = connection;
			presence_count(CTR_CONNECTIONS_OPENED, 1);
			if (presence_compression && handshake->deflate_accepted)
				connection->compressed = deflate_established(wsi);
			ws_handlers->opened(connection, handshake->header_token ? &handshake->verdict : NULL,
								&handshake->identity);
			free(handshake);
			socket_data->handshake = NULL;
			return 0;

		case LWS_CALLBACK_RECEIVE:
			if (connection == NULL)
				return -1;
			connection->last_heard_ms = presence_now_ms();
			return receive_chunk(wsi, connection, in, len);

		case LWS_CALLBACK_RECEIVE_PONG:
			if (connection)
				connection->last_heard_ms = presence_now_ms();
			return 0;

		case LWS_CALLBACK_SERVER_WRITEABLE:
			if (connection == NULL)
				return -1;
			return connection_write_next(connection);

		case LWS_CALLBACK_CLOSED:
			if (connection == NULL)
				return 0;
			if (connection->rx_len > 0)
				ws_partial_messages--;
			ws_handlers->closed(connection);
			socket_data->connection = NULL;
			presence_connection_release();
			connection_detach(connection);
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
ws_server_start(uv_loop_t *loop, const WsHandlers *handlers)
{
	struct lws_context_creation_info info;
	void	   *foreign_loops[1] = {loop};

	ws_handlers = handlers;
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
	info.retry_and_idle_policy = &no_lws_keepalive;
	info.timeout_secs = 30;
	info.max_http_header_data = 16384;
	/* one header table for every newcomer admission.c allows, so trickled
	 * headers cannot keep a legitimate client waiting for a table */
	info.max_http_header_pool = (unsigned short) Min(presence_max_unauthenticated + 1, 65535);
	info.timeout_secs_ah_idle = (presence_handshake_timeout_ms + 999) / 1000;
	admission_init(evict_newcomer);
	info.server_string = "presence";
	info.vhost_name = "presence";
	/* decided once: clearing the setting later must not turn the port to plain ws:// */
	ws_tls = tls_configured();
	if (ws_tls)
	{
		info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
		info.ssl_cert_filepath = presence_ssl_cert_file;
		info.ssl_private_key_filepath = presence_ssl_key_file;
		if (presence_ssl_ca_file && presence_ssl_ca_file[0])
		{
			info.ssl_ca_filepath = presence_ssl_ca_file;
			info.options |= LWS_SERVER_OPTION_REQUIRE_VALID_OPENSSL_CLIENT_CERT;
		}
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
	connection_drop_socket(socket);
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
		newcomer = admission_admit(address, proxy_is_trusted(address), presence_now_ms());
		if (newcomer == NULL)
		{
			presence_count(CTR_CONNECTIONS_REFUSED, 1);
			close(fd);
			continue;
		}
		descriptor.sockfd = fd;
		wsi = lws_adopt_descriptor_vhost(ws_vhost, LWS_ADOPT_SOCKET | LWS_ADOPT_HTTP |
										 (ws_tls ? LWS_ADOPT_ALLOW_SSL : 0),
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
ws_server_authenticated(Connection *connection)
{
	Newcomer   *newcomer = connection->wsi ? lws_get_opaque_user_data(connection->wsi) : NULL;

	if (newcomer)
	{
		lws_set_opaque_user_data(connection->wsi, NULL);
		admission_done(newcomer);
	}
}

/* Listens on the port every ws worker of the node shares (listen_socket.c). */
static bool
listen_shared(uv_loop_t *loop)
{
	ListenFailure failure;

	ws_listen_fd = listen_socket_bind(true, &failure);
	if (ws_listen_fd < 0)
		return false;
	if (listen(ws_listen_fd, SOMAXCONN) != 0)
	{
		int			save_errno = errno;

		close(ws_listen_fd);
		ws_listen_fd = -1;
		errno = save_errno;
		return false;
	}
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
	frame_deflater_end();
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

	dlist_foreach(iter, connections_all())
	{
		Connection *connection = dlist_container(Connection, all_node, iter.cur);

		if (!connection->authenticated)
		{
			if (now_ms - connection->opened_ms >= presence_auth_timeout_ms)
				connection_close(connection, 4008, "authentication timeout");
		}
		else if (now_ms / 1000 > connection->token_expires_at + presence_jwt_leeway_s)
			connection_close(connection, 4001, "token expired");
	}
}
