/*-------------------------------------------------------------------------
 * audit_checkpoint.h
 *	  Signed audit checkpoints: what the maintenance worker and
 *	  verify_audit_chain use of them.
 *-------------------------------------------------------------------------
 */
#ifndef PRESENCE_AUDIT_CHECKPOINT_H
#define PRESENCE_AUDIT_CHECKPOINT_H

#include <openssl/evp.h>

extern EVP_PKEY *audit_signing_key_load(void);
extern void audit_checkpoints_verify(Datum session_uuid, const char *session_id,
									 int64 *checked, bool *all_ok, int64 *first_bad_seq);

#endif							/* PRESENCE_AUDIT_CHECKPOINT_H */
