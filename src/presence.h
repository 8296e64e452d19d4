/*-------------------------------------------------------------------------
 * presence.h
 *	  The one prelude every presence source file includes: PostgreSQL
 *	  headers, the GUC variables (config.c) and the module-wide constants.
 *-------------------------------------------------------------------------
 */
#ifndef PRESENCE_H
#define PRESENCE_H

#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/timestamp.h"

/*
 * PostgreSQL declares its SQL function json_object(), jansson its
 * constructor json_object(); we call only jansson's, so PostgreSQL's is
 * renamed here, where utils/builtins.h is included once for every file.
 */
#define json_object pg_sql_json_object
#include "utils/builtins.h"
#undef json_object

#include "presence_limits.h"

#define PRESENCE_MAX_WORKERS	32

/* GUCs (config.c); times are in milliseconds unless named otherwise. */
extern char *presence_database;
extern int	presence_workers;
extern char *presence_listen_address;
extern int	presence_port;
extern char *presence_jwt_secret;
extern char *presence_jwt_audience;
extern int	presence_jwt_leeway_s;
extern char *presence_jwt_algorithms;
extern char *presence_jwt_public_keys_file;
extern char *presence_jwt_issuer;
extern char *presence_jwt_user_id_claim;
extern char *presence_allowed_origins;
extern int	presence_max_connections;
extern int	presence_max_unauthenticated;
extern int	presence_max_unauthenticated_per_address;
extern int	presence_handshake_timeout_ms;
extern int	presence_max_message_bytes;
extern int	presence_max_client_backlog_kb;
extern int	presence_rate_limit;
extern int	presence_max_participants;
extern bool presence_auto_create_users;
extern bool presence_client_session_ids;
extern bool presence_compression;
extern int	presence_compression_min_bytes;
extern char *presence_ssl_cert_file;
extern char *presence_ssl_key_file;
extern char *presence_ssl_ca_file;
extern char *presence_trusted_proxies;
extern char *presence_static_dir;
extern bool presence_metrics_loopback_only;
extern char *presence_metrics_token;
extern int	presence_heartbeat_interval_ms;
extern int	presence_heartbeat_timeout_ms;
extern int	presence_away_threshold_ms;
extern int	presence_auth_timeout_ms;
extern int	presence_presence_ttl_ms;
extern int	presence_session_timeout_s;
extern int	presence_batch_interval_ms;
extern int	presence_batch_max;
extern int	presence_log_flush_interval_ms;
extern int	presence_log_flush_max;
extern int	presence_activity_retention_s;
extern char *presence_audit_signing_key_file;
extern int	presence_audit_checkpoint_interval_s;
extern int	presence_ping_interval_s;
extern int	presence_max_pending_activity;
extern int	presence_max_pending_activity_kb;
extern int	presence_db_lock_timeout_ms;
extern int	presence_db_statement_timeout_ms;
extern char *presence_redis_url;
extern char *presence_redis_prefix;
extern int	presence_redis_connect_timeout_ms;
extern char *presence_primary_conninfo;
extern char *presence_permission_function;
extern int	presence_permission_function_timeout_ms;
extern int	presence_permission_cache_ttl_ms;

extern void presence_define_gucs(void);

#endif							/* PRESENCE_H */
