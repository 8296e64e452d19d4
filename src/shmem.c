/*-------------------------------------------------------------------------
 * shmem.c
 *	  Shared memory between the presence workers and ordinary backends.
 *
 *	  - counters and the fan-out latency histogram (atomics, no lock);
 *	  - a slot per ws worker: its latch, so SQL can wake it, and gauges;
 *	  - the live-user table online_users() reads, written by each worker
 *		once per loop pass for the users that changed;
 *	  - the command queue that carries broadcast / end_session /
 *		remove_participant from SQL to the workers.
 *
 * The command queue is a byte ring of variable-length records with one
 * read position per worker.  A transaction reserves its records at
 * PRE_COMMIT (where an error can still abort it, e.g. when the queue is
 * full), marks them ready at COMMIT and cancelled at ABORT, so a
 * rolled-back end_session reaches nobody.  Readers stop at the first
 * record still pending, which keeps commands in commit order.
 *-------------------------------------------------------------------------
 */
#include "presence.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"

#include "shmem.h"

#define COMMAND_RING_BYTES (4 * 1024 * 1024)

const int64 presence_latency_bounds_us[LATENCY_BUCKETS] = {
	100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000,
	250000, 500000, 1000000, INT64_MAX
};

typedef enum RecordState
{
	RECORD_PENDING = 1,
	RECORD_READY,
	RECORD_SKIP					/* cancelled, or padding before a wrap */
} RecordState;

typedef struct CommandRecord
{
	uint32		total_len;		/* header + payload, MAXALIGNed */
	uint32		state;
	uint32		kind;
	uint32		payload_len;	/* 0 = no payload */
	char		session_id[PRESENCE_SESSION_ID_MAX + 1];
	char		user_id[PRESENCE_UUID_LEN + 1];
	/* payload bytes follow */
} CommandRecord;

#define RECORD_HEADER_BYTES MAXALIGN(sizeof(CommandRecord))

static void presence_users_forget_worker(int worker);

typedef struct PresenceShared
{
	LWLock	   *command_lock;
	LWLock	   *live_lock;
	pg_atomic_uint64 counters[CTR_COUNT];
	pg_atomic_uint64 typed[COUNTED_TABLES][COUNTED_TYPES];
	pg_atomic_uint64 latency_buckets[LATENCY_BUCKETS];
	pg_atomic_uint64 latency_sum_us;
	pg_atomic_uint32 connections;
	PresenceWorkerSlot workers[PRESENCE_MAX_WORKERS];
	uint64		command_write_pos;
	char		command_ring[COMMAND_RING_BYTES];
} PresenceShared;

/* A command this transaction will send, and where it was reserved. */
typedef struct PendingCommand
{
	PresenceCommandKind kind;
	char		session_id[PRESENCE_SESSION_ID_MAX + 1];
	char		user_id[PRESENCE_UUID_LEN + 1];
	char	   *payload;
	SubTransactionId subxact;
	bool		reserved;
	uint64		position;
	struct PendingCommand *next;
} PendingCommand;

static PresenceShared *shared = NULL;
static HTAB *live_users = NULL;
static PendingCommand *pending_commands = NULL;
static uint32 admitted_here = 0;	/* of shared->connections, taken by this process */
static bool command_callbacks_registered = false;

static int	live_user_capacity(void);
static void commands_xact_callback(XactEvent event, void *arg);
static void commands_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
									  SubTransactionId parentSubid, void *arg);
static void commands_reserve(void);
static void commands_finish(RecordState state);
static CommandRecord *record_at(uint64 position);
static void worker_detach(int code, Datum arg);

/* The names SQL uses for commands (presence._notify_workers). */
const char *
presence_command_name(PresenceCommandKind kind)
{
	switch (kind)
	{
		case CMD_BROADCAST:
			return "broadcast";
		case CMD_SESSION_ENDED:
			return "session_ended";
		case CMD_PARTICIPANT_REMOVED:
			return "participant_removed";
		case CMD_PARTICIPANT_CHANGED:
			return "participant_changed";
	}
	return "unknown";
}

