/*-------------------------------------------------------------------------
 * ws_server.h
 *	  The libwebsockets side of a ws worker: the listening socket, the
 *	  handshake, whole messages in.
 *-------------------------------------------------------------------------
 */
#ifndef PRESENCE_WS_SERVER_H
#define PRESENCE_WS_SERVER_H

#include <uv.h>

#include "auth.h"
#include "connection.h"

/*
 * What the transport calls up into, from inside lws callbacks (so none
 * of them may raise a PostgreSQL error).
 */
typedef struct WsHandlers
{
	/*
	 * A WebSocket is open.  header_verdict is the verdict on a Bearer
	 * token in the Authorization header, NULL when there was none; with
	 * JWT_VALID, identity is the token's.
	 */
	void		(*opened) (Connection *connection, const JwtVerdict *header_verdict,
						   const JwtIdentity *identity);
	/* A whole text message (fragments reassembled), not yet rate limited. */
	void		(*message) (Connection *connection, const char *text, size_t len);
	/* The socket is gone; the connection is detached right after. */
	void		(*closed) (Connection *connection);
} WsHandlers;

extern bool ws_server_start(uv_loop_t *loop, const WsHandlers *handlers);
extern void ws_server_authenticated(Connection *connection);
extern void ws_server_stop_listening(void);
extern void ws_server_destroy(void);
extern void ws_server_sweep(int64 now_ms);
extern void ws_server_service_pending(void);

#endif							/* PRESENCE_WS_SERVER_H */
