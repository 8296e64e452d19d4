/*-------------------------------------------------------------------------
 * config.c
 *	  Every presence.* GUC, its limits and when it can change.
 *
 * What shapes the process layout (database, workers, listening address,
 * TLS, compression) is PGC_POSTMASTER; everything a running worker can
 * apply to its next message or its next loop pass is PGC_SIGHUP, so an
 * operator can rotate the JWT secret or tighten limits with a reload and
 * without dropping connections.  The descriptions are the user
 * documentation (docs/configuration.md repeats them).
 *-------------------------------------------------------------------------
 */
#include "presence.h"

#include <limits.h>

#include "utils/guc.h"

#include "auth.h"
#include "proxies.h"

char	   *presence_database = NULL;
int			presence_workers = 1;
char	   *presence_listen_address = NULL;
int			presence_port = 8765;
char	   *presence_jwt_secret = NULL;
char	   *presence_jwt_audience = NULL;
int			presence_jwt_leeway_s = 30;
char	   *presence_jwt_algorithms = NULL;
char	   *presence_jwt_public_keys_file = NULL;
char	   *presence_jwt_issuer = NULL;
char	   *presence_jwt_user_id_claim = NULL;
char	   *presence_allowed_origins = NULL;
int			presence_max_connections = 10000;
int			presence_max_unauthenticated = 1024;
int			presence_max_unauthenticated_per_address = 64;
int			presence_handshake_timeout_ms = 5000;
int			presence_max_message_bytes = 16384;
int			presence_max_client_backlog_kb = 1024;
int			presence_rate_limit = 50;
int			presence_max_participants = 100;
bool		presence_auto_create_users = true;
bool		presence_client_session_ids = false;
bool		presence_compression = true;
int			presence_compression_min_bytes = 256;
char	   *presence_ssl_cert_file = NULL;
char	   *presence_ssl_key_file = NULL;
char	   *presence_ssl_ca_file = NULL;
char	   *presence_trusted_proxies = NULL;
char	   *presence_static_dir = NULL;
bool		presence_metrics_loopback_only = false;
char	   *presence_metrics_token = NULL;
int			presence_heartbeat_interval_ms = 30000;
int			presence_heartbeat_timeout_ms = 30000;
int			presence_away_threshold_ms = 120000;
int			presence_auth_timeout_ms = 10000;
int			presence_presence_ttl_ms = 60000;
int			presence_session_timeout_s = 86400;
int			presence_batch_interval_ms = 100;
int			presence_batch_max = 10;
int			presence_log_flush_interval_ms = 1000;
int			presence_log_flush_max = 100;
int			presence_activity_retention_s = 0;
char	   *presence_audit_signing_key_file = NULL;
int			presence_audit_checkpoint_interval_s = 300;
int			presence_ping_interval_s = 60;
int			presence_max_pending_activity = 100000;
int			presence_max_pending_activity_kb = 65536;
int			presence_db_lock_timeout_ms = 50;
int			presence_db_statement_timeout_ms = 2000;
char	   *presence_redis_url = NULL;
char	   *presence_redis_prefix = NULL;
int			presence_redis_connect_timeout_ms = 2000;
char	   *presence_primary_conninfo = NULL;
char	   *presence_permission_function = NULL;
int			presence_permission_function_timeout_ms = 200;
int			presence_permission_cache_ttl_ms = 5000;

/* presence.trusted_proxies: every entry an address or a CIDR range. */
static bool
check_trusted_proxies(char **newval, void **extra, GucSource source)
{
	const char *problem;

	if (proxy_list_valid(*newval, &problem))
		return true;
	GUC_check_errdetail("%s.", problem);
	return false;
}