/* The command a name gives (presence._notify_workers, another node's message); 0 for none. */
PresenceCommandKind
presence_command_kind(const char *name)
{
	for (PresenceCommandKind kind = CMD_BROADCAST; kind <= CMD_PARTICIPANT_CHANGED; kind++)
		if (strcmp(name, presence_command_name(kind)) == 0)
			return kind;
	return 0;
}

static int
live_user_capacity(void)
{
	return Max(presence_max_connections, 1024);
}

/* shmem_request_hook: space for the shared struct, the table, two locks. */
void
presence_shmem_request(void)
{
	RequestAddinShmemSpace(MAXALIGN(sizeof(PresenceShared)));
	RequestAddinShmemSpace(hash_estimate_size(live_user_capacity(), sizeof(LiveUserEntry)));
	RequestNamedLWLockTranche("presence", 2);
}

/* shmem_startup_hook: attach to (or create) the shared state. */
void
presence_shmem_startup(void)
{
	bool		found;
	HASHCTL		info = {.keysize = sizeof(LiveUserKey), .entrysize = sizeof(LiveUserEntry)};

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	shared = ShmemInitStruct("presence", sizeof(PresenceShared), &found);
	if (!found)
	{
		LWLockPadded *locks = GetNamedLWLockTranche("presence");

		memset(shared, 0, offsetof(PresenceShared, command_ring));
		shared->command_lock = &locks[0].lock;
		shared->live_lock = &locks[1].lock;
		for (int i = 0; i < CTR_COUNT; i++)
			pg_atomic_init_u64(&shared->counters[i], 0);
		for (int t = 0; t < COUNTED_TABLES; t++)
			for (int i = 0; i < COUNTED_TYPES; i++)
				pg_atomic_init_u64(&shared->typed[t][i], 0);
		for (int i = 0; i < LATENCY_BUCKETS; i++)
			pg_atomic_init_u64(&shared->latency_buckets[i], 0);
		pg_atomic_init_u64(&shared->latency_sum_us, 0);
		pg_atomic_init_u32(&shared->connections, 0);
	}
	live_users = ShmemInitHash("presence live users", live_user_capacity(), live_user_capacity(),
							   &info, HASH_ELEM | HASH_BLOBS | HASH_FIXED_SIZE);
	LWLockRelease(AddinShmemInitLock);
}

void
presence_count(PresenceCounter counter, uint64 n)
{
	if (shared)
		pg_atomic_fetch_add_u64(&shared->counters[counter], n);
}

uint64
presence_counter_value(PresenceCounter counter)
{
	return shared ? pg_atomic_read_u64(&shared->counters[counter]) : 0;
}

static void
count_typed(CountedTable table, int index)
{
	if (shared && index >= 0 && index < COUNTED_TYPES)
		pg_atomic_fetch_add_u64(&shared->typed[table][index], 1);
}

void
presence_count_message_in(int request_type)
{
	presence_count(CTR_MESSAGES_IN, 1);
	count_typed(COUNTED_REQUESTS, request_type);
}

void
presence_count_error(int error_code)
{
	presence_count(CTR_ERRORS_SENT, 1);
	count_typed(COUNTED_ERRORS, error_code);
}

uint64
presence_typed_count(CountedTable table, int index)
{
	return shared ? pg_atomic_read_u64(&shared->typed[table][index]) : 0;
}

/*
 * Deliveries are counted here first and added to shared memory once per
 * pass (presence_counts_flush): five atomic adds per delivery, on cache
 * lines every worker writes, cost as much as a tenth of the send itself.
 */
static struct
{
	uint64		messages;
	uint64		bytes;
	uint64		by_type[COUNTED_TYPES];
	uint64		latency_buckets[LATENCY_BUCKETS];
	uint64		latency_sum_us;
}			pending_deliveries;

/*
 * One frame written to a client: its server_messages index (-1: none),
 * payload bytes, and the latency from its oldest event (-1: not an event).
 */
