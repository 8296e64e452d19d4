/*-------------------------------------------------------------------------
 * admission.c
 *	  Who may hold a socket of a ws worker before authenticating.
 *
 * A socket is a newcomer from accept until its client has authenticated
 * (or it is gone): while it sends the HTTP upgrade, and after the upgrade
 * until its token is checked.  Newcomers cost the worker an lws header
 * table each and do nothing useful, so they are bounded on their own,
 * apart from authenticated connections:
 *   - per source address (presence.max_unauthenticated_per_address): a
 *     crowd from one address is refused at accept, and cannot lock out
 *     anyone else;
 *   - per worker (presence.max_unauthenticated): at the bound the oldest
 *     newcomer is evicted to make room, so a flood from many addresses
 *     delays a legitimate client by one handshake, never refuses it;
 *   - in time: a socket still in its HTTP upgrade after
 *     presence.handshake_timeout is closed (slow or trickled headers);
 *     after the upgrade presence.auth_timeout applies (ws_server.c).
 * The list is kept oldest first, so the sweep and the eviction look only
 * at its head.  This file knows nothing of libwebsockets: the transport
 * hands it an opaque socket and a function that evicts one.
 *-------------------------------------------------------------------------
 */
#include "presence.h"

#include "lib/ilist.h"

#include "admission.h"
#include "shmem.h"

struct Newcomer
{
	dlist_node	node;			/* in admission_newcomers while listed */
	bool		listed;			/* false once evicted: only admission_done remains */
	bool		upgraded;		/* past the HTTP upgrade: the handshake deadline is over */
	void	   *socket;
	int64		accepted_ms;
	char		address[64];
};

static dlist_head admission_newcomers = DLIST_STATIC_INIT(admission_newcomers);
static int	admission_listed;
static NewcomerEvict admission_evict;

void
admission_init(NewcomerEvict evict)
{
	admission_evict = evict;
}

/* Takes a newcomer off the list and has its socket closed. */
static void
evict(Newcomer *newcomer)
{
	dlist_delete(&newcomer->node);
	newcomer->listed = false;
	admission_listed--;
	presence_count(CTR_CONNECTIONS_REFUSED, 1);
	if (newcomer->socket)
		admission_evict(newcomer->socket);
}

/*
 * A socket was accepted from address.  Returns its record, or NULL when
 * the address already holds its share of newcomers (the caller closes
 * the socket); a trusted proxy (proxies.c) speaks for many clients and
 * has no share of its own.  At the worker's bound the oldest newcomer
 * makes room.
 */
Newcomer *
admission_admit(const char *address, bool from_proxy, int64 now_ms)
{
	dlist_iter	iter;
	int			same_address = 0;
	Newcomer   *newcomer;

	if (!from_proxy)
	{
		dlist_foreach(iter, &admission_newcomers)
			if (strcmp(dlist_container(Newcomer, node, iter.cur)->address, address) == 0)
				same_address++;
		if (same_address >= presence_max_unauthenticated_per_address)
			return NULL;
	}
	newcomer = calloc(1, sizeof(Newcomer));
	if (newcomer == NULL)
		return NULL;
	if (admission_listed >= presence_max_unauthenticated)
		evict(dlist_container(Newcomer, node, dlist_head_node(&admission_newcomers)));
	newcomer->listed = true;
	newcomer->accepted_ms = now_ms;
	strlcpy(newcomer->address, address, sizeof(newcomer->address));
	dlist_push_tail(&admission_newcomers, &newcomer->node);
	admission_listed++;
	return newcomer;
}

/* The transport's socket for a newcomer admitted a moment ago. */
void
admission_bind(Newcomer *newcomer, void *socket)
{
	newcomer->socket = socket;
}

/* The upgrade is done; only the authentication deadline is left. */
void
admission_upgraded(Newcomer *newcomer)
{
	newcomer->upgraded = true;
}

/* The newcomer authenticated, or its socket is gone. */
void
admission_done(Newcomer *newcomer)
{
	if (newcomer->listed)
	{
		dlist_delete(&newcomer->node);
		admission_listed--;
	}
	free(newcomer);
}

/* Closes the sockets still in their HTTP upgrade past the handshake timeout. */
void
admission_sweep(int64 now_ms)
{
	dlist_mutable_iter iter;

	dlist_foreach_modify(iter, &admission_newcomers)
	{
		Newcomer   *newcomer = dlist_container(Newcomer, node, iter.cur);

		if (now_ms - newcomer->accepted_ms < presence_handshake_timeout_ms)
			break;
		if (!newcomer->upgraded)
			evict(newcomer);
	}
}
