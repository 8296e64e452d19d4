/*-------------------------------------------------------------------------
 * requests.h
 *	  What client messages mean: the handlers ws_worker.c gives the
 *	  transport and the activity queue.
 *-------------------------------------------------------------------------
 */
#ifndef PRESENCE_REQUESTS_H
#define PRESENCE_REQUESTS_H

#include "activity.h"
#include "ws_server.h"

extern const WsHandlers requests_ws_handlers;
extern const ActivityHandlers requests_activity_handlers;

extern void requests_participant_changed(const char *session_id, const char *user_id);

#endif							/* PRESENCE_REQUESTS_H */