/* A SIGHUP-reloadable time GUC in milliseconds; most timing GUCs are this. */
static void
define_ms(const char *name, const char *description, int *variable,
		  int default_ms, int min_ms, int max_ms)
{
	DefineCustomIntVariable(name, description, NULL, variable,
							default_ms, min_ms, max_ms,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
}

/*
 * presence.jwt_algorithms: only names auth.c verifies, spelt as RFC 7518
 * does.  Checked here so that a typo is refused at reload (the old list
 * stays) instead of locking every client out.
 */
static bool
check_jwt_algorithms(char **newval, void **extra, GucSource source)
{
	unsigned	algorithms;

	if (jwt_parse_algorithms(*newval, &algorithms))
		return true;
	GUC_check_errdetail("The list must name one or more of HS256, RS256, ES256 and EdDSA, separated by commas.");
	return false;
}

/* presence.jwt_user_id_claim: a token has no claim with an empty name. */
static bool
check_jwt_user_id_claim(char **newval, void **extra, GucSource source)
{
	if ((*newval)[0] != '\0')
		return true;
	GUC_check_errdetail("Name the claim holding the user's UUID, such as sub.");
	return false;
}

/*
 * Defines every GUC.  Called from _PG_init, in the postmaster when
 * preloaded and in ordinary backends when the library is loaded for a SQL
 * function, so SQL sees the same values the workers use.
 */
void
presence_define_gucs(void)
{
	DefineCustomStringVariable("presence.database",
							   "Database the presence workers connect to; it must have CREATE EXTENSION presence.",
							   NULL, &presence_database, "postgres",
							   PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("presence.workers",
							"Number of WebSocket worker processes sharing the port (SO_REUSEPORT). "
							"Without presence.redis_url only one worker runs, since workers share presence through Redis.",
							NULL, &presence_workers, 1, 1, PRESENCE_MAX_WORKERS,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("presence.listen_address",
							   "Address the WebSocket server listens on.",
							   NULL, &presence_listen_address, "127.0.0.1",
							   PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("presence.port",
							"TCP port of the WebSocket server; 0 starts no WebSocket worker.",
							NULL, &presence_port, 8765, 0, 65535,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("presence.jwt_secret",
							   "HS256 secret that signs client tokens and presence.issue_token's. Empty: no HS256 token is accepted.",
							   NULL, &presence_jwt_secret, "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL,
							   NULL, NULL, NULL);
	DefineCustomStringVariable("presence.jwt_audience",
							   "When set, tokens must carry this aud claim.",
							   NULL, &presence_jwt_audience, "",
							   PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("presence.jwt_leeway",
							"Clock skew allowed when checking exp, nbf and iat.",
							NULL, &presence_jwt_leeway_s, 30, 0, 3600,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomStringVariable("presence.jwt_algorithms",
							   "Comma-separated algorithms a client token may be signed with: HS256 (with presence.jwt_secret), "
							   "RS256, ES256, EdDSA (with presence.jwt_public_keys_file). A token whose alg is not listed is refused.",
							   NULL, &presence_jwt_algorithms, "HS256",
							   PGC_SIGHUP, 0, check_jwt_algorithms, NULL, NULL);
	DefineCustomStringVariable("presence.jwt_public_keys_file",
							   "File of the public keys that verify RS256, ES256 and EdDSA tokens: PEM public keys or a JWKS document. "
							   "The ws workers read it at start and on every reload; a file that does not parse leaves the previous keys in use.",
							   NULL, &presence_jwt_public_keys_file, "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY, NULL, NULL, NULL);
	DefineCustomStringVariable("presence.jwt_issuer",
							   "When set, tokens must carry this iss claim.",
							   NULL, &presence_jwt_issuer, "",
							   PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("presence.jwt_user_id_claim",
							   "Claim of the token that holds the user's UUID: sub, or another top-level claim "
							   "such as user_id or https://example.com/user_id when the identity provider's sub is not that UUID.",
							   NULL, &presence_jwt_user_id_claim, "sub",
							   PGC_SIGHUP, 0, check_jwt_user_id_claim, NULL, NULL);
	DefineCustomStringVariable("presence.allowed_origins",
							   "Comma-separated Origin values allowed to open a WebSocket; * allows any.",
							   NULL, &presence_allowed_origins, "*",
							   PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("presence.max_connections",
							"Connections one node accepts over all its workers; further upgrades get 503. "
							"Also sizes the shared table online_users() reads, hence a restart to change.",
							NULL, &presence_max_connections, 10000, 1, 1000000,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("presence.max_unauthenticated",
							"Sockets a ws worker holds that have not authenticated (HTTP upgrade, then until auth); "
							"at the bound the oldest of them is closed to make room.",
							NULL, &presence_max_unauthenticated, 1024, 16, 65535,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("presence.max_unauthenticated_per_address",
							"Sockets one source address may hold in a ws worker before authenticating; "
							"more are closed at once.",
							NULL, &presence_max_unauthenticated_per_address, 64, 1, 65535,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	define_ms("presence.handshake_timeout",
			  "How long a client may take to send its HTTP upgrade request; slower sockets are closed.",
			  &presence_handshake_timeout_ms, 5000, 100, 600000);
	DefineCustomIntVariable("presence.max_message_bytes",
							"Largest inbound message, after decompression; larger ones close the connection with 1009.",
							NULL, &presence_max_message_bytes, 16384, 1024, 1048576,
							PGC_SIGHUP, GUC_UNIT_BYTE, NULL, NULL, NULL);
	DefineCustomIntVariable("presence.max_client_backlog",
							"Output a worker holds for one client that does not read it (a frozen tab, a slow link); "
							"past it the client is closed with 1008.",
							NULL, &presence_max_client_backlog_kb, 1024, 64, 1048576,
							PGC_SIGHUP, GUC_UNIT_KB, NULL, NULL, NULL);
	DefineCustomIntVariable("presence.rate_limit",
							"Messages per second one connection may send (token bucket, burst twice this).",
							NULL, &presence_rate_limit, 50, 1, 100000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("presence.max_participants",
							"Most participants a session may have, and most users present in it at once.",
							NULL, &presence_max_participants, 100, 1, 100000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomBoolVariable("presence.auto_create_users",
							 "Add a user who authenticates with a valid token and is not in presence.users yet.",
							 NULL, &presence_auto_create_users, true,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomBoolVariable("presence.client_session_ids",
							 "Let a WebSocket client choose the sessionId of a session it creates; "
							 "off, clients get generated ids and cannot take the application's.",
							 NULL, &presence_client_session_ids, false,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomBoolVariable("presence.compression",
							 "Offer permessage-deflate to WebSocket clients.",
							 NULL, &presence_compression, true,
							 PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("presence.compression_min_bytes",
							"Server messages smaller than this go out uncompressed even on a connection "
							"that negotiated permessage-deflate: small ones gain little and cost CPU on both ends.",
							NULL, &presence_compression_min_bytes, 256, 0, 1048576,
							PGC_SIGHUP, GUC_UNIT_BYTE, NULL, NULL, NULL);
	DefineCustomStringVariable("presence.ssl_cert_file",
							   "PEM certificate (then its intermediates) for wss://; empty serves plain ws://.",
							   "Read again on reload, so a renewed certificate needs no restart; "
							   "turning TLS on or off does.",
							   &presence_ssl_cert_file, "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY, NULL, NULL, NULL);
	DefineCustomStringVariable("presence.ssl_key_file",
							   "PEM private key for presence.ssl_cert_file.",
							   "Read again on reload, with the certificate.",
							   &presence_ssl_key_file, "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY, NULL, NULL, NULL);
	DefineCustomStringVariable("presence.ssl_ca_file",
							   "PEM CA certificates that client certificates must be signed by; "
							   "empty asks clients for no certificate.",
							   "Read again on reload; setting or clearing it takes a restart.",
							   &presence_ssl_ca_file, "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY, NULL, NULL, NULL);
	DefineCustomStringVariable("presence.trusted_proxies",
							   "Reverse proxies (addresses or CIDR ranges, comma-separated) whose "
							   "X-Forwarded-For names the client.",
							   "Their sockets are not bounded per address, and the activity log records the "
							   "client address they forward; empty trusts no proxy.",
							   &presence_trusted_proxies, "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY, check_trusted_proxies, NULL, NULL);
	DefineCustomBoolVariable("presence.metrics_loopback_only",
							 "Serve /healthz and /metrics only to clients on this machine (127.0.0.0/8, ::1); others get 403.",
							 NULL, &presence_metrics_loopback_only, false,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("presence.metrics_token",
							   "When set, /healthz and /metrics need the header Authorization: Bearer <this token>; others get 401.",
							   NULL, &presence_metrics_token, "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY, NULL, NULL, NULL);
	DefineCustomStringVariable("presence.static_dir",
							   "Directory whose files are served over HTTP on the WebSocket port; empty serves none.",
							   NULL, &presence_static_dir, "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY, NULL, NULL, NULL);

	define_ms("presence.heartbeat_interval",
			  "Heartbeat interval told to clients in welcome.",
			  &presence_heartbeat_interval_ms, 30000, 100, 3600 * 1000);
	define_ms("presence.heartbeat_timeout",
			  "Grace after a missed heartbeat; a client silent for interval plus this times out.",
			  &presence_heartbeat_timeout_ms, 30000, 100, 3600 * 1000);
	define_ms("presence.away_threshold",
			  "A user with no activity (anything but heartbeats) for this long becomes away.",
			  &presence_away_threshold_ms, 120000, 100, 24 * 3600 * 1000);
	define_ms("presence.auth_timeout",
			  "Time a new connection has to authenticate before it is closed with 4008.",
			  &presence_auth_timeout_ms, 10000, 100, 600 * 1000);
	define_ms("presence.presence_ttl",
			  "Time to live of presence keys in Redis; a dead node's users expire after it.",
			  &presence_presence_ttl_ms, 60000, 1000, 24 * 3600 * 1000);
	DefineCustomIntVariable("presence.session_timeout",
							"A session without activity for this long is marked inactive by the maintenance worker.",
							NULL, &presence_session_timeout_s, 86400, 1, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	define_ms("presence.batch_interval",
			  "Frame interval of a busy session's timed batching.",
			  &presence_batch_interval_ms, 100, 1, 10000);
	DefineCustomIntVariable("presence.batch_max",
							"Frames per batch_interval above which a session switches to timed batching.",
							NULL, &presence_batch_max, 10, 1, 10000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	define_ms("presence.log_flush_interval",
			  "Longest time activity waits in a worker's queue before it is written.",
			  &presence_log_flush_interval_ms, 1000, 10, 60000);
	DefineCustomIntVariable("presence.log_flush_max",
							"Queued activity rows that trigger a write at once.",
							NULL, &presence_log_flush_max, 100, 1, 100000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("presence.activity_retention",
							"Activity older than this is purged by the maintenance worker; 0 keeps everything.",
							NULL, &presence_activity_retention_s, 0, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomStringVariable("presence.audit_signing_key_file",
							   "Ed25519 private key (PEM, PKCS#8) that signs audit checkpoints; empty signs none.",
							   "Read at every signature, so a reload or a replaced file takes effect at once; "
							   "refused when group or others can read it, as ssl_key_file is.",
							   &presence_audit_signing_key_file, "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY, NULL, NULL, NULL);
	DefineCustomIntVariable("presence.audit_checkpoint_interval",
							"How often the maintenance worker signs a checkpoint of every session whose audit chain "
							"grew since its last one; 0 signs none (audit_checkpoint() still does).",
							NULL, &presence_audit_checkpoint_interval_s, 300, 0, 7 * 86400,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("presence.ping_interval",
							"A connection silent this long is pinged, and dropped when silent another interval; 0 disables pings.",
							NULL, &presence_ping_interval_s, 60, 0, 3600,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("presence.max_pending_activity",
							"Activity rows a worker may hold unwritten; past it new activity is refused with unavailable.",
							NULL, &presence_max_pending_activity, 100000, 100, 10000000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("presence.max_pending_activity_memory",
							"Memory the unwritten activity rows of a worker may take; past it new activity is refused with unavailable.",
							NULL, &presence_max_pending_activity_kb, 65536, 1024, INT_MAX / 2,
							PGC_SIGHUP, GUC_UNIT_KB, NULL, NULL, NULL);
	define_ms("presence.db_lock_timeout",
			  "Longest a worker waits for a lock held by another transaction (lock_timeout of its transactions); "
			  "work that cannot lock in time is retried later while everything else goes on.",
			  &presence_db_lock_timeout_ms, 50, 1, 60000);
	define_ms("presence.db_statement_timeout",
			  "Longest statement a worker runs (statement_timeout of its transactions); "
			  "work that runs past it is retried later.",
			  &presence_db_statement_timeout_ms, 2000, 100, 600000);

	DefineCustomStringVariable("presence.redis_url",
							   "Redis shared by every ws worker and node, redis://[[user:]password@]host[:port][/db]; "
							   "empty runs from memory on one worker.",
							   NULL, &presence_redis_url, "",
							   PGC_POSTMASTER, GUC_SUPERUSER_ONLY, NULL, NULL, NULL);
	DefineCustomStringVariable("presence.redis_prefix",
							   "Prefix of every Redis key and channel presence uses.",
							   NULL, &presence_redis_prefix, "",
							   PGC_POSTMASTER, 0, NULL, NULL, NULL);
	define_ms("presence.redis_connect_timeout",
			  "How long a Redis connection attempt may take before it is abandoned and retried.",
			  &presence_redis_connect_timeout_ms, 2000, 100, 60000);

	DefineCustomStringVariable("presence.primary_conninfo",
							   "On a hot standby, where the ws workers send their writes; empty uses primary_conninfo "
							   "(with dbname set to presence.database).",
							   NULL, &presence_primary_conninfo, "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY, NULL, NULL, NULL);

	/* the application's permission function (permissions.c) */
	DefineCustomStringVariable("presence.permission_function",
							   "Schema-qualified function (session_id text, user_id uuid, action text) returning boolean "
							   "that decides permissions in place of the built-in matrix; empty uses the matrix.",
							   "It runs as its owner in a security-restricted operation; an error, a timeout, "
							   "NULL or a name that does not resolve denies.",
							   &presence_permission_function, "",
							   PGC_SUSET, 0, NULL, NULL, NULL);
	define_ms("presence.permission_function_timeout",
			  "Longest a ws worker waits for the permission function (statement and lock timeout of the call); "
			  "past it the check denies.",
			  &presence_permission_function_timeout_ms, 200, 1, 10000);
	DefineCustomIntVariable("presence.permission_cache_ttl",
							"How long a ws worker keeps the permission function's answer for a connection "
							"and session; 0 asks it every time.",
							NULL, &presence_permission_cache_ttl_ms, 5000, 0, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);

	MarkGUCPrefixReserved("presence");
}
