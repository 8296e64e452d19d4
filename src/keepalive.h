/*-------------------------------------------------------------------------
 * keepalive.h
 *	  Finding dead peers: pings to connections that have gone quiet.
 *-------------------------------------------------------------------------
 */
#ifndef PRESENCE_KEEPALIVE_H
#define PRESENCE_KEEPALIVE_H

#include "presence.h"

extern void keepalive_tick(int64 now_ms);

#endif							/* PRESENCE_KEEPALIVE_H */
