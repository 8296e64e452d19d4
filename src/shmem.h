/*-------------------------------------------------------------------------
 * shmem.h
 *	  What the presence workers and ordinary backends share: counters for
 *	  stats() and /metrics, each worker's latch and gauges, the live-user
 *	  table online_users() reads, and the SQL -> worker command queue.
 *-------------------------------------------------------------------------
 */
#ifndef PRESENCE_SHMEM_H
#define PRESENCE_SHMEM_H

#include "presence.h"

#include "port/atomics.h"
#include "storage/latch.h"

/* Counters; each is a pg_atomic_uint64 in PresenceShared.counters[]. */
typedef enum PresenceCounter
{
	CTR_MESSAGES_IN,
	CTR_MESSAGES_OUT,
	CTR_HEARTBEATS_MISSED,
	CTR_REDIS_ERRORS,
	CTR_ACTIVITY_QUEUED,
	CTR_ACTIVITY_WRITTEN,
	CTR_ERRORS_SENT,
	CTR_CONNECTIONS_REFUSED,
	CTR_AUTH_FAILURES,
	CTR_COMMANDS_DROPPED,
	CTR_CONNECTIONS_OPENED,
	CTR_BYTES_IN,
	CTR_BYTES_OUT,
	CTR_KEEPALIVE_DROPS,
	CTR_COUNT
} PresenceCounter;

/* Per-type message counters for /metrics: the tables, and room in each. */
typedef enum CountedTable
{
	COUNTED_REQUESTS,			/* messages in, by RequestType */
	COUNTED_SERVER_MESSAGES,	/* messages out, by server_message_types[] */
	COUNTED_ERRORS,				/* errors sent, by protocol_error_codes[] */
	COUNTED_TABLES
} CountedTable;
#define COUNTED_TYPES 16

/* Fan-out latency histogram bucket upper bounds, in microseconds. */
#define LATENCY_BUCKETS 14
extern const int64 presence_latency_bounds_us[LATENCY_BUCKETS];

typedef struct PresenceWorkerSlot
{
	int			pid;			/* 0 when the slot is free */
	Latch	   *latch;
	uint64		command_read_pos;
	int			sessions;
	int			users;
	bool		redis_connected;
	bool		database_ready;
} PresenceWorkerSlot;

/* Commands from SQL to the workers (presence._notify_workers). */
typedef enum PresenceCommandKind
{
	CMD_BROADCAST = 1,
	CMD_SESSION_ENDED,
	CMD_PARTICIPANT_REMOVED,
	CMD_PARTICIPANT_CHANGED
} PresenceCommandKind;

typedef struct PresenceCommand
{
	PresenceCommandKind kind;
	char		session_id[PRESENCE_SESSION_ID_MAX + 1];
	char		user_id[PRESENCE_UUID_LEN + 1];
	char	   *payload;		/* JSON text or NULL; palloc'd by the reader */
} PresenceCommand;

/* One live user of one session on one worker, as online_users() sees it. */
typedef struct LiveUserKey
{
	char		session_id[PRESENCE_SESSION_ID_MAX + 1];
	char		user_id[PRESENCE_UUID_LEN + 1];
	int			worker;
} LiveUserKey;

typedef struct LiveUserEntry
{
	LiveUserKey key;
	char		username[PRESENCE_USERNAME_MAX + 1];
	char		role[PRESENCE_ROLE_MAX + 1];
	char		status[8];
	int64		last_seen_ms;	/* Unix milliseconds */
	bool		has_cursor;
	char		cursor_event_id[PRESENCE_EVENT_ID_MAX + 1];
	int64		cursor_position;
	char		activity[PRESENCE_ACTIVITY_MAX + 1];
	int			connections;
} LiveUserEntry;

extern void presence_shmem_request(void);
extern void presence_shmem_startup(void);

extern void presence_count(PresenceCounter counter, uint64 n);
extern uint64 presence_counter_value(PresenceCounter counter);
extern void presence_count_message_in(int request_type);
extern void presence_count_error(int error_code);
extern uint64 presence_typed_count(CountedTable table, int index);
extern void presence_count_delivery(int server_type, uint64 bytes, int64 latency_us);
extern void presence_counts_flush(void);
extern void presence_latency_snapshot(uint64 *buckets, uint64 *count, int64 *sum_us);
extern double presence_latency_quantile_ms(double quantile);

extern PresenceWorkerSlot *presence_worker_attach(int worker_index);
/* What presence_node_gauges sums over the node's ws workers. */
typedef struct NodeGauges
{
	int			workers;
	int			connections;	/* the node's, as presence.max_connections counts them */
	int64		sessions;
	int64		users;
	bool		databases_ready;	/* every worker's database is ready */
	bool		redis_connected;	/* every worker is connected to Redis */
} NodeGauges;

extern void presence_node_gauges(NodeGauges *gauges);
extern bool presence_connection_admit(void);
extern void presence_connection_release(void);
extern int	presence_connections_total(void);

extern const char *presence_command_name(PresenceCommandKind kind);
extern PresenceCommandKind presence_command_kind(const char *name);
extern void presence_command_enqueue(PresenceCommandKind kind, const char *session_id,
									 const char *user_id, const char *payload);
extern bool presence_command_next(int worker_index, PresenceCommand *command);

extern void presence_users_publish(LiveUserEntry *entries, int count, LiveUserKey *removed, int nremoved);
extern int	presence_users_lookup(const char *session_id, const char *user_id, LiveUserEntry *merged);

#endif							/* PRESENCE_SHMEM_H */
