/*-------------------------------------------------------------------------
 * listen_socket.c
 *	  Binding presence.listen_address:presence.port, the one way both the
 *	  postmaster (is the port free?) and the ws workers (listen on it) do.
 *
 * The ws workers bind with SO_REUSEPORT, so every worker of the node
 * listens on the same port and the kernel spreads connections over them
 * (lws 4.1 sets SO_REUSEPORT on no platform, so it cannot listen for us).
 * That would also let a second server configured with the same port
 * silently share it; a bind without SO_REUSEPORT fails while anyone
 * listens there, which is how the postmaster checks first.
 *-------------------------------------------------------------------------
 */
#include "presence.h"

#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include "listen_socket.h"

/*
 * A non-blocking socket bound to the configured address and port, with
 * SO_REUSEPORT when share_port; -1 on failure, with errno set and
 * *failure saying which step failed.
 */
int
listen_socket_bind(bool share_port, ListenFailure *failure)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
	struct addrinfo *address = NULL;
	char		port[16];
	int			one = 1;
	int			fd;

	*failure = LISTEN_OK;
	snprintf(port, sizeof(port), "%d", presence_port);
	if (getaddrinfo(presence_listen_address[0] ? presence_listen_address : NULL, port, &hints, &address) != 0)
	{
		*failure = LISTEN_BAD_ADDRESS;
		errno = EADDRNOTAVAIL;
		return -1;
	}
	fd = socket(address->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0 ||
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
		(share_port && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) ||
		bind(fd, address->ai_addr, address->ai_addrlen) != 0)
	{
		int			save_errno = errno;

		if (fd >= 0)
			close(fd);
		fd = -1;
		*failure = LISTEN_BIND_FAILED;
		errno = save_errno;
	}
	freeaddrinfo(address);
	return fd;
}
