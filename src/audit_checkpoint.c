/*-------------------------------------------------------------------------
 * audit_checkpoint.c
 *	  Signed audit checkpoints: the head of a session's chain signed with
 *	  the Ed25519 key of presence.audit_signing_key_file, stored in
 *	  presence.audit_checkpoints, and checked again by verify_audit_chain.
 *
 * A chain alone proves nothing to someone who does not trust the database:
 * a superuser can recompute it from any row on, or cut it at its end, and
 * it verifies.  A checkpoint an auditor saved outside the database, with
 * the public key, pins the history up to its chain_seq: the offline
 * verifier (scripts/verify-activity-export.py) rebuilds the signed message
 * from an export and fails on any rewrite of rows up to there.
 *
 * The signed message, version 1 (docs/sql-reference.md repeats it):
 *
 *	 "presence-audit-checkpoint-v1" 0x00	(29 bytes)
 *	 session uuid							(16 bytes)
 *	 length of session_id, session_id		(4-byte big-endian, UTF-8 bytes)
 *	 chain_seq								(8-byte big-endian, signed)
 *	 row_hash								(32 bytes)
 *	 signed_at								(8-byte big-endian, signed,
 *											 microseconds since 1970 UTC)
 *
 * Every field has a fixed width but one, and that one is length-prefixed,
 * so no two checkpoints share a message.
 *
 * The key file is read at every signature: a reload or a replaced file
 * needs nothing else, and signing is rare enough that reading a small
 * file costs nothing that matters.
 *
 * A head already signed with the current key is not signed again: the
 * stored checkpoint is returned.  Anyone allowed to call audit_checkpoint
 * (the auditor role) could otherwise grow the table, and the time of
 * every later verify_audit_chain, without bound.
 *-------------------------------------------------------------------------
 */
#include "presence.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>

#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "audit_chain.h"
#include "audit_checkpoint.h"
#include "tls.h"

#define CHECKPOINT_DOMAIN "presence-audit-checkpoint-v1"
#define ED25519_PUBLIC_KEY_BYTES 32
#define ED25519_SIGNATURE_BYTES 64
/* A PEM Ed25519 key is about 120 bytes; anything far larger is no key. */
#define KEY_FILE_MAX_BYTES 16384

/*
 * The key's path goes to the server log only: the GUC is superuser-only,
 * and the auditor role, which may call audit_checkpoint, sees the errors.
 */
#define KEY_FILE_DETAIL(path) errdetail_log("presence.audit_signing_key_file is \"%s\".", (path))

typedef struct AuditCheckpoint
{
	int64		chain_seq;
	uint8		row_hash[PG_SHA256_DIGEST_LENGTH];
	TimestampTz signed_at;
	uint8		signature[ED25519_SIGNATURE_BYTES];
} AuditCheckpoint;

static void append_be(StringInfo buf, uint64 value, int bytes);
static void checkpoint_message(StringInfo buf, const pg_uuid_t *session, const char *session_id,
							   int64 seq, const uint8 *hash, TimestampTz signed_at);
static void checkpoint_sign(EVP_PKEY *key, const char *session_id, AuditCheckpoint *checkpoint);
static bool stored_checkpoint(const pg_uuid_t *session, const char *session_id, bytea *public_key,
							  AuditCheckpoint *checkpoint);
static bool signature_valid(bytea *public_key, bytea *signature, StringInfo message);

/*
 * Reads the file into buffer, refusing what PostgreSQL refuses for
 * ssl_key_file: a file not owned by the database user or root, or one
 * that group or others may read (group read is allowed when root owns
 * it, so a key can be shared through a group like ssl-cert).  The file is
 * checked through the descriptor it is read from, so it cannot be swapped
 * between the check and the read.
 */
