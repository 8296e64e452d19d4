/*-------------------------------------------------------------------------
 * primary_link.c
 *	  On a hot standby, a ws worker's writes go to the primary: one libpq
 *	  connection driven asynchronously on the worker's libuv loop.
 *
 * Requests are queued and sent one at a time, in order; each gets its
 * callback with the primary's result once the statement has committed
 * (each is one autocommitted statement), or with NULL when the
 * connection failed.  The caller keeps what it sent until it hears back,
 * so a primary restart or failover delays writes and loses none.  After
 * a failure the link reconnects with a backoff (backoff.c), 200 ms
 * doubling to 1 s: a write waiting for the primary is worth trying
 * often, and one worker's attempt a second costs the primary little.
 *
 * Where to connect: presence.primary_conninfo, else the standby's own
 * primary_conninfo, with dbname set to presence.database and any
 * replication keyword removed.
 *-------------------------------------------------------------------------
 */
#include "presence.h"

#include "libpq-fe.h"
#include "utils/guc.h"

#include "backoff.h"
#include "primary_link.h"

#define BACKOFF_FIRST_MS 200
#define BACKOFF_CAP_MS 1000

typedef struct PrimaryStatement
{
	char	   *sql;
	int			nparams;
	char	   *params[PRIMARY_LINK_MAX_PARAMS];
	PrimaryReply done;
	void	   *context;
	struct PrimaryStatement *next;
} PrimaryStatement;

typedef enum PrimaryLinkState
{
	PRIMARY_IDLE,				/* no connection, none wanted yet */
	PRIMARY_WAITING,			/* backing off before the next attempt */
	PRIMARY_CONNECTING,
	PRIMARY_READY,
	PRIMARY_BUSY				/* a statement is in flight */
} PrimaryLinkState;

static uv_loop_t *primary_loop;
static PGconn *primary_conn;
static uv_poll_t primary_poll;
static bool primary_poll_active;
static uv_timer_t primary_timer;
static PrimaryLinkState primary_state = PRIMARY_IDLE;
static Backoff primary_backoff = BACKOFF_INIT(BACKOFF_FIRST_MS, BACKOFF_CAP_MS);
static PrimaryStatement *pending_head;
static PrimaryStatement *pending_tail;

static void primary_drive(void);

void
primary_link_start(uv_loop_t *loop)
{
	primary_loop = loop;
	uv_timer_init(loop, &primary_timer);
}

static void
statement_free(PrimaryStatement *statement)
{
	free(statement->sql);
	for (int i = 0; i < statement->nparams; i++)
		free(statement->params[i]);
	free(statement);
}

/*
 * Queues one statement for the primary.  params may hold NULLs (SQL
 * NULL).  Returns false when out of memory.
 */
bool
primary_link_send(const char *sql, int nparams, const char *const *params,
				  PrimaryReply done, void *context)
{
	PrimaryStatement *statement = calloc(1, sizeof(PrimaryStatement));

	if (statement == NULL || nparams > PRIMARY_LINK_MAX_PARAMS || (statement->sql = strdup(sql)) == NULL)
	{
		free(statement);
		return false;
	}
	statement->nparams = nparams;
	for (int i = 0; i < nparams; i++)
		if (params[i] && (statement->params[i] = strdup(params[i])) == NULL)
		{
			statement_free(statement);
			return false;
		}
	statement->done = done;
	statement->context = context;
	if (pending_tail)
		pending_tail->next = statement;
	else
		pending_head = statement;
	pending_tail = statement;
	primary_drive();
	return true;
}

/*
 * The connection string: ours, or the standby's, aimed at
 * presence.database (malloc'd; NULL when there is none).
 */
