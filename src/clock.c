/*-------------------------------------------------------------------------
 * clock.c
 *	  Wall-clock time as every part of presence reads it: Unix time,
 *	  because it goes on the wire (lastSeen, createdAt, serverTime), into
 *	  Redis (shared by nodes) and into the log.  One place, so the
 *	  transport, the Redis and primary links and the maintenance worker
 *	  need nothing of each other to tell the time.
 *-------------------------------------------------------------------------
 */
#include "presence.h"

#include <sys/time.h>

#include "clock.h"

int64
presence_now_us(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return (int64) tv.tv_sec * 1000000 + tv.tv_usec;
}

int64
presence_now_ms(void)
{
	return presence_now_us() / 1000;
}