static int
read_key_file(const char *path, char *buffer, size_t size)
{
	/*
	 * O_NONBLOCK: opening a FIFO would wait for a writer, and no signal
	 * interrupts that wait (the backend's handlers restart the call).
	 */
	int			fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	struct stat st;
	ssize_t		len;

	if (fd < 0)
		ereport(ERROR, (errcode_for_file_access(),
						errmsg("presence: could not open presence.audit_signing_key_file: %m"),
						KEY_FILE_DETAIL(path)));
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
	{
		close(fd);
		ereport(ERROR, (errcode(ERRCODE_CONFIG_FILE_ERROR),
						errmsg("presence: presence.audit_signing_key_file is not a regular file"),
						KEY_FILE_DETAIL(path)));
	}
	if (st.st_uid != geteuid() && st.st_uid != 0)
	{
		close(fd);
		ereport(ERROR, (errcode(ERRCODE_CONFIG_FILE_ERROR),
						errmsg("presence: presence.audit_signing_key_file must be owned by the database user or root"),
						KEY_FILE_DETAIL(path)));
	}
	if ((st.st_uid == geteuid() && (st.st_mode & (S_IRWXG | S_IRWXO))) ||
		(st.st_uid == 0 && (st.st_mode & (S_IWGRP | S_IXGRP | S_IRWXO))))
	{
		close(fd);
		ereport(ERROR, (errcode(ERRCODE_CONFIG_FILE_ERROR),
						errmsg("presence: presence.audit_signing_key_file has group or world access"),
						KEY_FILE_DETAIL(path),
						errdetail("File must have permissions u=rw (0600) or less if owned by the database user, "
								  "or permissions u=rw,g=r (0640) or less if owned by root.")));
	}
	len = read(fd, buffer, size);
	close(fd);
	if (len < 0)
		ereport(ERROR, (errcode_for_file_access(),
						errmsg("presence: could not read presence.audit_signing_key_file: %m"),
						KEY_FILE_DETAIL(path)));
	if ((size_t) len == size)
		ereport(ERROR, (errcode(ERRCODE_CONFIG_FILE_ERROR),
						errmsg("presence: presence.audit_signing_key_file is too large for a key"),
						KEY_FILE_DETAIL(path)));
	return (int) len;
}

/*
 * The signing key of presence.audit_signing_key_file, or an error saying
 * why there is none.  The caller frees it with EVP_PKEY_free.
 */
EVP_PKEY *
audit_signing_key_load(void)
{
	const char *path = presence_audit_signing_key_file;
	char		text[KEY_FILE_MAX_BYTES];
	int			len;
	BIO		   *bio;
	EVP_PKEY   *key;

	if (path == NULL || path[0] == '\0')
		ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
						errmsg("presence: no audit signing key is configured"),
						errhint("Set presence.audit_signing_key_file to an Ed25519 private key in PEM "
								"(openssl genpkey -algorithm ed25519).")));
	len = read_key_file(path, text, sizeof(text));
	/* so that the error reported is this read's, not one left from before */
	ERR_clear_error();
	bio = BIO_new_mem_buf(text, len);
	key = bio ? tls_read_private_key(bio) : NULL;
	BIO_free(bio);
	explicit_bzero(text, sizeof(text));
	if (key == NULL)
		ereport(ERROR, (errcode(ERRCODE_CONFIG_FILE_ERROR),
						errmsg("presence: presence.audit_signing_key_file holds no usable private key: %s",
							   tls_openssl_problem()),
						KEY_FILE_DETAIL(path)));
	if (EVP_PKEY_id(key) != EVP_PKEY_ED25519)
	{
		EVP_PKEY_free(key);
		ereport(ERROR, (errcode(ERRCODE_CONFIG_FILE_ERROR),
						errmsg("presence: presence.audit_signing_key_file is not an Ed25519 key"),
						KEY_FILE_DETAIL(path)));
	}
	return key;
}

static void
append_be(StringInfo buf, uint64 value, int bytes)
{
	for (int i = bytes - 1; i >= 0; i--)
		appendStringInfoChar(buf, (char) (uint8) (value >> (8 * i)));
}

