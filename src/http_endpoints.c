/*-------------------------------------------------------------------------
 * http_endpoints.c
 *	  Plain HTTP on the ws port: /healthz (every worker's database and
 *	  Redis state), /metrics (the node's counters in the Prometheus text
 *	  format), both behind presence.metrics_loopback_only and
 *	  presence.metrics_token, and the files of presence.static_dir.
 *
 * ws_server.c hands every HTTP request that is not an upgrade here; all
 * of it reads shared memory or the file system, none of it the
 * connections of this worker.  Like every lws callback, nothing here
 * raises a PostgreSQL error.
 *-------------------------------------------------------------------------
 */
#include "presence.h"

#include <arpa/inet.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <libwebsockets.h>

#include "http_endpoints.h"
#include "protocol.h"
#include "redis_layout.h"
#include "shmem.h"

static int
http_respond(struct lws *wsi, int status, const char *content_type, const char *body, size_t len)
{
	unsigned char buffer[LWS_PRE + 1024];
	unsigned char *start = buffer + LWS_PRE;
	unsigned char *p = start;
	unsigned char *end = buffer + sizeof(buffer) - 1;

	if (lws_add_http_common_headers(wsi, (unsigned int) status, content_type, (lws_filepos_t) len, &p, end) ||
		lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CACHE_CONTROL,
									 (const unsigned char *) "no-store", 8, &p, end) ||
		lws_finalize_write_http_header(wsi, start, &p, end))
		return -1;
	if (len > 0)
	{
		unsigned char *copy = malloc(LWS_PRE + len);
		int			written;

		if (copy == NULL)
			return -1;
		memcpy(copy + LWS_PRE, body, len);
		written = lws_write(wsi, copy + LWS_PRE, len, LWS_WRITE_HTTP_FINAL);
		free(copy);
		if (written < (int) len)
			return -1;
	}
	return lws_http_transaction_completed(wsi) ? -1 : 0;
}

/* Appends printf output to a growing malloc'd buffer. */
static void
append(char **buffer, size_t *len, size_t *capacity, const char *format,...)
	pg_attribute_printf(4, 5);

static void
append(char **buffer, size_t *len, size_t *capacity, const char *format,...)
{
	va_list		args;
	int			needed;

	if (*buffer == NULL)
		return;
	va_start(args, format);
	needed = vsnprintf(*buffer + *len, *capacity - *len, format, args);
	va_end(args);
	if (needed < 0)
		return;
	if ((size_t) needed >= *capacity - *len)
	{
		size_t		capacity_needed = Max(*capacity * 2, *len + needed + 1);
		char	   *grown = realloc(*buffer, capacity_needed);

		if (grown == NULL)
		{
			free(*buffer);
			*buffer = NULL;
			return;
		}
		*buffer = grown;
		*capacity = capacity_needed;
		va_start(args, format);
		vsnprintf(*buffer + *len, *capacity - *len, format, args);
		va_end(args);
	}
	*len += needed;
}

