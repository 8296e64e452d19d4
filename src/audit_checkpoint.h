/*-------------------------------------------------------------------------
 * audit_checkpoint.h
 *	  Signed audit checkpoints: what the maintenance worker and
 *	  verify_audit_chain use of them.
 *-------------------------------------------------------------------------
 */
#ifndef PRESENCE_AUDIT_CHECKPOINT_H
#define PRESENCE_AUDIT_CHECKPOINT_H

#include <openssl/evp.h>

#include "common/sha2.h"
#include "datatype/timestamp.h"

#define AUDIT_SIGNATURE_BYTES 64

typedef struct AuditCheckpoint
{
	int64		chain_seq;
	uint8		row_hash[PG_SHA256_DIGEST_LENGTH];
	TimestampTz signed_at;
	uint8		signature[AUDIT_SIGNATURE_BYTES];
} AuditCheckpoint;

extern EVP_PKEY *audit_signing_key_load(void);
extern void audit_checkpoint_sign(EVP_PKEY *key, const char *session_id, AuditCheckpoint *checkpoint);
extern void audit_checkpoints_verify(Datum session_uuid, const char *session_id,
									 int64 *checked, bool *all_ok, int64 *first_bad_seq);

#endif							/* PRESENCE_AUDIT_CHECKPOINT_H */