/* The version 1 message of the file header, into buf. */
static void
checkpoint_message(StringInfo buf, const pg_uuid_t *session, const char *session_id,
				   int64 seq, const uint8 *hash, TimestampTz signed_at)
{
	int64		unix_us = signed_at + (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY;
	size_t		id_len = strlen(session_id);

	appendBinaryStringInfo(buf, CHECKPOINT_DOMAIN, sizeof(CHECKPOINT_DOMAIN));	/* with its NUL */
	appendBinaryStringInfo(buf, (const char *) session->data, UUID_LEN);
	append_be(buf, id_len, 4);
	appendBinaryStringInfo(buf, session_id, id_len);
	append_be(buf, (uint64) seq, 8);
	appendBinaryStringInfo(buf, (const char *) hash, PG_SHA256_DIGEST_LENGTH);
	append_be(buf, (uint64) unix_us, 8);
}

/*
 * Signs the head of a session's chain with key and stores the checkpoint;
 * the caller is connected to SPI.  signed_at is when the head was read
 * under the chain lock; appends go on while it is signed and stored, and
 * the checkpoint stays true of the chain they extend.
 */
static void
checkpoint_sign(EVP_PKEY *key, const char *session_id, AuditCheckpoint *checkpoint)
{
	Oid			argtypes[6] = {TEXTOID, INT8OID, BYTEAOID, TIMESTAMPTZOID, BYTEAOID, BYTEAOID};
	Datum		args[6];
	bool		isnull;
	pg_uuid_t	session;
	StringInfoData message;
	uint8		public_key[ED25519_PUBLIC_KEY_BYTES];
	size_t		public_len = sizeof(public_key);
	size_t		signature_len = ED25519_SIGNATURE_BYTES;
	EVP_MD_CTX *md;
	bool		signed_ok;

	/*
	 * The session row is locked first, as the foreign key of the stored
	 * checkpoint will lock it: an application may lock it FOR UPDATE
	 * before it appends (takes the chain lock), and a transaction that
	 * appended before it called this holds the chain lock still, so taking
	 * the two the other way round could deadlock with it.
	 */
	args[0] = CStringGetTextDatum(session_id);
	if (SPI_execute_with_args("SELECT id FROM presence.collaboration_sessions"
							  " WHERE session_id OPERATOR(pg_catalog.=) $1 FOR KEY SHARE",
							  1, argtypes, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "presence: session lookup failed");
	if (SPI_processed == 0)
		ereport(ERROR, (errcode(ERRCODE_NO_DATA_FOUND),
						errmsg("presence: session \"%s\" does not exist", session_id)));
	memcpy(&session, DatumGetUUIDP(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)),
		   sizeof(session));

	audit_chain_head_at(&session, &checkpoint->chain_seq, checkpoint->row_hash, &checkpoint->signed_at);
	if (checkpoint->chain_seq == 0)
		ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
						errmsg("presence: session \"%s\" has no activity to checkpoint", session_id)));
	if (EVP_PKEY_get_raw_public_key(key, public_key, &public_len) != 1 ||
		public_len != ED25519_PUBLIC_KEY_BYTES)
		ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR),
						errmsg("presence: could not read the audit signing key's public key: %s",
							   tls_openssl_problem())));
	if (stored_checkpoint(&session, session_id, bytea_from_bytes(public_key, ED25519_PUBLIC_KEY_BYTES),
						  checkpoint))
		return;

	initStringInfo(&message);
	checkpoint_message(&message, &session, session_id, checkpoint->chain_seq,
					   checkpoint->row_hash, checkpoint->signed_at);
	md = EVP_MD_CTX_new();
	signed_ok = md != NULL &&
		EVP_DigestSignInit(md, NULL, NULL, NULL, key) == 1 &&
		EVP_DigestSign(md, checkpoint->signature, &signature_len,
					   (const unsigned char *) message.data, message.len) == 1 &&
		signature_len == ED25519_SIGNATURE_BYTES;
	EVP_MD_CTX_free(md);
	if (!signed_ok)
		ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR),
						errmsg("presence: could not sign an audit checkpoint: %s", tls_openssl_problem())));

	args[0] = UUIDPGetDatum(&session);
	argtypes[0] = UUIDOID;
	args[1] = Int64GetDatum(checkpoint->chain_seq);
	args[2] = PointerGetDatum(bytea_from_bytes(checkpoint->row_hash, PG_SHA256_DIGEST_LENGTH));
	args[3] = TimestampTzGetDatum(checkpoint->signed_at);
	args[4] = PointerGetDatum(bytea_from_bytes(checkpoint->signature, ED25519_SIGNATURE_BYTES));
	args[5] = PointerGetDatum(bytea_from_bytes(public_key, ED25519_PUBLIC_KEY_BYTES));
	if (SPI_execute_with_args("INSERT INTO presence.audit_checkpoints"
							  " (session_id, chain_seq, row_hash, signed_at, signature, public_key)"
							  " VALUES ($1, $2, $3, $4, $5, $6)",
							  6, argtypes, args, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "presence: could not store an audit checkpoint");
}

/*
 * Whether the head in checkpoint (chain_seq, row_hash) is already stored
 * signed by public_key; if so, fills in the newest such checkpoint's
 * signed_at and signature.  Its signature is checked, so a row a
 * superuser wrote is not handed to an auditor as a signed one.
 */
