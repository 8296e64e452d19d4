/*-------------------------------------------------------------------------
 * audit_chain.h
 *	  What the ws workers use of the audit chain: its per-session lock.
 *-------------------------------------------------------------------------
 */
#ifndef PRESENCE_AUDIT_CHAIN_H
#define PRESENCE_AUDIT_CHAIN_H

#include "utils/uuid.h"

extern bool audit_chain_try_lock_session(const pg_uuid_t *session);

#endif							/* PRESENCE_AUDIT_CHAIN_H */
