/*-------------------------------------------------------------------------
 * connection.h
 *	  One WebSocket client as every layer of a ws worker sees it, and the
 *	  frames queued for it.  connection.c owns both: the transport
 *	  (ws_server.c) opens and detaches connections, everyone else sends
 *	  and closes through the functions here.
 *
 * A Connection is reference counted: the activity queue and a write
 * waiting for the primary hold one, so an answer after the client has
 * gone never touches freed memory (connection_is_open says whether
 * anyone is still there to hear it).
 *-------------------------------------------------------------------------
 */
#ifndef PRESENCE_CONNECTION_H
#define PRESENCE_CONNECTION_H

#include "presence.h"

#include <jansson.h>

#include "lib/ilist.h"

#include "auth.h"
#include "frame.h"

struct lws;

#define CONNECTION_ID_MAX 95
#define CONNECTION_IP_MAX 63
#define CONNECTION_USER_AGENT_MAX 255
#define CONNECTION_CLOSE_REASON_MAX 119

typedef struct Connection
{
	/* what every delivery reads (connection_send_frame), together in front */
	struct lws *wsi;			/* NULL once closed */
	uint64		serial;
	int			close_code;		/* non-zero: close on the next WRITEABLE */
	bool		compressed;		/* permessage-deflate was negotiated */
	bool		closing;		/* the closing handshake has started */
	int			refs;

	/* outbound frames waiting for WRITEABLE, oldest first */
	OutFrame  **out;
	int			out_head;
	int			out_count;
	int			out_capacity;
	size_t		out_bytes;

	/* then what the sweeps read of every connection */
	dlist_node	all_node;		/* connections_all() */
	dlist_head	memberships;	/* live_state.c's Membership.connection_node */
	bool		authenticated;
	bool		silent;			/* heartbeat timeout fired */
	int64		opened_ms;
	int64		last_message_ms;
	int64		token_expires_at;	/* Unix seconds */
	int64		last_heard_ms;	/* any frame, pongs included (keepalive.c) */
	int64		ping_sent_ms;	/* the last keepalive ping; outstanding while after last_heard_ms */

	char		id[CONNECTION_ID_MAX + 1];	/* node:worker.start:serial */
	char		user_id[PRESENCE_UUID_LEN + 1];
	char		username[PRESENCE_USERNAME_MAX + 1];
	char		ip[CONNECTION_IP_MAX + 1];
	char	   *user_agent;		/* at most CONNECTION_USER_AGENT_MAX bytes */
	char		close_reason[CONNECTION_CLOSE_REASON_MAX + 1];

	/* token bucket (presence.rate_limit, burst 2x) and abuse window */
	double		tokens;
	int64		tokens_at_ms;
	int64		abuse_window_start_ms;
	int			abuse_window_messages;

	/* a message being reassembled from fragments (ws_server.c) */
	char	   *rx;
	size_t		rx_len;
	size_t		rx_capacity;
} Connection;

extern void connections_init(const char *origin);
extern Connection *connection_open(struct lws *wsi, const char *ip, const char *user_agent);
extern void connection_detach(Connection *connection);
extern void connection_hold(Connection *connection);
extern void connection_release(Connection *connection);
extern bool connection_is_open(const Connection *connection);

extern void connection_send_frame(Connection *connection, OutFrame *frame);
extern void connection_send_json(Connection *connection, json_t *message);
extern void connection_close(Connection *connection, int code, const char *reason);
extern int	connection_write_next(Connection *connection);
extern bool connection_rate_allows(Connection *connection, int64 now_ms);

extern void connection_abort(Connection *connection);
extern void connection_drop_socket(struct lws *wsi);

extern dlist_head *connections_all(void);
extern int	connections_count(void);
extern Connection *connections_take_turn(void);
extern void connections_close_all(int code, const char *reason);

#endif							/* PRESENCE_CONNECTION_H */
