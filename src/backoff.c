/*-------------------------------------------------------------------------
 * backoff.c
 *	  Reconnect waits for the ws worker's links (Redis, the primary):
 *	  first_ms doubling to cap_ms, with jitter, back to first_ms after a
 *	  success.
 *
 * The links are a server's own few connections to its infrastructure,
 * not a crowd of clients: their cap is about a second, so the link is
 * back within that of its server answering however long the outage
 * was.  The jitter (each wait drawn from its upper half) keeps the
 * workers of every node from reconnecting in lockstep.
 *
 * The failure count also tells a link whether a failure starts an
 * outage or continues one, so each outage is logged once.
 *-------------------------------------------------------------------------
 */
#include "presence.h"

#include "common/pg_prng.h"

#include "backoff.h"

/*
 * Counts a failure and returns how long to wait (ms) before the next
 * attempt: between half and all of first_ms * 2^(failures so far),
 * never more than cap_ms.
 */
uint64
backoff_next_delay(Backoff *backoff)
{
	uint64		delay = (uint64) backoff->first_ms << Min(backoff->failures, 16);

	delay = Min(delay, (uint64) backoff->cap_ms);
	if (backoff->failures < PG_INT32_MAX)
		backoff->failures++;
	return pg_prng_uint64_range(&pg_global_prng_state, delay / 2, delay);
}

/* A success: the next failure waits first_ms again.  Returns whether an outage ended. */
bool
backoff_succeeded(Backoff *backoff)
{
	bool		was_failing = backoff_in_outage(backoff);

	backoff->failures = 0;
	return was_failing;
}
