--
-- upgrade: 1.0 is the only version.  Updating to the installed version
-- is a no-op PostgreSQL does without a script; a later version ships
-- sql/presence--1.0--<new>.sql and raises default_version in
-- presence.control (docs/sql-reference.md, "Upgrades").
--
INSERT INTO presence.users (id, username) VALUES ('00000000-0000-4000-8000-000000000a01', 'upg-owner');
SELECT presence.create_session('00000000-0000-4000-8000-000000000a01', session_id => 'upg-s');
SELECT presence.log_activity('upg-s', NULL, 'before.update') IS NOT NULL AS logged;

SELECT name, version, installed, superuser, relocatable, schema, requires
  FROM pg_available_extension_versions WHERE name = 'presence';
SELECT * FROM pg_extension_update_paths('presence');
ALTER EXTENSION presence UPDATE;
ALTER EXTENSION presence UPDATE TO '1.0';
SELECT extversion FROM pg_extension WHERE extname = 'presence';
-- The data and the chain are untouched and go on.
SELECT presence.log_activity('upg-s', NULL, 'after.update') IS NOT NULL AS logged;
SELECT chain_seq, activity_type FROM presence.session_activity('upg-s');
SELECT * FROM presence.verify_audit_chain('upg-s');

SELECT regress.try($$ALTER EXTENSION presence UPDATE TO '9.9'$$);
SELECT regress.try($$ALTER EXTENSION presence SET SCHEMA public$$);