char *
primary_conninfo_for_writes(void)
{
	const char *configured = presence_primary_conninfo && presence_primary_conninfo[0] ?
		presence_primary_conninfo : GetConfigOption("primary_conninfo", true, false);
	PQconninfoOption *options;
	char	   *error = NULL;
	size_t		capacity = 1024,
				len = 0;
	char	   *result;

	if (configured == NULL || (options = PQconninfoParse(configured, &error)) == NULL)
	{
		PQfreemem(error);
		return NULL;
	}
	result = malloc(capacity);
	for (PQconninfoOption *option = options; result && option->keyword; option++)
	{
		const char *value = option->val;
		char		session_options[512];
		int			needed;

		if (strcmp(option->keyword, "replication") == 0)
			continue;
		if (strcmp(option->keyword, "options") == 0)
		{
			/*
			 * The primary's backend runs our writes with the bounds and the
			 * search_path of the workers' own transactions (worker_db.c),
			 * so a held lock or a synchronous standby that has gone delays
			 * a standby's writes by a lock timeout, not forever.
			 */
			snprintf(session_options, sizeof(session_options),
					 "%s -c lock_timeout=%dms -c statement_timeout=%dms -c synchronous_commit=local"
					 " -c search_path=pg_catalog,pg_temp",
					 value ? value : "", presence_db_lock_timeout_ms, presence_db_statement_timeout_ms);
			value = session_options;
		}
		if (strcmp(option->keyword, "dbname") == 0)
			value = presence_database;
		else if (strcmp(option->keyword, "application_name") == 0)
			value = "presence standby writes";
		else if (strcmp(option->keyword, "connect_timeout") == 0 && (value == NULL || value[0] == '\0'))
			value = "5";
		if (value == NULL || value[0] == '\0')
			continue;
		needed = snprintf(result + len, capacity - len, "%s='", option->keyword);
		len += needed;
		for (const char *c = value; *c && len + 4 < capacity; c++)
		{
			if (*c == '\'' || *c == '\\')
				result[len++] = '\\';
			result[len++] = *c;
		}
		if (len + 3 >= capacity)
			break;
		result[len++] = '\'';
		result[len++] = ' ';
		result[len] = '\0';
	}
	PQconninfoFree(options);
	return result;
}

/* Closes the connection and stops watching its socket. */
static void
primary_disconnect(void)
{
	if (primary_poll_active)
	{
		uv_poll_stop(&primary_poll);
		uv_close((uv_handle_t *) &primary_poll, NULL);
		primary_poll_active = false;
	}
	if (primary_conn)
		PQfinish(primary_conn);
	primary_conn = NULL;
}

static void
retry_timer_fired(uv_timer_t *timer)
{
	primary_state = PRIMARY_IDLE;
	primary_drive();
}

/*
 * Drops the connection, fails the statement in flight back to its owner,
 * backs off; logs the first failure of an outage.
 */
static void
primary_failed(const char *detail)
{
	if (!backoff_in_outage(&primary_backoff))
		ereport(LOG,
				(errmsg("presence: cannot write to the primary: %s; writes wait and are retried",
						detail)));
	primary_disconnect();
	if (primary_state == PRIMARY_BUSY && pending_head)
	{
		PrimaryStatement *failed = pending_head;

		pending_head = failed->next;
		if (pending_head == NULL)
			pending_tail = NULL;
		failed->done(NULL, failed->context);
		statement_free(failed);
	}
	primary_state = PRIMARY_WAITING;
	uv_timer_start(&primary_timer, retry_timer_fired, backoff_next_delay(&primary_backoff), 0);
}

static void on_socket(uv_poll_t *poll, int status, int events);

static void
watch_socket(int events)
{
	if (!primary_poll_active)
	{
		uv_poll_init(primary_loop, &primary_poll, PQsocket(primary_conn));
		primary_poll_active = true;
	}
	uv_poll_start(&primary_poll, events, on_socket);
}

