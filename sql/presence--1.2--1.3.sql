/*
 * presence 1.2 -> 1.3
 *
 * log_activity_batch is C (src/activity_batch.c): the same arguments,
 * checks, errors, result and chain, written the way COPY writes a table.
 * It computes each row's link itself instead of through the activity_chain
 * trigger (which still guards every other INSERT), locks each distinct
 * session and user once, FOR KEY SHARE as a foreign-key check does,
 * instead of one check query per row and key, and hands the rows to the
 * table a thousand at a time.  The batch check it used to call from SQL,
 * _check_activity_rows, has no other caller and goes.
 *
 * Activity ids (presence._activity_id(), unchanged in SQL) are now
 * time-ordered version-7 UUIDs, so the primary key grows at its right
 * edge; ids already written stay as they are.
 */
\echo Use "ALTER EXTENSION presence UPDATE TO '1.3'" to load this file. \quit

CREATE OR REPLACE FUNCTION presence.log_activity_batch(session_ids text[], user_ids uuid[], activity_types text[],
													   details jsonb[] DEFAULT NULL, ip_addresses inet[] DEFAULT NULL,
													   user_agents text[] DEFAULT NULL,
													   created_ats timestamptz[] DEFAULT NULL)
RETURNS SETOF uuid
	AS 'MODULE_PATHNAME', 'presence_log_activity_batch'
	LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

DROP FUNCTION presence._check_activity_rows(text[], uuid[], text[], jsonb[], inet[], text[], timestamptz[]);
