--
-- drop: DROP EXTENSION presence leaves nothing behind; CREATE EXTENSION
-- works in a database that has its own users table, and refuses a
-- presence schema it did not create.
--

-- An object that depends on the extension's holds up the drop, as it
-- should; without it the drop goes through.
CREATE VIEW regress.drop_blocker AS SELECT id FROM presence.users;
SELECT regress.try('DROP EXTENSION presence');
DROP VIEW regress.drop_blocker;
DROP EXTENSION presence;

-- Nothing is left: no schema, no extension, no member, no function of
-- the library anywhere, no trigger, type or table of ours.
SELECT count(*) AS schemas FROM pg_namespace WHERE nspname = 'presence';
SELECT count(*) AS extensions FROM pg_extension WHERE extname = 'presence';
SELECT count(*) AS members FROM pg_depend WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
   AND refobjid NOT IN (SELECT oid FROM pg_extension);
SELECT count(*) AS c_functions FROM pg_proc WHERE probin LIKE '%presence%';
SELECT count(*) AS functions FROM pg_proc WHERE proname IN ('create_session', 'log_activity', 'issue_token',
																 '_activity_chain', '_require', 'stats');
SELECT count(*) AS types FROM pg_type
 WHERE typname IN ('users', 'collaboration_sessions', 'session_participants', 'activity_log', 'audit_chain_anchors');
SELECT count(*) AS triggers FROM pg_trigger WHERE tgname IN ('activity_chain', 'activity_append_only', 'session_id_default');
SELECT count(*) AS init_privileges FROM pg_init_privs WHERE objoid NOT IN (SELECT oid FROM pg_proc)
   AND classoid = 'pg_proc'::regclass;

-- An application with its own public.users.
CREATE TABLE public.users (id serial PRIMARY KEY, username text NOT NULL, email text);
INSERT INTO public.users (username, email) VALUES ('app-alice', 'alice@example.com'), ('app-bob', NULL);
CREATE EXTENSION presence;
SELECT * FROM public.users ORDER BY id;
SELECT count(*) AS presence_users FROM presence.users;
SELECT to_regclass('users') = 'public.users'::regclass AS users_means_public_users;
INSERT INTO presence.users (id, username) VALUES ('00000000-0000-4000-8000-000000000901', 'app-alice');
SELECT presence.create_session('00000000-0000-4000-8000-000000000901', session_id => 'drop-s');
SELECT username, role FROM presence.participants('drop-s');
SELECT * FROM presence.verify_audit_chain('drop-s');

-- A presence schema that someone else made is not taken over.
DROP EXTENSION presence;
CREATE SCHEMA presence;
SELECT regress.try('CREATE EXTENSION presence');
DROP SCHEMA presence;
CREATE EXTENSION presence;
SELECT extname, extversion FROM pg_extension WHERE extname = 'presence';