void
presence_count_delivery(int server_type, uint64 bytes, int64 latency_us)
{
	pending_deliveries.messages++;
	pending_deliveries.bytes += bytes;
	if (server_type >= 0 && server_type < COUNTED_TYPES)
		pending_deliveries.by_type[server_type]++;
	if (latency_us >= 0)
	{
		int			bucket = 0;

		while (latency_us > presence_latency_bounds_us[bucket])
			bucket++;
		pending_deliveries.latency_buckets[bucket]++;
		pending_deliveries.latency_sum_us += (uint64) latency_us;
	}
}

static void
flush_count(pg_atomic_uint64 *shared_count, uint64 *pending)
{
	if (*pending)
		pg_atomic_fetch_add_u64(shared_count, *pending);
	*pending = 0;
}

/* Adds the deliveries counted since the last flush to shared memory. */
void
presence_counts_flush(void)
{
	if (!shared || pending_deliveries.messages == 0)
		return;
	flush_count(&shared->counters[CTR_MESSAGES_OUT], &pending_deliveries.messages);
	flush_count(&shared->counters[CTR_BYTES_OUT], &pending_deliveries.bytes);
	for (int i = 0; i < COUNTED_TYPES; i++)
		flush_count(&shared->typed[COUNTED_SERVER_MESSAGES][i], &pending_deliveries.by_type[i]);
	for (int i = 0; i < LATENCY_BUCKETS; i++)
		flush_count(&shared->latency_buckets[i], &pending_deliveries.latency_buckets[i]);
	flush_count(&shared->latency_sum_us, &pending_deliveries.latency_sum_us);
}

void
presence_latency_snapshot(uint64 *buckets, uint64 *count, int64 *sum_us)
{
	*count = 0;
	for (int i = 0; i < LATENCY_BUCKETS; i++)
	{
		buckets[i] = shared ? pg_atomic_read_u64(&shared->latency_buckets[i]) : 0;
		*count += buckets[i];
	}
	*sum_us = shared ? (int64) pg_atomic_read_u64(&shared->latency_sum_us) : 0;
}

/*
 * A quantile of the fan-out latency since start, in milliseconds,
 * interpolated linearly inside its histogram bucket.
 */
double
presence_latency_quantile_ms(double quantile)
{
	uint64		buckets[LATENCY_BUCKETS];
	uint64		count,
				seen = 0;
	int64		sum_us;
	double		target;

	presence_latency_snapshot(buckets, &count, &sum_us);
	if (count == 0)
		return 0.0;
	target = quantile * (double) count;
	for (int i = 0; i < LATENCY_BUCKETS; i++)
	{
		if (buckets[i] > 0 && (double) (seen + buckets[i]) >= target)
		{
			double		low = i == 0 ? 0.0 : (double) presence_latency_bounds_us[i - 1];
			double		high = i == LATENCY_BUCKETS - 1 ? low * 2 : (double) presence_latency_bounds_us[i];

			return (low + (high - low) * (target - (double) seen) / (double) buckets[i]) / 1000.0;
		}
		seen += buckets[i];
	}
	return 0.0;
}

/*
 * Claims worker slot worker_index for this process: publishes its latch
 * and starts its command reading at the current end of the queue (what
 * was sent before it started was for connections it never had).
 */
PresenceWorkerSlot *
presence_worker_attach(int worker_index)
{
	PresenceWorkerSlot *slot = &shared->workers[worker_index];

	LWLockAcquire(shared->command_lock, LW_EXCLUSIVE);
	memset(slot, 0, sizeof(*slot));
	slot->pid = MyProcPid;
	slot->latch = MyLatch;
	slot->command_read_pos = shared->command_write_pos;
	LWLockRelease(shared->command_lock);
	before_shmem_exit(worker_detach, Int32GetDatum(worker_index));
	return slot;
}

