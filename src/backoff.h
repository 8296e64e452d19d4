/*-------------------------------------------------------------------------
 * backoff.h
 *	  How long a worker's link waits before trying its server again.
 *-------------------------------------------------------------------------
 */
#ifndef PRESENCE_BACKOFF_H
#define PRESENCE_BACKOFF_H

#include "presence.h"

typedef struct Backoff
{
	int			first_ms;		/* the wait after the first failure */
	int			cap_ms;			/* no wait is longer */
	int			failures;		/* consecutive, since the last success */
} Backoff;

#define BACKOFF_INIT(first_ms, cap_ms) {(first_ms), (cap_ms), 0}

extern uint64 backoff_next_delay(Backoff *backoff);
extern bool backoff_succeeded(Backoff *backoff);

/* Whether failures were counted since the last success: an outage is under way. */
static inline bool
backoff_in_outage(const Backoff *backoff)
{
	return backoff->failures > 0;
}

#endif							/* PRESENCE_BACKOFF_H */
