--
-- schema: what CREATE EXTENSION presence creates, and the helper the other
-- suites use to show an error's SQLSTATE.
--

-- regress.try(statement): 'ok', or the SQLSTATE and message of its error.
CREATE SCHEMA regress;
GRANT USAGE ON SCHEMA regress TO PUBLIC;
CREATE FUNCTION regress.try(statement text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE statement;
	RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

-- The extension lives in pg_catalog and owns its schema.
SELECT e.extname, e.extversion, e.extnamespace::regnamespace AS registered_in, e.extrelocatable
  FROM pg_extension e WHERE e.extname = 'presence';
SELECT d.deptype
  FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
 WHERE e.extname = 'presence' AND d.classid = 'pg_namespace'::regclass
   AND d.objid = 'presence'::regnamespace;

-- Tables and their columns.
SELECT c.relname, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod) AS type,
	   a.attnotnull AS not_null, pg_get_expr(d.adbin, d.adrelid) AS default
  FROM pg_class c
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
  LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
 WHERE c.relnamespace = 'presence'::regnamespace AND c.relkind = 'r'
 ORDER BY c.relname, a.attnum;

-- Constraints.
SELECT conrelid::regclass AS "table", conname, contype, pg_get_constraintdef(oid) AS definition
  FROM pg_constraint
 WHERE connamespace = 'presence'::regnamespace
 ORDER BY 1, 2;

-- Indexes (the contract asks for the partial participants index and
-- activity_log (session_id, created_at DESC)).
SELECT indexrelid::regclass AS index, pg_get_indexdef(indexrelid) AS definition
  FROM pg_index
 WHERE indrelid IN (SELECT oid FROM pg_class WHERE relnamespace = 'presence'::regnamespace)
 ORDER BY 1::text;

-- Triggers.
SELECT tgrelid::regclass AS "table", tgname, pg_get_triggerdef(oid) AS definition
  FROM pg_trigger
 WHERE NOT tgisinternal AND tgrelid IN (SELECT oid FROM pg_class WHERE relnamespace = 'presence'::regnamespace)
 ORDER BY 1::text, 2;

-- Every table's data is dumped with the database.
SELECT unnest(extconfig)::regclass AS dumped FROM pg_extension WHERE extname = 'presence' ORDER BY 1::text;

-- The public functions (SQL-API.md); internal ones start with "_".
\pset format unaligned
SELECT format('%s(%s) -> %s [%s%s]', p.proname, pg_get_function_arguments(p.oid),
			  pg_get_function_result(p.oid),
			  CASE p.provolatile WHEN 'i' THEN 'immutable' WHEN 's' THEN 'stable' ELSE 'volatile' END,
			  CASE WHEN p.prosecdef THEN ', security definer' ELSE '' END) AS function
  FROM pg_proc p
 WHERE p.pronamespace = 'presence'::regnamespace AND p.proname NOT LIKE '\_%'
 ORDER BY p.oid::regprocedure::text;
\pset format aligned

-- Every function, internal ones too, is kept from PUBLIC.
SELECT p.oid::regprocedure AS executable_by_public
  FROM pg_proc p
 WHERE p.pronamespace = 'presence'::regnamespace
   AND has_function_privilege('public', p.oid, 'EXECUTE');

-- Every SECURITY DEFINER function pins its search_path.
SELECT p.oid::regprocedure AS definer_without_search_path
  FROM pg_proc p
 WHERE p.pronamespace = 'presence'::regnamespace AND p.prosecdef
   AND NOT coalesce(p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp'], false);

-- session_id defaults to the row id.
INSERT INTO presence.users (id, username) VALUES ('00000000-0000-4000-8000-000000000001', 'schema-owner');
INSERT INTO presence.collaboration_sessions (id, owner_id)
VALUES ('00000000-0000-4000-8000-0000000000a1', '00000000-0000-4000-8000-000000000001')
RETURNING session_id, status;

-- Table constraints back the API checks.
SELECT regress.try($$INSERT INTO presence.users (username) VALUES ('')$$);
SELECT regress.try($$INSERT INTO presence.collaboration_sessions (owner_id, session_id)
					 VALUES ('00000000-0000-4000-8000-000000000001', 'no:colons')$$);
SELECT regress.try($$INSERT INTO presence.collaboration_sessions (owner_id, session_id, status)
					 VALUES ('00000000-0000-4000-8000-000000000001', 'schema-s2', 'paused')$$);
SELECT regress.try($$INSERT INTO presence.activity_log (session_id, activity_type)
					 VALUES ('00000000-0000-4000-8000-0000000000a1', 'Not.A.Type')$$);
SELECT regress.try($$INSERT INTO presence.activity_log (session_id, activity_type)
					 VALUES ('00000000-0000-4000-8000-0000000000a1', repeat('a', 65))$$);
SELECT regress.try($$INSERT INTO presence.activity_log (session_id, activity_type, details)
					 VALUES ('00000000-0000-4000-8000-0000000000a1', 'x', '[]')$$);
SELECT regress.try($$INSERT INTO presence.activity_log (session_id, activity_type)
					 VALUES ('00000000-0000-4000-8000-0000000000a1', repeat('a', 64))$$);