static void
worker_detach(int code, Datum arg)
{
	int			worker_index = DatumGetInt32(arg);
	PresenceWorkerSlot *slot = &shared->workers[worker_index];

	presence_users_forget_worker(worker_index);
	LWLockAcquire(shared->command_lock, LW_EXCLUSIVE);
	/* places this process still holds: its clients did not all close */
	pg_atomic_fetch_sub_u32(&shared->connections, admitted_here);
	admitted_here = 0;
	memset(slot, 0, sizeof(*slot));
	LWLockRelease(shared->command_lock);
}

/* The node's gauges, summed over its running ws workers: stats(), /metrics, /healthz. */
void
presence_node_gauges(NodeGauges *gauges)
{
	memset(gauges, 0, sizeof(*gauges));
	gauges->databases_ready = true;
	gauges->redis_connected = true;
	if (!shared)
		return;
	gauges->connections = pg_atomic_read_u32(&shared->connections);
	LWLockAcquire(shared->command_lock, LW_SHARED);
	for (int i = 0; i < PRESENCE_MAX_WORKERS; i++)
	{
		PresenceWorkerSlot *slot = &shared->workers[i];

		if (slot->pid == 0)
			continue;
		gauges->workers++;
		gauges->sessions += slot->sessions;
		gauges->users += slot->users;
		gauges->databases_ready &= slot->database_ready;
		gauges->redis_connected &= slot->redis_connected;
	}
	LWLockRelease(shared->command_lock);
}

/* Takes one of the node's presence.max_connections places, if one is free. */
bool
presence_connection_admit(void)
{
	uint32		current = pg_atomic_read_u32(&shared->connections);

	while (current < (uint32) presence_max_connections)
	{
		if (pg_atomic_compare_exchange_u32(&shared->connections, &current, current + 1))
		{
			admitted_here++;
			return true;
		}
	}
	return false;
}

void
presence_connection_release(void)
{
	admitted_here--;
	pg_atomic_fetch_sub_u32(&shared->connections, 1);
}

int
presence_connections_total(void)
{
	return shared ? (int) pg_atomic_read_u32(&shared->connections) : 0;
}

/*
 * Queues a command for the workers, sent when the current transaction
 * commits.  Without shared memory (library not preloaded) there are no
 * workers to tell.
 */
void
presence_command_enqueue(PresenceCommandKind kind, const char *session_id,
						 const char *user_id, const char *payload)
{
	PendingCommand *command;

	if (!shared)
		return;
	if (!command_callbacks_registered)
	{
		RegisterXactCallback(commands_xact_callback, NULL);
		RegisterSubXactCallback(commands_subxact_callback, NULL);
		command_callbacks_registered = true;
	}
	if (payload && strlen(payload) > COMMAND_RING_BYTES / 8)
		ereport(ERROR, (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
						errmsg("presence: command payload is too large (%zu bytes)", strlen(payload))));

	command = MemoryContextAllocZero(TopTransactionContext, sizeof(PendingCommand));
	command->kind = kind;
	strlcpy(command->session_id, session_id, sizeof(command->session_id));
	if (user_id)
		strlcpy(command->user_id, user_id, sizeof(command->user_id));
	if (payload)
		command->payload = MemoryContextStrdup(TopTransactionContext, payload);
	command->subxact = GetCurrentSubTransactionId();
	command->next = pending_commands;
	pending_commands = command;
}

static CommandRecord *
record_at(uint64 position)
{
	return (CommandRecord *) (shared->command_ring + position % COMMAND_RING_BYTES);
}

/*
 * PRE_COMMIT: reserves and writes this transaction's commands as pending
 * records, in the order they were issued.  Raises an error (aborting the
 * transaction) when the slowest worker has not made room.
 */