static bool
stored_checkpoint(const pg_uuid_t *session, const char *session_id, bytea *public_key,
				  AuditCheckpoint *checkpoint)
{
	Oid			argtypes[4] = {UUIDOID, INT8OID, BYTEAOID, BYTEAOID};
	Datum		args[4];
	bool		isnull;
	bytea	   *signature;
	StringInfoData message;
	TimestampTz signed_at;

	args[0] = UUIDPGetDatum(session);
	args[1] = Int64GetDatum(checkpoint->chain_seq);
	args[2] = PointerGetDatum(bytea_from_bytes(checkpoint->row_hash, PG_SHA256_DIGEST_LENGTH));
	args[3] = PointerGetDatum(public_key);
	if (SPI_execute_with_args("SELECT c.signed_at, c.signature FROM presence.audit_checkpoints c"
							  " WHERE c.session_id OPERATOR(pg_catalog.=) $1"
							  "   AND c.chain_seq OPERATOR(pg_catalog.=) $2"
							  "   AND c.row_hash OPERATOR(pg_catalog.=) $3"
							  "   AND c.public_key OPERATOR(pg_catalog.=) $4"
							  " ORDER BY c.signed_at DESC LIMIT 1",
							  4, argtypes, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "presence: reading the stored audit checkpoints failed");
	if (SPI_processed == 0)
		return false;
	signed_at = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	signature = DatumGetByteaPP(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	initStringInfo(&message);
	checkpoint_message(&message, session, session_id, checkpoint->chain_seq, checkpoint->row_hash, signed_at);
	if (!signature_valid(public_key, signature, &message))
		return false;
	checkpoint->signed_at = signed_at;
	memcpy(checkpoint->signature, VARDATA_ANY(signature), ED25519_SIGNATURE_BYTES);
	return true;
}

/*
 * audit_checkpoint(session_id text) -> (chain_seq, row_hash, signed_at, signature)
 */
PG_FUNCTION_INFO_V1(presence_audit_checkpoint);
Datum
presence_audit_checkpoint(PG_FUNCTION_ARGS)
{
	TupleDesc	result_desc;
	Datum		result[4];
	bool		nulls[4] = {false, false, false, false};
	AuditCheckpoint checkpoint;
	EVP_PKEY   *volatile key;

	if (PG_ARGISNULL(0))
		ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						errmsg("presence: session_id must not be null")));
	if (get_call_result_type(fcinfo, NULL, &result_desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "presence: audit_checkpoint must return a record");
	result_desc = BlessTupleDesc(result_desc);
	if (RecoveryInProgress())
		ereport(ERROR, (errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
						errmsg("presence: audit checkpoints are signed on the primary, not on a standby")));

	key = audit_signing_key_load();
	SPI_connect();
	PG_TRY();
	{
		checkpoint_sign(key, text_to_cstring(PG_GETARG_TEXT_PP(0)), &checkpoint);
	}
	PG_FINALLY();
	{
		EVP_PKEY_free(key);
	}
	PG_END_TRY();
	SPI_finish();

	result[0] = Int64GetDatum(checkpoint.chain_seq);
	result[1] = PointerGetDatum(bytea_from_bytes(checkpoint.row_hash, PG_SHA256_DIGEST_LENGTH));
	result[2] = TimestampTzGetDatum(checkpoint.signed_at);
	result[3] = PointerGetDatum(bytea_from_bytes(checkpoint.signature, ED25519_SIGNATURE_BYTES));
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(result_desc, result, nulls)));
}

static bool
same_bytes(bytea *a, bytea *b)
{
	return VARSIZE_ANY_EXHDR(a) == VARSIZE_ANY_EXHDR(b) &&
		memcmp(VARDATA_ANY(a), VARDATA_ANY(b), VARSIZE_ANY_EXHDR(a)) == 0;
}

/* Whether signature is public_key's Ed25519 signature of message. */
static bool
signature_valid(bytea *public_key, bytea *signature, StringInfo message)
{
	EVP_PKEY   *key;
	EVP_MD_CTX *md;
	bool		valid;

	if (VARSIZE_ANY_EXHDR(public_key) != ED25519_PUBLIC_KEY_BYTES ||
		VARSIZE_ANY_EXHDR(signature) != ED25519_SIGNATURE_BYTES)
		return false;
	key = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL,
									  (const unsigned char *) VARDATA_ANY(public_key),
									  ED25519_PUBLIC_KEY_BYTES);
	md = EVP_MD_CTX_new();
	valid = key != NULL && md != NULL &&
		EVP_DigestVerifyInit(md, NULL, NULL, NULL, key) == 1 &&
		EVP_DigestVerify(md, (const unsigned char *) VARDATA_ANY(signature), ED25519_SIGNATURE_BYTES,
						 (const unsigned char *) message->data, message->len) == 1;
	EVP_MD_CTX_free(md);
	EVP_PKEY_free(key);
	ERR_clear_error();
	return valid;
}

