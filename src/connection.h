/*-------------------------------------------------------------------------
 * connection.h
 *	  One WebSocket client as every layer of a ws worker sees it: the
 *	  transport (ws_server.c), request handling (requests.c) and the live
 *	  state (live_state.c).
 *
 * A Connection is reference counted: the activity queue holds one for
 * each row that waits to be acknowledged, so an ack after commit never
 * touches freed memory when the client has gone meanwhile.
 *-------------------------------------------------------------------------
 */
#ifndef PRESENCE_CONNECTION_H
#define PRESENCE_CONNECTION_H

#include "presence.h"

#include "lib/ilist.h"

#include "auth.h"

struct lws;
typedef struct OutFrame OutFrame;

typedef struct Connection
{
	struct lws *wsi;			/* NULL once closed */
	int			refs;
	uint64		serial;
	char		id[96];			/* node:worker:serial */
	bool		authenticated;
	char		user_id[PRESENCE_UUID_LEN + 1];
	char		username[PRESENCE_USERNAME_MAX + 1];
	int64		token_expires_at;	/* Unix seconds */
	char		ip[64];
	char		user_agent[256];
	int64		opened_ms;
	int64		last_message_ms;
	bool		silent;			/* heartbeat timeout fired */
	int			close_code;		/* non-zero: close on the next WRITEABLE */
	bool		closing;		/* the closing handshake has started */
	char		close_reason[120];

	/* token bucket (presence.rate_limit, burst 2x) and abuse window */
	double		tokens;
	int64		tokens_at_ms;
	int64		abuse_window_start_ms;
	int			abuse_window_messages;

	dlist_head	memberships;	/* Membership.connection_node */
	dlist_node	all_node;		/* the worker's list of connections */

	/* outbound frames waiting for WRITEABLE, oldest first */
	OutFrame  **out;
	int			out_head;
	int			out_count;
	int			out_capacity;
	size_t		out_bytes;

	/* a message being reassembled from fragments */
	char	   *rx;
	size_t		rx_len;
	size_t		rx_capacity;
} Connection;

extern void connection_hold(Connection *connection);
extern void connection_release(Connection *connection);

#endif							/* PRESENCE_CONNECTION_H */