static void
commands_reserve(void)
{
	PendingCommand *ordered = NULL;
	uint64		oldest_read;
	bool		any_worker = false;

	/* pending_commands is newest first; reverse it once */
	while (pending_commands)
	{
		PendingCommand *next = pending_commands->next;

		pending_commands->next = ordered;
		ordered = pending_commands;
		pending_commands = next;
	}
	pending_commands = ordered;

	LWLockAcquire(shared->command_lock, LW_EXCLUSIVE);
	oldest_read = shared->command_write_pos;
	for (int i = 0; i < PRESENCE_MAX_WORKERS; i++)
		if (shared->workers[i].pid != 0)
		{
			any_worker = true;
			oldest_read = Min(oldest_read, shared->workers[i].command_read_pos);
		}
	for (PendingCommand *command = pending_commands; command && any_worker; command = command->next)
	{
		uint32		payload_len = command->payload ? (uint32) strlen(command->payload) : 0;
		uint32		total = (uint32) MAXALIGN(RECORD_HEADER_BYTES + payload_len);
		uint64		until_wrap = COMMAND_RING_BYTES - shared->command_write_pos % COMMAND_RING_BYTES;
		uint64		needed = total + (until_wrap < total ? until_wrap : 0);
		CommandRecord *record;

		if (shared->command_write_pos + needed - oldest_read > COMMAND_RING_BYTES)
		{
			LWLockRelease(shared->command_lock);
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
					 errmsg("presence: the worker command queue is full"),
					 errhint("The presence workers are not keeping up; retry shortly.")));
		}
		if (until_wrap < total)
		{
			/* pad to the end; records never straddle the wrap */
			if (until_wrap >= RECORD_HEADER_BYTES)
			{
				record = record_at(shared->command_write_pos);
				record->total_len = (uint32) until_wrap;
				record->state = RECORD_SKIP;
			}
			shared->command_write_pos += until_wrap;
		}
		record = record_at(shared->command_write_pos);
		record->total_len = total;
		record->state = RECORD_PENDING;
		record->kind = command->kind;
		record->payload_len = payload_len;
		memcpy(record->session_id, command->session_id, sizeof(record->session_id));
		memcpy(record->user_id, command->user_id, sizeof(record->user_id));
		if (payload_len)
			memcpy((char *) record + RECORD_HEADER_BYTES, command->payload, payload_len);
		command->reserved = true;
		command->position = shared->command_write_pos;
		shared->command_write_pos += total;
	}
	LWLockRelease(shared->command_lock);
}

/* COMMIT / ABORT: releases the reserved records and wakes the workers. */
static void
commands_finish(RecordState state)
{
	bool		any_reserved = false;

	LWLockAcquire(shared->command_lock, LW_EXCLUSIVE);
	for (PendingCommand *command = pending_commands; command; command = command->next)
		if (command->reserved)
		{
			record_at(command->position)->state = state;
			any_reserved = true;
		}
	if (any_reserved && state == RECORD_READY)
		for (int i = 0; i < PRESENCE_MAX_WORKERS; i++)
			if (shared->workers[i].pid != 0)
				SetLatch(shared->workers[i].latch);
	LWLockRelease(shared->command_lock);
	pending_commands = NULL;	/* the memory goes with TopTransactionContext */
}

static void
commands_xact_callback(XactEvent event, void *arg)
{
	if (pending_commands == NULL)
		return;
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
			commands_reserve();
			break;
		case XACT_EVENT_COMMIT:
			commands_finish(RECORD_READY);
			break;
		case XACT_EVENT_ABORT:
			commands_finish(RECORD_SKIP);
			break;
		case XACT_EVENT_PRE_PREPARE:
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("presence: cannot PREPARE a transaction that notifies presence workers")));
			break;
		default:
			break;
	}
}

/* Commands of an aborted subtransaction are forgotten; committed ones move up. */
static void
commands_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						  SubTransactionId parentSubid, void *arg)
{
	PendingCommand **link = &pending_commands;

	while (*link)
	{
		PendingCommand *command = *link;

		if (command->subxact == mySubid && event == SUBXACT_EVENT_ABORT_SUB)
		{
			*link = command->next;
			continue;
		}
		if (command->subxact == mySubid && event == SUBXACT_EVENT_COMMIT_SUB)
			command->subxact = parentSubid;
		link = &command->next;
	}
}