/* Prometheus text exposition of the node's counters (all workers). */
static int
serve_metrics(struct lws *wsi)
{
	static const struct
	{
		PresenceCounter counter;
		const char *name;
		const char *help;
	}			counters[] = {
		{CTR_MESSAGES_IN, "presence_messages_in_total", "Client messages received."},
		{CTR_MESSAGES_OUT, "presence_messages_out_total", "Frames sent to clients."},
		{CTR_CONNECTIONS_OPENED, "presence_connections_opened_total", "WebSocket connections accepted."},
		{CTR_CONNECTIONS_REFUSED, "presence_connections_refused_total", "Upgrades refused (origin, limit, path)."},
		{CTR_AUTH_FAILURES, "presence_auth_failures_total", "Connections closed for failed authentication."},
		{CTR_HEARTBEATS_MISSED, "presence_heartbeat_timeouts_total", "Connections that went silent."},
		{CTR_KEEPALIVE_DROPS, "presence_keepalive_drops_total", "Connections dropped for not answering a ping."},
		{CTR_ERRORS_SENT, "presence_errors_total", "Error replies sent."},
		{CTR_ACTIVITY_QUEUED, "presence_activity_queued_total", "Activity rows queued by workers."},
		{CTR_ACTIVITY_WRITTEN, "presence_activity_written_total", "Activity rows committed by workers."},
		{CTR_REDIS_ERRORS, "presence_redis_errors_total", "Redis errors."},
		{CTR_COMMANDS_DROPPED, "presence_live_entries_dropped_total", "Live users online_users() could not list (table full)."},
		{CTR_BYTES_IN, "presence_bytes_in_total", "Payload bytes received."},
		{CTR_BYTES_OUT, "presence_bytes_out_total", "Payload bytes sent."},
	};
	static const struct
	{
		CountedTable table;
		const char *name;
		const char *help;
		const char *label;
		const char *const *names;
		int			count;
	}			counted[] = {
		{COUNTED_REQUESTS, "presence_messages_in_by_type_total", "Client messages by type.", "type",
		request_type_names, REQ_TYPE_COUNT},
		{COUNTED_SERVER_MESSAGES, "presence_messages_out_by_type_total", "Frames sent by message type.", "type",
		server_message_types, SERVER_MESSAGE_TYPES},
		{COUNTED_ERRORS, "presence_errors_by_code_total", "Error replies by code.", "code",
		protocol_error_codes, PROTOCOL_ERROR_CODES},
	};
	size_t		len = 0,
				capacity = 8192;
	char	   *body = malloc(capacity);
	uint64		buckets[LATENCY_BUCKETS];
	uint64		count,
				cumulative = 0;
	int64		sum_us;
	NodeGauges	gauges;
	int			status;

	if (body == NULL)
		return -1;
	body[0] = '\0';
	presence_node_gauges(&gauges);
	append(&body, &len, &capacity,
		   "# HELP presence_connections Open WebSocket connections on this node.\n"
		   "# TYPE presence_connections gauge\npresence_connections %d\n"
		   "# HELP presence_sessions Sessions with joined clients on this node.\n"
		   "# TYPE presence_sessions gauge\npresence_sessions " INT64_FORMAT "\n"
		   "# HELP presence_users Users present in sessions on this node.\n"
		   "# TYPE presence_users gauge\npresence_users " INT64_FORMAT "\n"
		   "# HELP presence_workers Running ws workers.\n"
		   "# TYPE presence_workers gauge\npresence_workers %d\n",
		   gauges.connections, gauges.sessions, gauges.users, gauges.workers);
	for (size_t i = 0; i < lengthof(counters); i++)
		append(&body, &len, &capacity, "# HELP %s %s\n# TYPE %s counter\n%s " UINT64_FORMAT "\n",
			   counters[i].name, counters[i].help, counters[i].name, counters[i].name,
			   presence_counter_value(counters[i].counter));
	for (size_t t = 0; t < lengthof(counted); t++)
	{
		append(&body, &len, &capacity, "# HELP %s %s\n# TYPE %s counter\n",
			   counted[t].name, counted[t].help, counted[t].name);
		for (int i = 0; i < counted[t].count; i++)
			append(&body, &len, &capacity, "%s{%s=\"%s\"} " UINT64_FORMAT "\n", counted[t].name,
				   counted[t].label, counted[t].names[i], presence_typed_count(counted[t].table, i));
	}
	presence_latency_snapshot(buckets, &count, &sum_us);
	append(&body, &len, &capacity,
		   "# HELP presence_fanout_latency_seconds From event to the write of each delivery.\n"
		   "# TYPE presence_fanout_latency_seconds histogram\n");
	for (int i = 0; i < LATENCY_BUCKETS; i++)
	{
		cumulative += buckets[i];
		if (i == LATENCY_BUCKETS - 1)
			append(&body, &len, &capacity, "presence_fanout_latency_seconds_bucket{le=\"+Inf\"} " UINT64_FORMAT "\n",
				   cumulative);
		else
			append(&body, &len, &capacity, "presence_fanout_latency_seconds_bucket{le=\"%g\"} " UINT64_FORMAT "\n",
				   (double) presence_latency_bounds_us[i] / 1e6, cumulative);
	}
	append(&body, &len, &capacity, "presence_fanout_latency_seconds_sum %.6f\npresence_fanout_latency_seconds_count " UINT64_FORMAT "\n",
		   (double) sum_us / 1e6, count);
	if (body == NULL)
		return -1;
	status = http_respond(wsi, HTTP_STATUS_OK, "text/plain; version=0.0.4", body, len);
	free(body);
	return status;
}

static const char *
content_type_for(const char *path)
{
	static const struct
	{
		const char *suffix;
		const char *type;
	}			types[] = {
		{".html", "text/html; charset=utf-8"}, {".js", "text/javascript; charset=utf-8"},
		{".mjs", "text/javascript; charset=utf-8"}, {".css", "text/css; charset=utf-8"},
		{".json", "application/json"}, {".svg", "image/svg+xml"}, {".png", "image/png"},
		{".ico", "image/x-icon"}, {".txt", "text/plain; charset=utf-8"}, {".map", "application/json"},
	};
	size_t		len = strlen(path);

	for (size_t i = 0; i < lengthof(types); i++)
	{
		size_t		suffix_len = strlen(types[i].suffix);

		if (len > suffix_len && strcmp(path + len - suffix_len, types[i].suffix) == 0)
			return types[i].type;
	}
	return "application/octet-stream";
}

