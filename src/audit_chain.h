/*-------------------------------------------------------------------------
 * audit_chain.h
 *	  What the rest of the module uses of the audit chain: its
 *	  per-session lock (the ws workers), activity ids, the head a
 *	  checkpoint signs.
 *-------------------------------------------------------------------------
 */
#ifndef PRESENCE_AUDIT_CHAIN_H
#define PRESENCE_AUDIT_CHAIN_H

#include "common/sha2.h"
#include "datatype/timestamp.h"
#include "utils/uuid.h"

/* Columns hashed as text, in order: id, session_id, user_id, activity_type, details, ip_address, user_agent. */
#define AUDIT_CHAIN_FIELDS 7

extern void audit_chain_lock_session(const pg_uuid_t *session);
extern bool audit_chain_try_lock_session(const pg_uuid_t *session);
extern void audit_chain_new_id(pg_uuid_t *id);
extern bytea *bytea_from_bytes(const uint8 *bytes, size_t len);
extern void audit_chain_head_at(const pg_uuid_t *session, int64 *seq, uint8 *hash, TimestampTz *at);
extern void audit_chain_append(const pg_uuid_t *session, const char *const *fields,
							   const TimestampTz *created_at, int64 *seq, uint8 *prev_hash,
							   uint8 *row_hash);

#endif							/* PRESENCE_AUDIT_CHAIN_H */