/*
 * The next ready command for this worker, copied out (payload palloc'd
 * in the caller's context).  Returns false when there is none yet.
 */
bool
presence_command_next(int worker_index, PresenceCommand *command)
{
	PresenceWorkerSlot *slot = &shared->workers[worker_index];
	bool		found = false;

	LWLockAcquire(shared->command_lock, LW_EXCLUSIVE);
	while (!found && slot->command_read_pos < shared->command_write_pos)
	{
		uint64		until_wrap = COMMAND_RING_BYTES - slot->command_read_pos % COMMAND_RING_BYTES;
		CommandRecord *record;

		if (until_wrap < RECORD_HEADER_BYTES)
		{
			slot->command_read_pos += until_wrap;
			continue;
		}
		record = record_at(slot->command_read_pos);
		if (record->state == RECORD_PENDING)
			break;
		if (record->state == RECORD_READY)
		{
			command->kind = (PresenceCommandKind) record->kind;
			memcpy(command->session_id, record->session_id, sizeof(command->session_id));
			memcpy(command->user_id, record->user_id, sizeof(command->user_id));
			command->payload = NULL;
			if (record->payload_len)
				command->payload = pnstrdup((char *) record + RECORD_HEADER_BYTES, record->payload_len);
			found = true;
		}
		slot->command_read_pos += record->total_len;
	}
	LWLockRelease(shared->command_lock);
	return found;
}

/*
 * Publishes a worker's changed live users and removes the ones that left,
 * under one lock acquisition.  A full table drops new entries (counted);
 * the users are still served, online_users() just cannot list them.
 */
void
presence_users_publish(LiveUserEntry *entries, int count, LiveUserKey *removed, int nremoved)
{
	LWLockAcquire(shared->live_lock, LW_EXCLUSIVE);
	for (int i = 0; i < nremoved; i++)
		hash_search(live_users, &removed[i], HASH_REMOVE, NULL);
	for (int i = 0; i < count; i++)
	{
		LiveUserEntry *entry = hash_search(live_users, &entries[i].key, HASH_ENTER_NULL, NULL);

		if (entry)
			*entry = entries[i];
		else
			presence_count(CTR_COMMANDS_DROPPED, 1);
	}
	LWLockRelease(shared->live_lock);
}

/* Drops everything a worker published; it is exiting or starting over. */
static void
presence_users_forget_worker(int worker)
{
	HASH_SEQ_STATUS scan;
	LiveUserEntry *entry;

	LWLockAcquire(shared->live_lock, LW_EXCLUSIVE);
	hash_seq_init(&scan, live_users);
	while ((entry = hash_seq_search(&scan)) != NULL)
		if (entry->key.worker == worker)
			hash_search(live_users, &entry->key, HASH_REMOVE, NULL);
	LWLockRelease(shared->live_lock);
}

/*
 * A user's live presence in a session merged over this node's workers:
 * the most recent entry wins, connections add up.  Returns the number of
 * connections (0 = not present here).
 */
int
presence_users_lookup(const char *session_id, const char *user_id, LiveUserEntry *merged)
{
	LiveUserKey key;
	int			connections = 0;

	if (!shared)
		return 0;
	memset(&key, 0, sizeof(key));
	strlcpy(key.session_id, session_id, sizeof(key.session_id));
	strlcpy(key.user_id, user_id, sizeof(key.user_id));
	LWLockAcquire(shared->live_lock, LW_SHARED);
	for (int worker = 0; worker < presence_workers; worker++)
	{
		LiveUserEntry *entry;

		key.worker = worker;
		entry = hash_search(live_users, &key, HASH_FIND, NULL);
		if (entry == NULL)
			continue;
		if (connections == 0 || entry->last_seen_ms > merged->last_seen_ms)
			*merged = *entry;
		connections += entry->connections;
	}
	LWLockRelease(shared->live_lock);
	merged->connections = connections;
	return connections;
}
