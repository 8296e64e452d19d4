/*
 * presence 1.3 -> 1.4
 *
 * Three things the activity log living in the database makes possible:
 * presence at any past moment (present_at, presence_timeline,
 * presence_intervals), signed audit checkpoints that an auditor verifies
 * outside the database (audit_checkpoint, presence.audit_checkpoints), and
 * permissions decided by the application's own SQL function
 * (presence.permission_function).
 */
\echo Use "ALTER EXTENSION presence UPDATE TO '1.4'" to load this file. \quit

-- == Presence at any past moment ==

-- == Signed audit checkpoints ==

/*
 * A checkpoint: the head of a session's chain (chain_seq, row_hash) signed
 * with the Ed25519 key of presence.audit_signing_key_file at signed_at;
 * public_key is the signer's raw 32-byte public key, so keys can rotate
 * and old checkpoints still verify (docs/sql-reference.md, "Signed
 * checkpoints").  Append-only like the log.  purge_activity leaves them:
 * a checkpoint below the purge anchor is still a true, signed statement
 * about rows that were removed the sanctioned way, it holds no personal
 * data, and removing it would let a purge hide a rewrite of what it left.
 */
CREATE TABLE presence.audit_checkpoints (
	session_id uuid NOT NULL REFERENCES presence.collaboration_sessions (id),
	chain_seq bigint NOT NULL CONSTRAINT audit_checkpoints_seq_positive CHECK (chain_seq > 0),
	row_hash bytea NOT NULL CONSTRAINT audit_checkpoints_hash_length CHECK (octet_length(row_hash) = 32),
	signed_at timestamptz NOT NULL,
	signature bytea NOT NULL,
	public_key bytea NOT NULL,
	PRIMARY KEY (session_id, chain_seq, signed_at)
);

SELECT pg_catalog.pg_extension_config_dump('presence.audit_checkpoints', '');

CREATE TRIGGER checkpoints_append_only BEFORE UPDATE OR DELETE ON presence.audit_checkpoints
	FOR EACH ROW EXECUTE FUNCTION presence._activity_guard();
CREATE TRIGGER checkpoints_no_truncate BEFORE TRUNCATE ON presence.audit_checkpoints
	FOR EACH STATEMENT EXECUTE FUNCTION presence._activity_guard();

CREATE FUNCTION presence.audit_checkpoint(session_id text,
										  OUT chain_seq bigint, OUT row_hash bytea,
										  OUT signed_at timestamptz, OUT signature bytea)
	AS 'MODULE_PATHNAME', 'presence_audit_checkpoint'
	LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

/*
 * verify_audit_chain also checks the stored checkpoints: two more result
 * columns, so the function is made again, with the grants it had.
 */
DO $$
DECLARE
	grantees regrole[] := ARRAY(
		SELECT a.grantee::regrole
		  FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) a
		 WHERE p.oid = 'presence.verify_audit_chain(text)'::pg_catalog.regprocedure
		   AND a.privilege_type = 'EXECUTE' AND a.grantee <> 0 AND a.grantee <> p.proowner);
	r regrole;
BEGIN
	DROP FUNCTION presence.verify_audit_chain(text);
	CREATE FUNCTION presence.verify_audit_chain(session_id text,
												OUT ok boolean, OUT rows_checked bigint, OUT first_bad_id uuid,
												OUT checkpoints_checked bigint, OUT first_bad_checkpoint bigint)
		AS 'MODULE_PATHNAME', 'presence_verify_audit_chain'
		LANGUAGE C STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
	REVOKE ALL ON FUNCTION presence.verify_audit_chain(text) FROM PUBLIC;
	FOREACH r IN ARRAY grantees LOOP
		EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION presence.verify_audit_chain(text) TO %s', r);
	END LOOP;
END $$;

/* Auditors can read the checkpoints and save a fresh one. */
CREATE OR REPLACE FUNCTION presence.grant_auditor_role(role_name regrole) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	PERFORM presence._require(role_name, 'role_name');
	EXECUTE format('GRANT USAGE ON SCHEMA presence TO %s', role_name);
	EXECUTE format('GRANT EXECUTE ON FUNCTION
		presence.participants(text),
		presence.has_permission(text, uuid, text),
		presence.session_activity(text, int),
		presence.audit_trail(text),
		presence.activity_statistics(text),
		presence.export_activity_csv(text),
		presence.verify_audit_chain(text),
		presence.audit_chain_head(text),
		presence.audit_checkpoint(text),
		presence.stats() TO %s', role_name);
	EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA presence TO %s', role_name);
END $$;

REVOKE ALL ON FUNCTION presence.audit_checkpoint(text) FROM PUBLIC;

-- == Permissions from the application's function ==
