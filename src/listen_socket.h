/*-------------------------------------------------------------------------
 * listen_socket.h
 *	  The socket on presence.listen_address:presence.port.
 *-------------------------------------------------------------------------
 */
#ifndef PRESENCE_LISTEN_SOCKET_H
#define PRESENCE_LISTEN_SOCKET_H

#include <stdbool.h>

/* What listen_socket_bind could not do: nothing, resolve the address, or bind. */
typedef enum ListenFailure
{
	LISTEN_OK,
	LISTEN_BAD_ADDRESS,
	LISTEN_BIND_FAILED
} ListenFailure;

extern int	listen_socket_bind(bool share_port, ListenFailure *failure);

#endif							/* PRESENCE_LISTEN_SOCKET_H */