/*
 * Checks every stored checkpoint of a session, oldest first; the caller
 * is connected to SPI.  A checkpoint holds when its signature verifies
 * with the public key stored beside it and the chain still has that hash
 * at that place: the row at chain_seq, or the purge anchor when the row
 * was purged there.  A checkpoint below the anchor speaks of rows purged
 * the sanctioned way and is checked by its signature alone; one past the
 * chain's end, or with a different hash, says the chain was cut or
 * rewritten.  The stored row_hash values themselves are the chain walk's
 * to check.  Returns how many were checked and, when one fails, the
 * chain_seq of the first.
 */
void
audit_checkpoints_verify(Datum session_uuid, const char *session_id,
						 int64 *checked, bool *all_ok, int64 *first_bad_seq)
{
	Oid			argtypes[1] = {UUIDOID};
	Datum		args[1] = {session_uuid};
	Portal		portal;

	*checked = 0;
	*all_ok = true;
	portal = SPI_cursor_open_with_args(NULL,
									   "SELECT c.chain_seq, c.row_hash, c.signed_at, c.signature, c.public_key,"
									   "       a.row_hash AS chained, x.chain_seq AS anchor_seq, x.row_hash AS anchor_hash"
									   "  FROM presence.audit_checkpoints c"
									   "  LEFT JOIN presence.activity_log a"
									   "    ON a.session_id OPERATOR(pg_catalog.=) c.session_id"
									   "   AND a.chain_seq OPERATOR(pg_catalog.=) c.chain_seq"
									   "  LEFT JOIN presence.audit_chain_anchors x"
									   "    ON x.session_id OPERATOR(pg_catalog.=) c.session_id"
									   " WHERE c.session_id OPERATOR(pg_catalog.=) $1"
									   " ORDER BY c.chain_seq, c.signed_at",
									   1, argtypes, args, NULL, true, 0);
	for (;;)
	{
		SPI_cursor_fetch(portal, true, 1000);
		if (SPI_processed == 0)
			break;
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			HeapTuple	row = SPI_tuptable->vals[i];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			bool		isnull,
						no_row,
						no_anchor;
			int64		seq = DatumGetInt64(SPI_getbinval(row, desc, 1, &isnull));
			bytea	   *hash = DatumGetByteaPP(SPI_getbinval(row, desc, 2, &isnull));
			TimestampTz signed_at = DatumGetTimestampTz(SPI_getbinval(row, desc, 3, &isnull));
			bytea	   *signature = DatumGetByteaPP(SPI_getbinval(row, desc, 4, &isnull));
			bytea	   *public_key = DatumGetByteaPP(SPI_getbinval(row, desc, 5, &isnull));
			Datum		chained = SPI_getbinval(row, desc, 6, &no_row);
			Datum		anchor_seq = SPI_getbinval(row, desc, 7, &no_anchor);
			Datum		anchor_hash = SPI_getbinval(row, desc, 8, &isnull);
			StringInfoData message;
			bool		holds;

			(*checked)++;
			if (VARSIZE_ANY_EXHDR(hash) != PG_SHA256_DIGEST_LENGTH)
				holds = false;
			else
			{
				initStringInfo(&message);
				checkpoint_message(&message, DatumGetUUIDP(session_uuid), session_id, seq,
								   (const uint8 *) VARDATA_ANY(hash), signed_at);
				holds = signature_valid(public_key, signature, &message);
				pfree(message.data);
			}
			if (holds && !no_row)
				holds = same_bytes(DatumGetByteaPP(chained), hash);
			else if (holds && !no_anchor && seq == DatumGetInt64(anchor_seq))
				holds = same_bytes(DatumGetByteaPP(anchor_hash), hash);
			else if (holds)
				holds = !no_anchor && seq < DatumGetInt64(anchor_seq);
			if (!holds && *all_ok)
			{
				*all_ok = false;
				*first_bad_seq = seq;
			}
		}
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(portal);
}
