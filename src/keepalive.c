/*-------------------------------------------------------------------------
 * keepalive.c
 *	  Dead peers: a connection the worker has heard nothing from for
 *	  presence.ping_interval is sent a ping, and one that stays silent
 *	  for another interval after it is dropped.
 *
 * Each connection is visited once per interval, a share of them at every
 * pass of the event loop, round robin (connections_take_turn): the cost of a round is one
 * look at each connection, spread evenly over the interval however many
 * connections there are and however they arrived.  lws's own keepalive
 * (its retry and idle policy) keeps a timer per connection in one sorted
 * list that every re-arm walks from the start, so with connections opened
 * together a round of pings and pongs walked the list once per connection
 * and stalled the worker for seconds at 10,000 of them; ws_server.c turns
 * it off.
 *
 * A peer is heard whenever a frame arrives (ws_server.c), so clients that
 * send heartbeats are never pinged; the pings find the ones that stopped
 * without closing, and keep idle connections open through middleboxes.
 *-------------------------------------------------------------------------
 */
#include "presence.h"

#include "connection.h"
#include "frame.h"
#include "keepalive.h"
#include "shmem.h"

static int64 last_tick_ms;
static double turns_owed;		/* visits the elapsed time has earned, not made yet */

static void
visit(Connection *connection, int64 now_ms, int64 interval_ms)
{
	OutFrame   *ping;

	if (now_ms - connection->last_heard_ms < interval_ms)
		return;
	if (connection->ping_sent_ms <= connection->last_heard_ms)
	{
		if ((ping = frame_ping()) != NULL)
			connection_send_frame(connection, ping);
		connection->ping_sent_ms = now_ms;
	}
	else if (now_ms - connection->ping_sent_ms >= interval_ms)
	{
		presence_count(CTR_KEEPALIVE_DROPS, 1);
		connection_abort(connection);
	}
}

/*
 * Called every pass of the event loop; visits the share of connections
 * the time since the last call has earned.  Every pass, not every sweep:
 * a sweep's share of a short interval over many connections is
 * thousands of pings written at once, which held the loop for 10-20 ms
 * (p99 40 ms at 10,000 connections with a 1 s interval); a pass's share
 * is a few.  Idle, the loop still passes at least every sweep period.
 */
void
keepalive_tick(int64 now_ms)
{
	int64		interval_ms = (int64) presence_ping_interval_s * 1000;
	int			count = connections_count();
	int			visits;

	if (interval_ms <= 0 || count == 0 || last_tick_ms == 0)
	{
		last_tick_ms = now_ms;
		turns_owed = 0;
		return;
	}
	turns_owed = Min(turns_owed + (double) count * (now_ms - last_tick_ms) / interval_ms, count);
	last_tick_ms = now_ms;
	visits = (int) turns_owed;
	turns_owed -= visits;
	while (visits-- > 0)
		visit(connections_take_turn(), now_ms, interval_ms);
}
