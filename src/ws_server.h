/*-------------------------------------------------------------------------
 * ws_server.h
 *	  The libwebsockets side of a ws worker: the listening vhost, HTTP
 *	  endpoints, frames in and out.
 *-------------------------------------------------------------------------
 */
#ifndef PRESENCE_WS_SERVER_H
#define PRESENCE_WS_SERVER_H

#include <jansson.h>
#include <uv.h>

#include "connection.h"

/*
 * A serialised server message shared by every connection it goes to, as
 * whole WebSocket frames: plain (the header in the LWS_PRE headroom before
 * payload) and, made when a connection first needs it, compressed.
 */
struct OutFrame
{
	int			refs;
	int64		created_us;		/* when its oldest event happened; 0 for replies */
	int			type_index;		/* server_message_types[] index, for /metrics */
	size_t		len;
	unsigned char *payload;		/* points LWS_PRE bytes into buffer */
	unsigned char *wire;		/* the plain frame: header, then payload */
	size_t		wire_len;
	bool		deflate_tried;	/* deflated is made, or not worth making */
	unsigned char *deflated;	/* the permessage-deflate frame, or NULL */
	size_t		deflated_len;
	unsigned char buffer[FLEXIBLE_ARRAY_MEMBER];
};

extern OutFrame *frame_from_json(json_t *message, int64 created_us);
extern void frame_release(OutFrame *frame);
extern void ws_send_frame(Connection *connection, OutFrame *frame);
extern void ws_send_json(Connection *connection, json_t *message);
extern void ws_close(Connection *connection, int code, const char *reason);

extern bool ws_server_start(uv_loop_t *loop, int worker_index);
extern void ws_server_stop_listening(void);
extern void ws_server_close_all(int code, const char *reason);
extern void ws_server_destroy(void);
extern void ws_server_sweep(int64 now_ms);
extern void ws_connection_authenticated(Connection *connection);
extern void ws_server_service_pending(void);
extern dlist_head *ws_server_connections(void);
extern const char *ws_server_node_id(void);
extern const char *ws_server_origin(void);


#endif							/* PRESENCE_WS_SERVER_H */