/* Reads what the primary answered; calls back when the statement is done. */
static void
collect_result(void)
{
	PGresult   *result = NULL;
	PGresult   *next;
	PrimaryStatement *statement = pending_head;

	if (!PQconsumeInput(primary_conn))
	{
		primary_failed(PQerrorMessage(primary_conn));
		return;
	}
	if (PQisBusy(primary_conn))
		return;
	while ((next = PQgetResult(primary_conn)) != NULL)
	{
		if (result)
			PQclear(result);
		result = next;
	}
	pending_head = statement->next;
	if (pending_head == NULL)
		pending_tail = NULL;
	primary_state = PRIMARY_READY;
	statement->done(result, statement->context);
	statement_free(statement);
	if (result)
		PQclear(result);
	primary_drive();
}

static void
on_socket(uv_poll_t *poll, int status, int events)
{
	/* libuv stops watching a socket it reports an error on */
	if (status < 0)
	{
		primary_failed(uv_strerror(status));
		return;
	}
	if (primary_state == PRIMARY_CONNECTING)
		primary_drive();
	else if (primary_state == PRIMARY_BUSY)
	{
		if ((events & UV_WRITABLE) && PQflush(primary_conn) == 0)
			watch_socket(UV_READABLE);
		if (events & UV_READABLE)
			collect_result();
	}
	else if (primary_state == PRIMARY_READY && (events & UV_READABLE) && !PQconsumeInput(primary_conn))
		primary_failed(PQerrorMessage(primary_conn));
}

/*
 * The link's state machine: connect when there is something to send,
 * follow PQconnectPoll, send the next statement when ready.
 */
static void
primary_drive(void)
{
	if (primary_loop == NULL)
		return;
	if (primary_state == PRIMARY_IDLE && pending_head)
	{
		char	   *conninfo = primary_conninfo_for_writes();

		if (conninfo == NULL)
		{
			primary_state = PRIMARY_CONNECTING;
			primary_failed("no primary_conninfo to reach it");
			return;
		}
		primary_conn = PQconnectStart(conninfo);
		free(conninfo);
		primary_state = PRIMARY_CONNECTING;
		if (primary_conn == NULL || PQstatus(primary_conn) == CONNECTION_BAD)
		{
			primary_failed(primary_conn ? PQerrorMessage(primary_conn) : "out of memory");
			return;
		}
	}
	if (primary_state == PRIMARY_CONNECTING)
	{
		switch (PQconnectPoll(primary_conn))
		{
			case PGRES_POLLING_READING:
				watch_socket(UV_READABLE);
				return;
			case PGRES_POLLING_WRITING:
				watch_socket(UV_WRITABLE);
				return;
			case PGRES_POLLING_OK:
				if (backoff_succeeded(&primary_backoff))
					ereport(LOG, (errmsg("presence: writing to the primary again")));
				PQsetnonblocking(primary_conn, 1);
				primary_state = PRIMARY_READY;
				watch_socket(UV_READABLE);
				break;
			default:
				primary_failed(PQerrorMessage(primary_conn));
				return;
		}
	}
	if (primary_state == PRIMARY_READY && pending_head)
	{
		PrimaryStatement *statement = pending_head;

		if (!PQsendQueryParams(primary_conn, statement->sql, statement->nparams, NULL,
							   (const char *const *) statement->params, NULL, NULL, 0))
		{
			primary_state = PRIMARY_BUSY;
			primary_failed(PQerrorMessage(primary_conn));
			return;
		}
		primary_state = PRIMARY_BUSY;
		watch_socket(PQflush(primary_conn) == 0 ? UV_READABLE : UV_READABLE | UV_WRITABLE);
	}
}

void
primary_link_stop(void)
{
	while (pending_head)
	{
		PrimaryStatement *statement = pending_head;

		pending_head = statement->next;
		statement->done(NULL, statement->context);
		statement_free(statement);
	}
	pending_tail = NULL;
	primary_disconnect();
	if (primary_loop)
	{
		uv_timer_stop(&primary_timer);
		uv_close((uv_handle_t *) &primary_timer, NULL);
	}
	primary_loop = NULL;
}