/*
 * A file under presence.static_dir.  The resolved path (symlinks
 * followed) must stay inside the directory: no "..", no symlink out.
 */
static int
serve_static(struct lws *wsi, const char *uri)
{
	char		root[PATH_MAX];
	char		wanted[PATH_MAX * 2];
	char		resolved[PATH_MAX];
	struct stat st;
	size_t		root_len;
	int			n;

	if (presence_static_dir == NULL || presence_static_dir[0] == '\0' ||
		realpath(presence_static_dir, root) == NULL || strstr(uri, "..") != NULL || uri[0] != '/')
		return http_respond(wsi, HTTP_STATUS_NOT_FOUND, "text/plain", "not found\n", 10);
	snprintf(wanted, sizeof(wanted), "%s%s%s", root, uri,
			 uri[strlen(uri) - 1] == '/' ? "index.html" : "");
	root_len = strlen(root);
	if (realpath(wanted, resolved) == NULL || strncmp(resolved, root, root_len) != 0 ||
		resolved[root_len] != '/' || stat(resolved, &st) != 0 || !S_ISREG(st.st_mode))
		return http_respond(wsi, HTTP_STATUS_NOT_FOUND, "text/plain", "not found\n", 10);
	n = lws_serve_http_file(wsi, resolved, content_type_for(resolved), NULL, 0);
	if (n < 0 || (n > 0 && lws_http_transaction_completed(wsi)))
		return -1;
	return 0;
}

/* Whether the peer is this machine: 127.0.0.0/8, ::1, or 127/8 mapped into IPv6. */
static bool
peer_is_loopback(struct lws *wsi)
{
	char		peer[64];
	struct in_addr v4;
	struct in6_addr v6;

	lws_get_peer_simple(wsi, peer, sizeof(peer));
	if (inet_pton(AF_INET, peer, &v4) == 1)
		return (ntohl(v4.s_addr) >> 24) == 127;
	if (inet_pton(AF_INET6, peer, &v6) == 1)
		return IN6_IS_ADDR_LOOPBACK(&v6) ||
			(IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127);
	return false;
}

/*
 * May this request read /healthz and /metrics?  presence.metrics_loopback_only
 * keeps them to this machine, presence.metrics_token to who sends it as a
 * bearer token (compared in constant time).  Refusals are answered here.
 */
static bool
monitoring_allowed(struct lws *wsi, int *status)
{
	char		authorization[256];
	const char *token = presence_metrics_token ? presence_metrics_token : "";
	size_t		token_len = strlen(token);
	unsigned char difference = 0;

	if (presence_metrics_loopback_only && !peer_is_loopback(wsi))
	{
		*status = http_respond(wsi, HTTP_STATUS_FORBIDDEN, "text/plain", "forbidden\n", 10);
		return false;
	}
	if (token_len == 0)
		return true;
	if (lws_hdr_copy(wsi, authorization, sizeof(authorization), WSI_TOKEN_HTTP_AUTHORIZATION) < 0 ||
		strncasecmp(authorization, "Bearer ", 7) != 0 || strlen(authorization + 7) != token_len)
		difference = 1;
	else
		for (size_t i = 0; i < token_len; i++)
			difference |= (unsigned char) (authorization[7 + i] ^ token[i]);
	if (difference != 0)
	{
		*status = http_respond(wsi, HTTP_STATUS_UNAUTHORIZED, "text/plain", "unauthorized\n", 13);
		return false;
	}
	return true;
}

/* LWS_CALLBACK_HTTP: /healthz, /metrics, else a file of presence.static_dir. */
int
http_endpoint_serve(struct lws *wsi, const char *uri)
{
	int			status;

	if ((strcmp(uri, "/healthz") == 0 || strcmp(uri, "/metrics") == 0) && !monitoring_allowed(wsi, &status))
		return status;
	if (strcmp(uri, "/healthz") == 0)
	{
		NodeGauges	gauges;

		presence_node_gauges(&gauges);
		if (!gauges.databases_ready)
			return http_respond(wsi, HTTP_STATUS_SERVICE_UNAVAILABLE, "text/plain",
								"degraded: database unavailable\n", 30);
		if (redis_configured() && !gauges.redis_connected)
			return http_respond(wsi, HTTP_STATUS_SERVICE_UNAVAILABLE, "text/plain",
								"degraded: redis unavailable\n", 27);
		return http_respond(wsi, HTTP_STATUS_OK, "text/plain", "ok\n", 3);
	}
	if (strcmp(uri, "/metrics") == 0)
		return serve_metrics(wsi);
	return serve_static(wsi, uri);
}

