/*-------------------------------------------------------------------------
 *
 * loadgen.c
 *	  Load generator for the presence WebSocket server.
 *
 * Opens many WebSocket connections to a presence ws worker, authenticates
 * each with an HS256 JWT it mints itself, joins every connection to one of
 * a set of sessions, then sends heartbeats and cursor updates at a fixed
 * total rate and measures how long the server takes to fan each cursor
 * update out to the other users of the session.  The send time travels in
 * the cursor's "position" (microseconds since the generator started), so a
 * delivered event carries its own latency and needs no lookup.
 *
 * Everything runs on one thread: non-blocking sockets, one epoll set, the
 * client side of RFC 6455 written out here (upgrade, masking, framing,
 * ping/pong, close) and a small allocation-free JSON scanner for the few
 * fields it reads.  That keeps the generator far cheaper per message than
 * the server it measures.
 *
 * Optional side tasks: create the users, sessions and participants through
 * libpq beforehand, and sample the server worker's CPU time and RSS from
 * /proc to report server cost per connection and per message.
 *
 * Optional modes: permessage-deflate negotiated and used as Chromium does
 * (--deflate), activities, 50-user sessions and rejoins besides cursor
 * updates (--mix), a CSV line per second (--timeseries), cursor rate steps
 * for a saturation curve (--steps), and connections spread over many
 * loopback source addresses (--source-addresses).
 *
 * bench/loadgen.c
 *
 *-------------------------------------------------------------------------
 */
#define _GNU_SOURCE

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <zlib.h>

/*
 * Names derived from the connection index i: user id, username, and the
 * session it joins (number i % sessions).  Each has a printf format and
 * the same expression in SQL over an integer column (written for use
 * inside a printf format), so setup creates exactly what clients use.
 */
#define USER_ID_FORMAT "6c6f6164-0000-4000-8000-%012x"
#define USER_ID_SQL(var) \
	"format('6c6f6164-0000-4000-8000-%%s', lpad(to_hex(" var "), 12, '0'))::uuid"
#define USER_ID_LEN 36
#define USERNAME_FORMAT "bench-user-%d"
#define USERNAME_SQL(var) "('bench-user-' || " var ")"
#define SESSION_FORMAT "bench-%d"
#define SESSION_SQL(var) "('bench-' || " var ")"
#define LARGE_SESSION_FORMAT "bench-large-%d"
#define LARGE_SESSION_USERS 50	/* users of each --large-sessions session */
#define SESSION_ID_MAX 32

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define WS_OP_CONTINUATION 0x0
#define WS_OP_TEXT 0x1
#define WS_OP_BINARY 0x2
#define WS_OP_CLOSE 0x8
#define WS_OP_PING 0x9
#define WS_OP_PONG 0xA
#define WS_CLOSE_NORMAL 1000
#define WS_CLOSE_NO_STATUS 1005
#define WS_CLOSE_ABNORMAL 1006

#define MAX_HTTP_RESPONSE 16384
#define READ_CHUNK (256 * 1024)
#define MAX_EPOLL_EVENTS 1024
#define HOUSEKEEPING_US 100000
#define JSON_MAX_DEPTH 32

/* Log-linear latency histogram: exact below 128 us, then 64 steps per octave. */
#define HIST_EXACT 128
#define HIST_STEPS 64
#define HIST_BUCKETS (HIST_EXACT + 56 * HIST_STEPS)

/* permessage-deflate (RFC 7692) */
#define WS_RSV1 0x40
#define DEFLATE_OFFER "permessage-deflate; client_max_window_bits"	/* Chromium's */
#define DEFLATE_TAIL_LEN 4		/* the 00 00 ff ff a sync flush ends with */
#define DEFLATE_MEM_LEVEL 8		/* Chromium's, and zlib's default */

#define MAX_STEPS 64
#define ACTIVITY_TEXT_MIN 200	/* bytes of text in a --mix activity */
#define ACTIVITY_TEXT_SPREAD 300

#define SETUP_CHUNK 5000		/* users per add_participant statement */
#define COUNTER_SLOTS 48
#define COUNTER_NAME_MAX 64
#define MAX_SERVER_PIDS 64

/* Command-line settings. */
typedef struct Options
{
	const char *host;
	int			port;
	const char *path;
	const char *subprotocol;	/* "" offers none */
	int			connections;
	int			first_user;		/* index of the first user, to split users over generators */
	long		clock_origin;	/* Unix seconds where positions start; 0 = at start */
	int			sessions;
	double		rate;			/* cursor updates per second, in total */
	double		duration;		/* measured window, seconds */
	double		warmup;			/* load before the window, seconds */
	double		heartbeat_interval; /* seconds; 0 = as announced in welcome */
	double		ramp_rate;		/* new connections per second */
	double		connect_timeout;	/* from connect() to session_joined */
	double		idle_seconds;	/* server idle CPU sample before the load */
	double		drain;			/* receive-only time after the window */
	double		close_timeout;
	double		progress;		/* seconds between progress lines */
	int			tick_us;		/* event-loop period */
	double		wait_ready;		/* how long to wait for the port to open */
	const char *jwt_secret;
	int			token_ttl;
	const char *pg_conninfo;
	bool		setup;
	const char *server_pids;
	size_t		max_message;
	bool		deflate;		/* offer permessage-deflate as Chromium does */
	bool		mix;			/* activities, large sessions and rejoins too */
	double		activity_rate;	/* activities per second in total; < 0 = not given */
	int			large_sessions; /* sessions of LARGE_SESSION_USERS users; < 0 = not given */
	double		rejoin_rate;	/* leave + rejoin per second in total; < 0 = not given */
	const char *timeseries_path;
	const char *steps_spec;		/* RATE:SECONDS,... */
	const char *steps_csv_path;
	const char *histogram_path;
	double		step_settle;	/* unmeasured seconds at the start of each later step */
	int			source_addresses;	/* bind to 127.0.0.1 .. 127.0.0.N; 0 = do not bind */
} Options;

/* Lifecycle of one client connection; the order matters (see conn_end). */
typedef enum ConnState
{
	CONN_IDLE,					/* not opened yet */
	CONN_CONNECTING,			/* TCP connect in progress */
	CONN_UPGRADING,				/* upgrade request sent, waiting for 101 */
	CONN_AWAIT_WELCOME,
	CONN_AWAIT_JOINED,			/* session_join sent */
	CONN_JOINED,
	CONN_REJOINING,				/* session_leave sent, then session_join again */
	CONN_CLOSING,				/* our close frame sent */
	CONN_DONE,					/* socket closed */
	CONN_STATE_COUNT
} ConnState;

static const char *const conn_state_names[CONN_STATE_COUNT] = {
	"idle", "connecting", "upgrading", "awaiting welcome",
	"awaiting session_joined", "joined", "rejoining", "closing", "done"
};

/* A growable byte buffer. */
typedef struct ByteBuf
{
	uint8_t    *data;
	size_t		len;
	size_t		cap;
} ByteBuf;

/* One client connection (one user). */
typedef struct Conn
{
	int			index;
	int			fd;
	int			session;		/* index into run.session_joined */
	ConnState	state;
	bool		want_write;
	int64_t		deadline_us;
	char		user_id[USER_ID_LEN + 1];
	char		session_id[SESSION_ID_MAX];
	char		ws_key[25];
	ByteBuf		pending;		/* received bytes not yet parsed */
	ByteBuf		out;			/* bytes the socket has not taken yet */
	ByteBuf		fragments;		/* a fragmented message being reassembled */
	uint8_t		fragment_opcode;	/* 0 when not reassembling */
	bool		fragment_compressed;	/* RSV1 on its first frame */
	/* permessage-deflate as the server answered it (all false/0 when not negotiated) */
	bool		deflate;
	bool		client_no_context_takeover; /* compress each message afresh */
	bool		server_no_context_takeover; /* each server message inflates alone */
	uint8_t		client_window_bits;
	uint8_t		server_window_bits;
	z_stream   *deflater;		/* own, with context; NULL until the first message */
	z_stream   *inflater;		/* own, with context; NULL until the first message */
} Conn;

/* One server-to-client frame, pointing into the receive buffer. */
typedef struct WsFrame
{
	bool		fin;
	bool		rsv1;			/* compressed (first frame of a message) */
	uint8_t		opcode;
	const uint8_t *payload;
	size_t		len;
} WsFrame;

/* Counts per name (error codes, close codes, failure reasons, ...). */
typedef struct CounterTable
{
	int			used;
	char		names[COUNTER_SLOTS][COUNTER_NAME_MAX];
	uint64_t	counts[COUNTER_SLOTS];
	uint64_t	overflow;		/* names that found no free slot */
} CounterTable;

/* Latency histogram in microseconds. */
typedef struct Histogram
{
	uint64_t	counts[HIST_BUCKETS];
	uint64_t	total;
	int64_t		max;
} Histogram;

/* Emits one thing (a message or a heartbeat) at a steady rate. */
typedef struct Pacer
{
	double		rate;			/* per second; 0 = stopped */
	int64_t		start_us;
	uint64_t	issued;
	int			next_conn;		/* round-robin position */
} Pacer;

/* CPU time and resident memory of a set of processes at one instant. */
typedef struct ProcUsage
{
	bool		valid;
	int64_t		wall_us;
	uint64_t	cpu_ticks;
	int64_t		rss_kb;
} ProcUsage;

typedef enum Phase
{
	PHASE_RAMP,					/* opening connections */
	PHASE_WARMUP,				/* full load, not measured */
	PHASE_MEASURE,				/* full load, measured */
	PHASE_DRAIN,				/* no new cursor updates; collect stragglers */
	PHASE_CLOSE,				/* close handshakes */
	PHASE_DONE
} Phase;

static const char *const phase_names[] = {
	"ramp", "warmup", "measure", "drain", "close", "done"
};

/* Running totals of one kind of traffic, for rates over a period. */
typedef struct Traffic
{
	uint64_t	messages_sent;	/* every text frame sent */
	uint64_t	cursor_sent;
	uint64_t	heartbeats_sent;
	uint64_t	deliveries;		/* cursor events received */
	uint64_t	expected_deliveries;	/* other joined users at send time */
	/* by send time, like the above */
	uint64_t	activities_sent;
	uint64_t	expected_activity_deliveries;	/* joined users, sender included */
	uint64_t	rejoins_started;	/* session_leave sent */
	/* by receive time */
	uint64_t	activity_deliveries;	/* activity events received */
	uint64_t	activity_acks;
	uint64_t	rejoins_done;	/* session_joined after a rejoin */
	uint64_t	rejoin_users;	/* users listed in those */
	uint64_t	rejoin_bytes;	/* their (inflated) size */
	uint64_t	membership_events;	/* join and leave events received */
	/* bytes of data messages, payload only, by send or receive time */
	uint64_t	sent_bytes;		/* before compression */
	uint64_t	sent_wire_bytes;	/* as framed, after compression */
	uint64_t	sent_compressed;	/* messages sent with RSV1 */
	uint64_t	recv_messages;
	uint64_t	recv_compressed;	/* messages received with RSV1 */
	uint64_t	recv_wire_bytes;
	uint64_t	recv_bytes;		/* after inflating */
} Traffic;

/*
 * One step of the cursor rate (--steps; without it the whole window is
 * one step at --rate).  A step runs at its rate from settle_us on and is
 * measured from start_us to end_us: updates sent then, whenever they
 * arrive.
 */
typedef struct Step
{
	double		rate;
	double		seconds;
	int64_t		settle_us;
	int64_t		start_us;
	int64_t		end_us;
	Traffic		traffic;
	Histogram	latency;
	ProcUsage	server_start;
	ProcUsage	server_end;
	ProcUsage	self_start;
	ProcUsage	self_end;
} Step;

/* The --timeseries file: one line per second of the measured window. */
typedef struct TimeSeries
{
	FILE	   *file;
	int			second;			/* of the line being gathered, 1 first */
	int64_t		next_us;		/* when it ends */
	uint64_t	deliveries;		/* received in this second */
	uint64_t	cursor_sent_before;
	Histogram	latency;		/* of what was received in this second */
	ProcUsage	server_last;
	ProcUsage	self_last;
} TimeSeries;

/* The whole state of a run. */
typedef struct LoadRun
{
	Options		opt;
	struct sockaddr_storage server_addr;
	socklen_t	server_addr_len;
	Conn	   *conns;
	int		   *session_joined; /* joined connections per session */
	int			epfd;
	int			opened;
	int			state_count[CONN_STATE_COUNT];
	uint64_t	prng_state;
	int64_t		recv_us;		/* when the bytes being parsed arrived */
	int64_t		read_us;		/* when we read them */
	int64_t		realtime_origin_us; /* CLOCK_REALTIME at now_us() == 0 */
	char		jwt_header_b64[64];

	Phase		phase;
	volatile sig_atomic_t stop_requested;
	bool		interrupted;
	int64_t		ramp_start_us;
	int64_t		ramp_end_us;
	int64_t		window_start_us;
	int64_t		window_end_us;
	int64_t		drain_end_us;
	int64_t		close_end_us;
	int64_t		next_housekeeping_us;
	int64_t		next_progress_us;
	int64_t		heartbeat_interval_us;
	Pacer		cursor_pacer;
	Pacer		heartbeat_pacer;
	Pacer		activity_pacer;
	Pacer		rejoin_pacer;
	int			n_sessions;		/* --sessions + --large-sessions */
	uint64_t	activity_seq;

	Step	   *steps;
	int			n_steps;
	int			step_running;	/* whose rate the pacer runs, -1 before */
	int			step_measuring; /* whose window is open, -1 when none */
	TimeSeries	ts;

	int			deflate_negotiated; /* connections that agreed to permessage-deflate */
	int			deflate_declined;	/* connections whose server answered no extension */
	char		deflate_answer[256];	/* the first answer, for the report */
	z_stream   *shared_deflater[16];	/* by window bits, for client_no_context_takeover */
	z_stream   *shared_inflater;	/* for server_no_context_takeover */
	int			deflaters_allocated;	/* per-connection ones, for the report */
	int			inflaters_allocated;

	Traffic		total;			/* whole run */
	Traffic		window;			/* attributed to the measured window */
	Traffic		at_last_progress;
	Histogram	window_latency;
	Histogram	window_latency_by_size[2];	/* [1]: receivers in large sessions */
	Histogram	progress_latency;	/* since the last progress line */
	uint64_t	joined_ever;
	int			joined_at_ramp_end;
	int			held;			/* joined at the end of the window */
	double		measured_s;		/* length of the measured window */
	uint64_t	failed;			/* never joined */
	uint64_t	dropped;		/* lost after joining, before shutdown */
	uint64_t	close_acked;
	uint64_t	pings;
	uint64_t	own_echoes;		/* cursor events about the receiver itself */
	int64_t		longest_pass_us;	/* longest loop pass in the window */
	uint64_t	overrun_passes; /* passes in the window longer than a tick */
	CounterTable failures;
	CounterTable drops;
	CounterTable close_problems;
	CounterTable server_closes;	/* close frames the server started */
	CounterTable close_acks;	/* close frames answering ours */
	CounterTable errors;
	CounterTable received_types;
	CounterTable event_kinds;
	CounterTable anomalies;

	pid_t		server_pids[MAX_SERVER_PIDS];
	int			n_server_pids;
	pid_t		self_pid;
	ProcUsage	server_idle_start;	/* the idle sample runs up to ... */
	ProcUsage	server_before_connect;	/* ... this one */
	ProcUsage	server_after_connect;
	ProcUsage	server_window_start;
	ProcUsage	server_window_end;
	ProcUsage	self_window_start;
	ProcUsage	self_window_end;
	ProcUsage	server_at_last_progress;
	ProcUsage	self_at_last_progress;
} LoadRun;

static LoadRun run;
static struct timespec clock_origin;

static void conn_end(Conn *c, const char *reason);


/* ---------------------------------------------------------------------
 * Small utilities
 * ---------------------------------------------------------------------
 */

/*
 * Microseconds since the generator started, on the monotonic clock.  This
 * is the time base of cursor positions, so it stays small and positive.
 */
static int64_t
now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t) (ts.tv_sec - clock_origin.tv_sec) * 1000000 +
		(ts.tv_nsec - clock_origin.tv_nsec) / 1000;
}

/*
 * Note where now_us() == 0 falls on CLOCK_REALTIME, to convert kernel
 * receive timestamps (which are realtime).  Called again now and then so
 * that clock adjustments do not accumulate.
 */
static void
sync_realtime_origin(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	run.realtime_origin_us = (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000 - now_us();
}

/* Print a message and exit: for errors that leave nothing to measure. */
static void
fatal(const char *fmt,...)
{
	va_list		ap;

	va_start(ap, fmt);
	fputs("loadgen: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

/* malloc/realloc that exit on failure, so callers need no checks. */
static void *
xrealloc(void *ptr, size_t size)
{
	void	   *p = realloc(ptr, size);

	if (p == NULL)
		fatal("out of memory (%zu bytes)", size);
	return p;
}

/*
 * xorshift64* pseudo-random numbers for WebSocket keys and masks.  RFC 6455
 * wants masks unpredictable to scripts in a browser; a seeded PRNG is
 * plenty for a load generator and costs nothing per frame.
 */
static uint64_t
prng_next(void)
{
	uint64_t	x = run.prng_state;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	run.prng_state = x;
	return x * UINT64_C(2685821657736338717);
}

/* Make room for at least extra more bytes, growing geometrically. */
static void
buf_reserve(ByteBuf *b, size_t extra)
{
	if (b->len + extra > b->cap)
	{
		size_t		cap = b->cap ? b->cap : 512;

		while (cap < b->len + extra)
			cap *= 2;
		b->data = xrealloc(b->data, cap);
		b->cap = cap;
	}
}

/* Append bytes to a buffer. */
static void
buf_append(ByteBuf *b, const void *data, size_t len)
{
	buf_reserve(b, len);
	memcpy(b->data + b->len, data, len);
	b->len += len;
}

/* Drop the first n bytes of a buffer. */
static void
buf_consume(ByteBuf *b, size_t n)
{
	memmove(b->data, b->data + n, b->len - n);
	b->len -= n;
}

/* Release a buffer's memory. */
static void
buf_free(ByteBuf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

/*
 * Base64 (RFC 4648): the standard alphabet with padding for WebSocket
 * headers, or the URL alphabet without padding for JWTs.  out needs
 * 4 * ceil(len / 3) + 1 bytes.  Returns the encoded length.
 */
static size_t
base64_encode(const uint8_t *in, size_t len, char *out, bool url)
{
	const char *alphabet = url ?
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_" :
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t		o = 0;

	for (size_t i = 0; i < len; i += 3)
	{
		uint32_t	v = (uint32_t) in[i] << 16;
		size_t		chunk = len - i < 3 ? len - i : 3;

		if (chunk > 1)
			v |= (uint32_t) in[i + 1] << 8;
		if (chunk > 2)
			v |= in[i + 2];
		out[o++] = alphabet[(v >> 18) & 63];
		out[o++] = alphabet[(v >> 12) & 63];
		if (chunk > 1)
			out[o++] = alphabet[(v >> 6) & 63];
		else if (!url)
			out[o++] = '=';
		if (chunk > 2)
			out[o++] = alphabet[v & 63];
		else if (!url)
			out[o++] = '=';
	}
	out[o] = '\0';
	return o;
}

/* Add one occurrence of a name (not NUL-terminated) to a counter table. */
static void
counter_add(CounterTable *t, const char *name, size_t len)
{
	if (len >= COUNTER_NAME_MAX)
		len = COUNTER_NAME_MAX - 1;
	for (int i = 0; i < t->used; i++)
	{
		if (strncmp(t->names[i], name, len) == 0 && t->names[i][len] == '\0')
		{
			t->counts[i]++;
			return;
		}
	}
	if (t->used == COUNTER_SLOTS)
	{
		t->overflow++;
		return;
	}
	memcpy(t->names[t->used], name, len);
	t->names[t->used][len] = '\0';
	t->counts[t->used++] = 1;
}

/* counter_add for a printf-formatted name. */
static void
counter_addf(CounterTable *t, const char *fmt,...)
{
	char		name[COUNTER_NAME_MAX];
	va_list		ap;
	int			len;

	va_start(ap, fmt);
	len = vsnprintf(name, sizeof(name), fmt, ap);
	va_end(ap);
	counter_add(t, name, len < (int) sizeof(name) ? (size_t) len : sizeof(name) - 1);
}

/* Sum of all counts in a table. */
static uint64_t
counter_total(const CounterTable *t)
{
	uint64_t	sum = t->overflow;

	for (int i = 0; i < t->used; i++)
		sum += t->counts[i];
	return sum;
}

/*
 * Write a table as "name=count, name=count" (sep ", ", eq "=") or in the
 * compact RESULT form "name:count,name:count"; "none" when empty.
 */
static void
counter_print(FILE *f, const CounterTable *t, const char *sep, const char *eq)
{
	if (t->used == 0 && t->overflow == 0)
	{
		fputs("none", f);
		return;
	}
	for (int i = 0; i < t->used; i++)
		fprintf(f, "%s%s%s%llu", i ? sep : "", t->names[i], eq,
				(unsigned long long) t->counts[i]);
	if (t->overflow)
		fprintf(f, "%sother%s%llu", sep, eq, (unsigned long long) t->overflow);
}


/* ---------------------------------------------------------------------
 * Latency histogram
 * ---------------------------------------------------------------------
 */

/* Bucket of a latency: exact below HIST_EXACT, then ~1.6% wide. */
static int
hist_bucket(int64_t v)
{
	int			msb,
				shift;

	if (v < HIST_EXACT)
		return (int) v;
	msb = 63 - __builtin_clzll((unsigned long long) v);
	shift = msb - 6;			/* keeps the top 7 bits: 64..127 */
	return HIST_EXACT + (shift - 1) * HIST_STEPS + (int) ((v >> shift) - HIST_STEPS);
}

/* Highest value that falls into a bucket (reported, like HdrHistogram). */
static int64_t
hist_bucket_top(int bucket)
{
	int			shift,
				top;

	if (bucket < HIST_EXACT)
		return bucket;
	shift = (bucket - HIST_EXACT) / HIST_STEPS + 1;
	top = (bucket - HIST_EXACT) % HIST_STEPS + HIST_STEPS;
	return (((int64_t) top + 1) << shift) - 1;
}

/* The --histogram file: every non-empty bucket, upper bound (us) and count. */
static void
hist_write_csv(const Histogram *h, const char *path)
{
	FILE	   *f = fopen(path, "w");

	if (f == NULL)
	{
		fprintf(stderr, "loadgen: cannot write %s: %s\n", path, strerror(errno));
		return;
	}
	fputs("upper_us,count\n", f);
	for (int b = 0; b < HIST_BUCKETS; b++)
		if (h->counts[b])
			fprintf(f, "%lld,%llu\n", (long long) hist_bucket_top(b), (unsigned long long) h->counts[b]);
	fclose(f);
}

/* Record one latency in microseconds. */
static void
hist_add(Histogram *h, int64_t v)
{
	h->counts[hist_bucket(v)]++;
	h->total++;
	if (v > h->max)
		h->max = v;
}

/* The latency at percentile p (0..100), in milliseconds; 0 when empty. */
static double
hist_percentile_ms(const Histogram *h, double p)
{
	uint64_t	rank = (uint64_t) ceil(p / 100.0 * (double) h->total);
	uint64_t	seen = 0;

	if (h->total == 0)
		return 0;
	if (rank == 0)
		rank = 1;
	for (int b = 0; b < HIST_BUCKETS; b++)
	{
		seen += h->counts[b];
		if (seen >= rank)
		{
			int64_t		top = hist_bucket_top(b);

			return (top < h->max ? top : h->max) / 1000.0;
		}
	}
	return h->max / 1000.0;
}


/* ---------------------------------------------------------------------
 * Allocation-free JSON scanning
 *
 * The generator reads a handful of fields from server messages.  Rather
 * than build a tree for every frame, these functions walk the text in
 * place: they skip values they do not need (checking their structure) and
 * return a pointer to the value of a requested member.  Member names are
 * compared as raw bytes, which is exact for the plain ASCII names of the
 * protocol.
 * ---------------------------------------------------------------------
 */

/* Iterator over the members of an object or the elements of an array. */
typedef struct JsonIter
{
	const char *p;				/* next unread byte */
	const char *end;
	const char *value;			/* current value, not yet skipped */
	char		close;			/* '}' or ']' */
	int			depth;
	bool		started;
	bool		malformed;
} JsonIter;

static const char *json_skip_value(const char *p, const char *end, int depth);

/* Skip JSON whitespace. */
static const char *
json_ws(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	return p;
}

/* p is at an opening quote: return the byte after the closing one, or NULL. */
static const char *
json_skip_string(const char *p, const char *end)
{
	for (p++; p < end; p++)
	{
		if (*p == '\\')
			p++;
		else if (*p == '"')
			return p + 1;
	}
	return NULL;
}

/* Start iterating over the object or array at value; false if it is neither. */
static bool
json_iter_begin(JsonIter *it, const char *value, const char *end, int depth)
{
	memset(it, 0, sizeof(*it));
	if (value == NULL || value >= end || (*value != '{' && *value != '['))
		return false;
	it->close = *value == '{' ? '}' : ']';
	it->p = value + 1;
	it->end = end;
	it->depth = depth;
	return true;
}

/*
 * Advance to the next member or element.  Sets key, key_len (objects
 * only; raw bytes between the quotes) and *value.  Returns false at the end
 * of the container, with it->malformed set if the text was not valid, and
 * it->p just past the closing bracket otherwise.
 */
static bool
json_iter_next(JsonIter *it, const char **key, size_t *key_len, const char **value)
{
	const char *p = it->p;
	const char *end = it->end;

	if (it->value)
	{
		p = json_skip_value(it->value, end, it->depth + 1);
		if (p == NULL)
			goto malformed;
		p = json_ws(p, end);
		if (p < end && *p == it->close)
		{
			it->p = p + 1;
			it->value = NULL;
			return false;
		}
		if (p >= end || *p != ',')
			goto malformed;
		p = json_ws(p + 1, end);
	}
	else
	{
		if (it->started)
			return false;
		p = json_ws(p, end);
		if (p < end && *p == it->close)
		{
			it->p = p + 1;
			it->started = true;
			return false;
		}
	}
	it->started = true;
	if (it->close == '}')
	{
		const char *key_end;

		if (p >= end || *p != '"' || (key_end = json_skip_string(p, end)) == NULL)
			goto malformed;
		*key = p + 1;
		*key_len = key_end - p - 2;
		p = json_ws(key_end, end);
		if (p >= end || *p != ':')
			goto malformed;
		p = json_ws(p + 1, end);
	}
	if (p >= end)
		goto malformed;
	it->value = *value = p;
	it->p = p;
	return true;

malformed:
	it->malformed = true;
	it->value = NULL;
	return false;
}

/* Return the byte after the JSON value at p, or NULL if it is malformed. */
static const char *
json_skip_value(const char *p, const char *end, int depth)
{
	p = json_ws(p, end);
	if (p >= end)
		return NULL;
	if (*p == '"')
		return json_skip_string(p, end);
	if (*p == '{' || *p == '[')
	{
		JsonIter	it;
		const char *key,
				   *value;
		size_t		key_len;

		if (depth > JSON_MAX_DEPTH)
			return NULL;
		json_iter_begin(&it, p, end, depth);
		while (json_iter_next(&it, &key, &key_len, &value))
			;
		return it.malformed ? NULL : it.p;
	}
	else
	{
		const char *start = p;

		while (p < end && (isalnum((unsigned char) *p) || *p == '+' || *p == '-' || *p == '.'))
			p++;
		return p > start ? p : NULL;
	}
}

/* The value of member name in the object at obj, or NULL. */
static const char *
json_member(const char *obj, const char *end, const char *name)
{
	JsonIter	it;
	const char *key,
			   *value;
	size_t		key_len;
	size_t		name_len = strlen(name);

	if (!json_iter_begin(&it, obj, end, 0))
		return NULL;
	while (json_iter_next(&it, &key, &key_len, &value))
	{
		if (key_len == name_len && memcmp(key, name, name_len) == 0)
			return value;
	}
	return NULL;
}

/* The raw bytes of the string member name of obj; false if absent. */
static bool
json_member_string(const char *obj, const char *end, const char *name,
				   const char **str, size_t *len)
{
	const char *value = json_member(obj, end, name);
	const char *after;

	if (value == NULL || *value != '"' || (after = json_skip_string(value, end)) == NULL)
		return false;
	*str = value + 1;
	*len = after - value - 2;
	return true;
}

/* The integer member name of obj; false if absent or not an integer. */
static bool
json_member_int(const char *obj, const char *end, const char *name, int64_t *out)
{
	const char *p = json_member(obj, end, name);
	bool		negative = false;
	int64_t		v = 0;
	int			digits = 0;

	if (p == NULL)
		return false;
	if (*p == '-')
	{
		negative = true;
		p++;
	}
	for (; p < end && *p >= '0' && *p <= '9' && digits < 18; p++, digits++)
		v = v * 10 + (*p - '0');
	if (digits == 0 || (p < end && (isdigit((unsigned char) *p) ||
									*p == '.' || *p == 'e' || *p == 'E')))
		return false;
	*out = negative ? -v : v;
	return true;
}

/* Whether a raw JSON string equals a literal. */
static bool
str_is(const char *s, size_t len, const char *literal)
{
	return strlen(literal) == len && memcmp(s, literal, len) == 0;
}


/* ---------------------------------------------------------------------
 * Process statistics from /proc
 * ---------------------------------------------------------------------
 */

/*
 * Sum utime+stime (clock ticks) and RSS over a set of processes, from
 * /proc/PID/stat.  Invalid if any of them is gone (a restarted server
 * worker would make the numbers meaningless).
 */
static ProcUsage
proc_usage(const pid_t *pids, int npids)
{
	ProcUsage	u = {.valid = npids > 0, .wall_us = now_us()};
	long		page_kb = sysconf(_SC_PAGESIZE) / 1024;

	for (int i = 0; i < npids; i++)
	{
		char		path[64],
					text[1024];
		const char *after_name;
		unsigned long utime,
					stime;
		long		rss_pages;
		FILE	   *f;
		size_t		n;

		snprintf(path, sizeof(path), "/proc/%d/stat", (int) pids[i]);
		if ((f = fopen(path, "r")) == NULL)
		{
			u.valid = false;
			break;
		}
		n = fread(text, 1, sizeof(text) - 1, f);
		fclose(f);
		text[n] = '\0';
		/* fields after "(comm)": state is field 3, utime 14, stime 15, rss 24 */
		if ((after_name = strrchr(text, ')')) == NULL ||
			sscanf(after_name + 2,
				   "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu "
				   "%*d %*d %*d %*d %*d %*d %*u %*u %ld",
				   &utime, &stime, &rss_pages) != 3)
		{
			u.valid = false;
			break;
		}
		u.cpu_ticks += utime + stime;
		u.rss_kb += rss_pages * page_kb;
	}
	return u;
}

/* CPU use between two samples, in percent of one core; NAN if unknown. */
static double
cpu_percent(const ProcUsage *from, const ProcUsage *to)
{
	if (!from->valid || !to->valid || to->wall_us <= from->wall_us)
		return NAN;
	return (double) (to->cpu_ticks - from->cpu_ticks) / sysconf(_SC_CLK_TCK) *
		1e8 / (double) (to->wall_us - from->wall_us);
}

/* CPU milliseconds spent between two samples; NAN if unknown. */
static double
cpu_ms(const ProcUsage *from, const ProcUsage *to)
{
	if (!from->valid || !to->valid)
		return NAN;
	return (double) (to->cpu_ticks - from->cpu_ticks) * 1000.0 / sysconf(_SC_CLK_TCK);
}

/* Resident memory of a sample in KB, NAN if the sample is invalid. */
static double
rss_kb(const ProcUsage *u)
{
	return u->valid ? (double) u->rss_kb : NAN;
}

/* Sample the server worker(s). */
static ProcUsage
server_usage(void)
{
	return proc_usage(run.server_pids, run.n_server_pids);
}

/* Sample the generator itself. */
static ProcUsage
self_usage(void)
{
	return proc_usage(&run.self_pid, 1);
}

/*
 * Warn when a server worker's open-files limit is below the connection
 * count: the server would then refuse connections for a reason that has
 * nothing to do with its design.
 */
static void
check_server_fd_limit(void)
{
	for (int i = 0; i < run.n_server_pids; i++)
	{
		char		path[64],
					line[256];
		FILE	   *f;

		snprintf(path, sizeof(path), "/proc/%d/limits", (int) run.server_pids[i]);
		if ((f = fopen(path, "r")) == NULL)
			continue;
		while (fgets(line, sizeof(line), f))
		{
			long		soft;

			if (sscanf(line, "Max open files %ld", &soft) == 1 &&
				soft < run.opt.connections + 64)
				fprintf(stderr, "loadgen: warning: server pid %d may open only %ld files, "
						"fewer than %d connections need\n",
						(int) run.server_pids[i], soft, run.opt.connections);
		}
		fclose(f);
	}
}


/* ---------------------------------------------------------------------
 * Database: setup and finding the server worker
 * ---------------------------------------------------------------------
 */

/* Run one statement; exit with the server's message if it fails. */
static PGresult *
pg_exec(PGconn *pg, const char *sql)
{
	PGresult   *res = PQexec(pg, sql);
	ExecStatusType status = PQresultStatus(res);

	if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK)
		fatal("setup statement failed: %s\nstatement: %s", PQerrorMessage(pg), sql);
	return res;
}

/* Run a statement that returns one number, and return it. */
static long
pg_exec_count(PGconn *pg, const char *sql)
{
	PGresult   *res = pg_exec(pg, sql);
	long		n = PQntuples(res) > 0 ? atol(PQgetvalue(res, 0, 0)) : 0;

	PQclear(res);
	return n;
}

/*
 * Create the users, sessions and participants that the connections need,
 * with set-based statements that skip whatever exists already, so setup
 * is idempotent.  User i belongs to session i % sessions; user s (the
 * first of session s) owns it.  With --large-sessions L, users 0 .. 50L-1
 * belong to bench-large-(i / 50) instead, owned by its first user, and
 * sessions bench-s keep user s as owner.  Participants are added SETUP_CHUNK users
 * per statement (each its own transaction): every add_participant queues
 * a command for the ws workers at commit, and their shared queue is
 * bounded.
 */
static void
setup_database(PGconn *pg)
{
	const Options *o = &run.opt;
	char		sql[2048];
	char		session_of_i[256];
	long		users,
				sessions,
				participants = 0;
	int64_t		start = now_us();
	PGresult   *res;

	snprintf(sql, sizeof(sql),
			 "INSERT INTO presence.users (id, username) "
			 "SELECT " USER_ID_SQL("i") ", " USERNAME_SQL("i") " "
			 "FROM generate_series(%d, %d) AS i ON CONFLICT DO NOTHING",
			 o->first_user, o->first_user + o->connections - 1);
	res = pg_exec(pg, sql);
	users = atol(PQcmdTuples(res));
	PQclear(res);

	snprintf(sql, sizeof(sql),
			 "SELECT count(presence.create_session(" USER_ID_SQL("s") ", NULL, '{}', "
			 "NULL, NULL, " SESSION_SQL("s") ")) "
			 "FROM generate_series(0, %d) AS s "
			 "WHERE NOT EXISTS (SELECT 1 FROM presence.collaboration_sessions c "
			 "WHERE c.session_id = " SESSION_SQL("s") ")",
			 o->sessions - 1);
	sessions = pg_exec_count(pg, sql);
	if (o->large_sessions > 0)
	{
		snprintf(sql, sizeof(sql),
				 "SELECT count(presence.create_session(" USER_ID_SQL("(k * %d)") ", NULL, '{}', "
				 "NULL, NULL, 'bench-large-' || k)) "
				 "FROM generate_series(0, %d) AS k "
				 "WHERE NOT EXISTS (SELECT 1 FROM presence.collaboration_sessions c "
				 "WHERE c.session_id = 'bench-large-' || k)",
				 LARGE_SESSION_USERS, o->large_sessions - 1);
		sessions += pg_exec_count(pg, sql);
	}
	/* the session of user i, as init_connections() has it */
	snprintf(session_of_i, sizeof(session_of_i),
			 "(CASE WHEN i < %d THEN 'bench-large-' || (i / %d) ELSE 'bench-' || (i %% %d) END)",
			 o->large_sessions * LARGE_SESSION_USERS, LARGE_SESSION_USERS, o->sessions);

	for (int first = o->first_user; first < o->first_user + o->connections; first += SETUP_CHUNK)
	{
		int			end = o->first_user + o->connections;
		int			last = first + SETUP_CHUNK < end ? first + SETUP_CHUNK - 1 : end - 1;

		snprintf(sql, sizeof(sql),
				 "SELECT count(*) FROM ("
				 "SELECT presence.add_participant(%s, " USER_ID_SQL("i") ", 'operator') "
				 "FROM generate_series(%d, %d) AS i "
				 "WHERE NOT EXISTS (SELECT 1 FROM presence.session_participants p "
				 "JOIN presence.collaboration_sessions c ON c.id = p.session_id "
				 "WHERE c.session_id = %s "
				 "AND p.user_id = " USER_ID_SQL("i") " AND p.left_at IS NULL)) AS added",
				 session_of_i, first, last, session_of_i);
		participants += pg_exec_count(pg, sql);
	}

	printf("setup: %ld users, %ld sessions, %ld participants added in %.2f s\n",
		   users, sessions, participants, (now_us() - start) / 1e6);
}

/*
 * Find the ws worker processes through pg_stat_activity, waiting up to
 * --wait-ready for them to appear after a fresh start (a worker that
 * started before its database existed is restarted a few seconds later).
 */
static void
find_server_pids(PGconn *pg)
{
	int64_t		give_up = now_us() + (int64_t) (run.opt.wait_ready * 1e6);

	while (run.n_server_pids == 0)
	{
		PGresult   *res = pg_exec(pg,
								  "SELECT pid FROM pg_stat_activity "
								  "WHERE backend_type LIKE 'presence ws%' ORDER BY pid");

		for (int i = 0; i < PQntuples(res) && i < MAX_SERVER_PIDS; i++)
			run.server_pids[run.n_server_pids++] = atoi(PQgetvalue(res, i, 0));
		PQclear(res);
		if (run.n_server_pids > 0 || now_us() >= give_up)
			break;
		usleep(100000);
	}
	if (run.n_server_pids == 0)
		fprintf(stderr, "loadgen: warning: no 'presence ws' worker in pg_stat_activity; "
				"server numbers will be missing\n");
}

/* Parse --server-pid PID[,PID...]. */
static void
parse_server_pids(const char *list)
{
	const char *p = list;

	while (*p && run.n_server_pids < MAX_SERVER_PIDS)
	{
		char	   *next;
		long		pid = strtol(p, &next, 10);

		if (next == p || pid <= 0)
			fatal("bad --server-pid list: %s", list);
		run.server_pids[run.n_server_pids++] = (pid_t) pid;
		p = *next == ',' ? next + 1 : next;
	}
}

/* Connect to PostgreSQL when asked, set up and/or find the worker pids. */
static void
prepare_database(void)
{
	PGconn	   *pg;

	if (run.opt.server_pids)
		parse_server_pids(run.opt.server_pids);
	if (run.opt.pg_conninfo == NULL)
	{
		if (run.opt.setup)
			fatal("setup needs --pg CONNINFO (or pass --no-setup)");
		return;
	}
	pg = PQconnectdb(run.opt.pg_conninfo);
	if (PQstatus(pg) != CONNECTION_OK)
		fatal("cannot connect to PostgreSQL: %s", PQerrorMessage(pg));
	if (run.opt.setup)
		setup_database(pg);
	if (run.n_server_pids == 0)
		find_server_pids(pg);
	PQfinish(pg);
}


/* ---------------------------------------------------------------------
 * Authentication
 * ---------------------------------------------------------------------
 */

/*
 * Mint an HS256 JWT for a connection's user: sub = its deterministic id,
 * name = its username, exp = now + --token-ttl.
 */
static void
mint_token(const Conn *c, char *out, size_t outsz)
{
	char		payload[256];
	char		payload_b64[400];
	char		signing_input[512];
	uint8_t		mac[EVP_MAX_MD_SIZE];
	unsigned int mac_len = 0;
	char		mac_b64[EVP_MAX_MD_SIZE * 2];
	int			len;

	len = snprintf(payload, sizeof(payload),
				   "{\"sub\":\"%s\",\"name\":\"" USERNAME_FORMAT "\",\"exp\":%lld}",
				   c->user_id, c->index, (long long) time(NULL) + run.opt.token_ttl);
	base64_encode((const uint8_t *) payload, len, payload_b64, true);
	len = snprintf(signing_input, sizeof(signing_input), "%s.%s",
				   run.jwt_header_b64, payload_b64);
	HMAC(EVP_sha256(), run.opt.jwt_secret, (int) strlen(run.opt.jwt_secret),
		 (const uint8_t *) signing_input, len, mac, &mac_len);
	base64_encode(mac, mac_len, mac_b64, true);
	snprintf(out, outsz, "%s.%s", signing_input, mac_b64);
}


/* ---------------------------------------------------------------------
 * Connections: state, output, WebSocket frames
 * ---------------------------------------------------------------------
 */

/*
 * Move a connection to a new state, keeping the per-state and per-session
 * counts that pacing and phase changes rely on.
 */
static void
conn_set_state(Conn *c, ConnState state)
{
	if (c->state == CONN_JOINED)
		run.session_joined[c->session]--;
	if (state == CONN_JOINED)
		run.session_joined[c->session]++;
	run.state_count[c->state]--;
	run.state_count[state]++;
	c->state = state;
}

/* Ask epoll for writability only while output is queued. */
static void
conn_want_write(Conn *c, bool want)
{
	struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = c};

	if (want == c->want_write)
		return;
	if (epoll_ctl(run.epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
		fatal("epoll_ctl: %s", strerror(errno));
	c->want_write = want;
}

/* Send queued output as far as the socket takes it. */
static void
conn_flush(Conn *c)
{
	while (c->out.len > 0)
	{
		ssize_t		n = send(c->fd, c->out.data, c->out.len, MSG_NOSIGNAL);

		if (n < 0)
		{
			if (errno == EAGAIN || errno == EINTR)
				break;
			conn_end(c, strerror(errno));
			return;
		}
		buf_consume(&c->out, n);
	}
	conn_want_write(c, c->out.len > 0);
}

/*
 * Send bytes: straight to the socket when nothing is queued, else behind
 * the queue.  Returns false if the connection failed.
 */
static bool
conn_write(Conn *c, const void *data, size_t len)
{
	if (c->out.len == 0)
	{
		ssize_t		n = send(c->fd, data, len, MSG_NOSIGNAL);

		if (n < 0 && errno != EAGAIN && errno != EINTR)
		{
			conn_end(c, strerror(errno));
			return false;
		}
		if (n > 0)
		{
			data = (const uint8_t *) data + n;
			len -= n;
		}
	}
	if (len > 0)
	{
		buf_append(&c->out, data, len);
		conn_want_write(c, true);
	}
	return true;
}

/*
 * Send one masked client frame (RFC 6455 section 5.2/5.3).  Returns false
 * if the connection failed.
 */
static bool
ws_send(Conn *c, uint8_t opcode, bool rsv1, const void *payload, size_t len)
{
	uint8_t		stack_frame[512];
	uint8_t    *frame = stack_frame;
	size_t		header = 2 + 4 + (len > 65535 ? 8 : len > 125 ? 2 : 0);
	uint64_t	mask_bits = prng_next();
	uint8_t		mask[4];
	size_t		h = 0;
	bool		ok;

	memcpy(mask, &mask_bits, 4);
	if (header + len > sizeof(stack_frame))
		frame = xrealloc(NULL, header + len);
	frame[h++] = 0x80 | (rsv1 ? WS_RSV1 : 0) | opcode;
	if (len <= 125)
		frame[h++] = 0x80 | (uint8_t) len;
	else if (len <= 65535)
	{
		frame[h++] = 0x80 | 126;
		frame[h++] = (uint8_t) (len >> 8);
		frame[h++] = (uint8_t) len;
	}
	else
	{
		frame[h++] = 0x80 | 127;
		for (int shift = 56; shift >= 0; shift -= 8)
			frame[h++] = (uint8_t) ((uint64_t) len >> shift);
	}
	memcpy(frame + h, mask, 4);
	h += 4;
	for (size_t i = 0; i < len; i++)
		frame[h + i] = ((const uint8_t *) payload)[i] ^ mask[i & 3];
	ok = conn_write(c, frame, header + len);
	if (frame != stack_frame)
		free(frame);
	return ok;
}

/*
 * Whether something sent at time t belongs to the measured window.  Sends
 * are attributed by their send time, deliveries by the send time they
 * carry, so stragglers that arrive after the window still count.
 */
static bool
in_window(int64_t t)
{
	return t >= run.window_start_us && t < run.window_end_us;
}

/* The step whose measured part contains time t, or NULL. */
static Step *
step_at(int64_t t)
{
	if (!in_window(t))
		return NULL;
	for (int i = 0; i < run.n_steps; i++)
	{
		if (t >= run.steps[i].start_us && t < run.steps[i].end_us)
			return &run.steps[i];
	}
	return NULL;
}

/*
 * Add n to one Traffic counter (given by its offset) for the whole run
 * and, when time t falls in the measured window, for the window and the
 * step it falls in.
 */
static void
traffic_add(size_t field, uint64_t n, int64_t t)
{
	Step	   *step;

	*(uint64_t *) ((char *) &run.total + field) += n;
	if (!in_window(t))
		return;
	*(uint64_t *) ((char *) &run.window + field) += n;
	if ((step = step_at(t)) != NULL)
		*(uint64_t *) ((char *) &step->traffic + field) += n;
}

#define TRAFFIC_ADD(field, n, t) traffic_add(offsetof(Traffic, field), (n), (t))


/* ---------------------------------------------------------------------
 * permessage-deflate (RFC 7692), as Chromium does it
 *
 * Chromium offers "permessage-deflate; client_max_window_bits" and
 * compresses every message: raw deflate at zlib's default level and
 * memory, Z_SYNC_FLUSH, the trailing 00 00 ff ff stripped, RSV1 set.  It
 * keeps its deflater's context from message to message unless the server
 * answers client_no_context_takeover, and then resets it per message.
 * Here a connection with context owns its deflater (256 KiB with a
 * 15-bit window, allocated at its first message); without context one
 * deflater per window size serves every connection, reset per message.
 * The inflaters follow server_no_context_takeover the same way.
 * ---------------------------------------------------------------------
 */

/* A raw-deflate compressor with Chromium's settings. */
static z_stream *
deflater_new(int window_bits)
{
	z_stream   *zs = xrealloc(NULL, sizeof(z_stream));

	memset(zs, 0, sizeof(*zs));

	/*
	 * zlib cannot deflate raw with an 8-bit window; like Chromium, use 9.
	 * zlib's back-references then reach at most 2^9 - 262 = 250 bytes,
	 * which an inflater with a 256-byte window still resolves.
	 */
	if (window_bits < 9)
		window_bits = 9;
	if (deflateInit2(zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -window_bits,
					 DEFLATE_MEM_LEVEL, Z_DEFAULT_STRATEGY) != Z_OK)
		fatal("deflateInit2 failed (window %d bits)", window_bits);
	return zs;
}

/* A raw-deflate decompressor; zlib allocates its window at first use. */
static z_stream *
inflater_new(int window_bits)
{
	z_stream   *zs = xrealloc(NULL, sizeof(z_stream));

	memset(zs, 0, sizeof(*zs));
	if (inflateInit2(zs, -window_bits) != Z_OK)
		fatal("inflateInit2 failed (window %d bits)", window_bits);
	return zs;
}

/* Release a connection's own deflater and inflater, if it has them. */
static void
conn_free_zstreams(Conn *c)
{
	if (c->deflater)
	{
		deflateEnd(c->deflater);
		free(c->deflater);
		c->deflater = NULL;
	}
	if (c->inflater)
	{
		inflateEnd(c->inflater);
		free(c->inflater);
		c->inflater = NULL;
	}
}

/*
 * Compress one message for connection c (RFC 7692 section 7.2.1) into a
 * shared buffer, valid until the next call: deflate with Z_SYNC_FLUSH,
 * then drop the 00 00 ff ff that ends it.
 */
static const uint8_t *
deflate_message(Conn *c, const void *text, size_t len, size_t *out_len)
{
	static ByteBuf out;
	z_stream   *zs;

	if (c->client_no_context_takeover)
	{
		if (run.shared_deflater[c->client_window_bits] == NULL)
			run.shared_deflater[c->client_window_bits] = deflater_new(c->client_window_bits);
		zs = run.shared_deflater[c->client_window_bits];
	}
	else
	{
		if (c->deflater == NULL)
		{
			c->deflater = deflater_new(c->client_window_bits);
			run.deflaters_allocated++;
		}
		zs = c->deflater;
	}
	out.len = 0;
	zs->next_in = (Bytef *) text;
	zs->avail_in = (uInt) len;
	do
	{
		int			rc;

		buf_reserve(&out, len / 2 + 64);
		zs->next_out = out.data + out.len;
		zs->avail_out = (uInt) (out.cap - out.len);
		rc = deflate(zs, Z_SYNC_FLUSH);
		if (rc != Z_OK && rc != Z_BUF_ERROR)
			fatal("deflate failed: %d", rc);
		out.len = out.cap - zs->avail_out;
	} while (zs->avail_out == 0);
	if (out.len < DEFLATE_TAIL_LEN ||
		memcmp(out.data + out.len - DEFLATE_TAIL_LEN, "\0\0\xff\xff", DEFLATE_TAIL_LEN) != 0)
		fatal("deflate: the message does not end with a sync flush");
	if (c->client_no_context_takeover)
		deflateReset(zs);
	*out_len = out.len - DEFLATE_TAIL_LEN;
	return out.data;
}

/*
 * Inflate one compressed server message (RFC 7692 section 7.2.2): its
 * payload, then the 00 00 ff ff the server stripped.  The text lands in a
 * shared buffer, valid until the next call.  Returns false with *error
 * when the data is not valid deflate or inflates past --max-message.
 */
static bool
inflate_message(Conn *c, const uint8_t *in, size_t len,
				const char **text, size_t *text_len, const char **error)
{
	static const uint8_t tail[DEFLATE_TAIL_LEN] = {0x00, 0x00, 0xff, 0xff};
	static ByteBuf out;
	z_stream   *zs;
	bool		ok = true;

	if (c->server_no_context_takeover)
	{
		if (run.shared_inflater == NULL)
			run.shared_inflater = inflater_new(15);
		zs = run.shared_inflater;
	}
	else
	{
		if (c->inflater == NULL)
		{
			c->inflater = inflater_new(c->server_window_bits);
			run.inflaters_allocated++;
		}
		zs = c->inflater;
	}
	out.len = 0;
	for (int part = 0; part < 2 && ok; part++)
	{
		zs->next_in = (Bytef *) (part == 0 ? in : tail);
		zs->avail_in = (uInt) (part == 0 ? len : DEFLATE_TAIL_LEN);
		do
		{
			int			rc;

			buf_reserve(&out, len * 4 + 256);
			zs->next_out = out.data + out.len;
			zs->avail_out = (uInt) (out.cap - out.len);
			rc = inflate(zs, Z_SYNC_FLUSH);
			out.len = out.cap - zs->avail_out;
			if (out.len > run.opt.max_message)
			{
				*error = "protocol: message too large";
				ok = false;
			}
			else if (rc == Z_STREAM_END)
			{
				/* a final block (BFINAL): the next message starts a new stream */
				inflateReset(zs);
				part = 2;
				break;
			}
			else if (rc == Z_BUF_ERROR)
				break;			/* no progress possible: all input used */
			else if (rc != Z_OK)
			{
				*error = "permessage-deflate: bad compressed data";
				ok = false;
			}
		} while (ok && (zs->avail_in > 0 || zs->avail_out == 0));
	}
	if (c->server_no_context_takeover || !ok)
		inflateReset(zs);
	*text = (const char *) out.data;
	*text_len = out.len;
	return ok;
}

/*
 * Send a text message at time now: compressed when the connection
 * negotiated permessage-deflate (every message, as Chromium does),
 * counted as traffic by its send time.
 */
static bool
send_message(Conn *c, const char *text, size_t len, int64_t now)
{
	TRAFFIC_ADD(messages_sent, 1, now);
	TRAFFIC_ADD(sent_bytes, len, now);
	if (c->deflate)
	{
		size_t		wire_len;
		const uint8_t *wire = deflate_message(c, text, len, &wire_len);

		TRAFFIC_ADD(sent_compressed, 1, now);
		TRAFFIC_ADD(sent_wire_bytes, wire_len, now);
		return ws_send(c, WS_OP_TEXT, true, wire, wire_len);
	}
	TRAFFIC_ADD(sent_wire_bytes, len, now);
	return ws_send(c, WS_OP_TEXT, false, text, len);
}

/*
 * Close a connection's socket and free its buffers.  A reason means it
 * ended abnormally; where it is counted depends on how far it had got:
 * failed (never joined), dropped (lost while joined) or a close problem
 * (during our own close handshake).
 */
static void
conn_end(Conn *c, const char *reason)
{
	if (reason)
	{
		if (c->state < CONN_JOINED)
		{
			run.failed++;
			counter_addf(&run.failures, "%s: %s", conn_state_names[c->state], reason);
		}
		else if (c->state == CONN_JOINED || c->state == CONN_REJOINING)
		{
			run.dropped++;
			counter_add(&run.drops, reason, strlen(reason));
		}
		else
			counter_add(&run.close_problems, reason, strlen(reason));
	}
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->want_write = false;
	buf_free(&c->pending);
	buf_free(&c->out);
	buf_free(&c->fragments);
	c->fragment_opcode = 0;
	conn_free_zstreams(c);
	conn_set_state(c, CONN_DONE);
}

/* Send a close frame with a status code (none for 1005).  False if that failed. */
static bool
send_close(Conn *c, int code)
{
	uint8_t		payload[2] = {(uint8_t) (code >> 8), (uint8_t) code};

	return ws_send(c, WS_OP_CLOSE, false, payload, code == WS_CLOSE_NO_STATUS ? 0 : 2);
}

/*
 * Close a connection from our side without waiting for the server's
 * answer (the connection is of no further use): send a close frame with
 * code, then end it for reason.
 */
static void
conn_abandon(Conn *c, int code, const char *reason)
{
	if (send_close(c, code))
		conn_end(c, reason);
}

/* Start closing a connection at the end of the run. */
static void
conn_begin_close(Conn *c, int64_t now)
{
	if (c->state >= CONN_AWAIT_WELCOME && c->state <= CONN_REJOINING)
	{
		conn_set_state(c, CONN_CLOSING);
		c->deadline_us = now + (int64_t) (run.opt.close_timeout * 1e6);
		send_close(c, WS_CLOSE_NORMAL);
	}
	else if (c->state != CONN_IDLE && c->state != CONN_DONE)
		conn_end(c, "still handshaking at shutdown");
}


/* ---------------------------------------------------------------------
 * Opening connections and the upgrade handshake
 * ---------------------------------------------------------------------
 */

/* Start a non-blocking TCP connection for one user. */
static void
conn_open(Conn *c, int64_t now)
{
	struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
	int			one = 1;

	run.opened++;
	conn_set_state(c, CONN_CONNECTING);
	c->deadline_us = now + (int64_t) (run.opt.connect_timeout * 1e6);
	c->fd = socket(run.server_addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0)
	{
		conn_end(c, strerror(errno));
		return;
	}
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(c->fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof(one));
	if (run.opt.source_addresses > 0)
	{
		/*
		 * Round-robin over 127.0.0.1 .. 127.0.0.N, so that the server's
		 * per-address bounds see N hosts.  The port is left to connect()
		 * (IP_BIND_ADDRESS_NO_PORT): a bind() that chose it would need a
		 * port free for every destination, which runs out far sooner.
		 */
		struct sockaddr_in source = {
			.sin_family = AF_INET,
			.sin_addr.s_addr = htonl(INADDR_LOOPBACK + (uint32_t) (c->index % run.opt.source_addresses)),
		};

		setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
		if (bind(c->fd, (struct sockaddr *) &source, sizeof(source)) < 0)
		{
			conn_end(c, strerror(errno));
			return;
		}
	}
	if (epoll_ctl(run.epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0)
		fatal("epoll_ctl: %s", strerror(errno));
	c->want_write = true;
	if (connect(c->fd, (struct sockaddr *) &run.server_addr, run.server_addr_len) < 0 &&
		errno != EINPROGRESS)
		conn_end(c, strerror(errno));
}

/* The TCP connection is up: send the HTTP upgrade request. */
static void
conn_send_upgrade(Conn *c)
{
	uint8_t		key_bytes[16];
	char		token[1024];
	char		protocol_header[128] = "";
	char		request[2048];
	const char *extensions_header = run.opt.deflate ?
		"Sec-WebSocket-Extensions: " DEFLATE_OFFER "\r\n" : "";
	int			len;

	for (int i = 0; i < 16; i += 8)
	{
		uint64_t	r = prng_next();

		memcpy(key_bytes + i, &r, 8);
	}
	base64_encode(key_bytes, sizeof(key_bytes), c->ws_key, false);
	mint_token(c, token, sizeof(token));
	if (run.opt.subprotocol[0])
		snprintf(protocol_header, sizeof(protocol_header),
				 "Sec-WebSocket-Protocol: %s\r\n", run.opt.subprotocol);
	len = snprintf(request, sizeof(request),
				   "GET %s HTTP/1.1\r\n"
				   "Host: %s:%d\r\n"
				   "Upgrade: websocket\r\n"
				   "Connection: Upgrade\r\n"
				   "Sec-WebSocket-Key: %s\r\n"
				   "Sec-WebSocket-Version: 13\r\n"
				   "%s%s"
				   "Authorization: Bearer %s\r\n"
				   "\r\n",
				   run.opt.path, run.opt.host, run.opt.port, c->ws_key,
				   protocol_header, extensions_header, token);
	conn_set_state(c, CONN_UPGRADING);
	conn_write(c, request, len);
}

/*
 * The value of a header in an HTTP response head (case-insensitive name),
 * copied into out; false if absent.
 */
static bool
http_header(const char *head, size_t head_len, const char *name, char *out, size_t outsz)
{
	size_t		name_len = strlen(name);
	const char *line = memchr(head, '\n', head_len);
	const char *end = head + head_len;

	while (line && ++line < end)
	{
		const char *eol = memchr(line, '\n', end - line);

		if (eol == NULL)
			break;
		if ((size_t) (eol - line) > name_len && line[name_len] == ':' &&
			strncasecmp(line, name, name_len) == 0)
		{
			const char *v = line + name_len + 1;
			const char *v_end = eol;

			while (v < v_end && (*v == ' ' || *v == '\t'))
				v++;
			while (v_end > v && (v_end[-1] == '\r' || v_end[-1] == ' '))
				v_end--;
			snprintf(out, outsz, "%.*s", (int) (v_end - v), v);
			return true;
		}
		line = eol;
	}
	return false;
}

/*
 * A window-bits value of a permessage-deflate answer: 8 to 15, digits
 * only, optionally quoted (RFC 7692 section 7.1.2); -1 if invalid.
 */
static int
deflate_window_bits(const char *value)
{
	size_t		len;

	if (value == NULL)
		return -1;
	len = strlen(value);
	if (len >= 2 && value[0] == '"' && value[len - 1] == '"')
	{
		value++;
		len -= 2;
	}
	if (len == 1 && value[0] >= '8' && value[0] <= '9')
		return value[0] - '0';
	if (len == 2 && value[0] == '1' && value[1] >= '0' && value[1] <= '5')
		return 10 + value[1] - '0';
	return -1;
}

/*
 * Take the server's Sec-WebSocket-Extensions answer to our offer as RFC
 * 7692 sections 5 and 7.1 ask a client to: exactly one extension,
 * permessage-deflate, with known parameters, none twice, valid values.
 * Sets the connection's deflate state; returns NULL, or why the
 * connection must fail.
 */
static const char *
accept_deflate_answer(Conn *c, const char *answer)
{
	char		text[256];
	char	   *save = NULL;
	char	   *param;
	unsigned	seen = 0;

	snprintf(text, sizeof(text), "%s", answer);
	if (strchr(text, ',') != NULL)
		return "extensions: more than one answered";
	param = strtok_r(text, ";", &save);
	for (int i = 0; param != NULL; i++, param = strtok_r(NULL, ";", &save))
	{
		char	   *end = param + strlen(param);
		char	   *value;
		int			bits = 0;
		unsigned	bit;

		while (*param == ' ' || *param == '\t')
			param++;
		while (end > param && (end[-1] == ' ' || end[-1] == '\t'))
			*--end = '\0';
		if ((value = strchr(param, '=')) != NULL)
		{
			char	   *name_end = value;

			*value++ = '\0';
			while (name_end > param && (name_end[-1] == ' ' || name_end[-1] == '\t'))
				*--name_end = '\0';
			while (*value == ' ' || *value == '\t')
				value++;
		}
		if (i == 0)
		{
			if (strcmp(param, "permessage-deflate") != 0 || value != NULL)
				return "extensions: answered one we did not offer";
			continue;
		}
		if (strcmp(param, "server_no_context_takeover") == 0)
			bit = 1;
		else if (strcmp(param, "client_no_context_takeover") == 0)
			bit = 2;
		else if (strcmp(param, "server_max_window_bits") == 0)
			bit = 4;
		else if (strcmp(param, "client_max_window_bits") == 0)
			bit = 8;
		else
			return "permessage-deflate: unknown parameter in answer";
		if (seen & bit)
			return "permessage-deflate: parameter answered twice";
		seen |= bit;
		if (bit <= 2 && value != NULL)
			return "permessage-deflate: value for a parameter without one";
		if (bit >= 4 && (bits = deflate_window_bits(value)) < 0)
			return "permessage-deflate: bad window bits in answer";
		if (bit == 1)
			c->server_no_context_takeover = true;
		else if (bit == 2)
			c->client_no_context_takeover = true;
		else if (bit == 4)
			c->server_window_bits = (uint8_t) bits;
		else
			c->client_window_bits = (uint8_t) bits;
	}
	c->deflate = true;
	return NULL;
}

/*
 * Check the server's answer to the upgrade request: status 101 and the
 * right Sec-WebSocket-Accept (RFC 6455 section 4.1), and with --deflate
 * the extension it agreed to.  Ends the connection and returns false
 * otherwise.
 */
static bool
conn_check_upgrade(Conn *c, const char *head, size_t head_len)
{
	char		key_guid[64];
	uint8_t		digest[SHA_DIGEST_LENGTH];
	char		expected[32];
	char		value[256];
	char		status_line[64];
	int			status = 0;

	snprintf(status_line, sizeof(status_line), "%.*s",
			 (int) (head_len < sizeof(status_line) ? head_len : sizeof(status_line) - 1), head);
	if (sscanf(status_line, "HTTP/1.%*d %d", &status) != 1 || status != 101)
	{
		char		reason[32];

		snprintf(reason, sizeof(reason), "http status %d", status);
		conn_end(c, reason);
		return false;
	}
	snprintf(key_guid, sizeof(key_guid), "%s" WS_GUID, c->ws_key);
	SHA1((const uint8_t *) key_guid, strlen(key_guid), digest);
	base64_encode(digest, sizeof(digest), expected, false);
	if (!http_header(head, head_len, "Sec-WebSocket-Accept", value, sizeof(value)) ||
		strcmp(value, expected) != 0)
	{
		conn_end(c, "bad Sec-WebSocket-Accept");
		return false;
	}
	if (http_header(head, head_len, "Sec-WebSocket-Protocol", value, sizeof(value)) &&
		strcmp(value, run.opt.subprotocol) != 0)
	{
		conn_end(c, "unexpected subprotocol");
		return false;
	}
	c->client_window_bits = c->server_window_bits = 15;
	if (http_header(head, head_len, "Sec-WebSocket-Extensions", value, sizeof(value)))
	{
		const char *problem = run.opt.deflate ? accept_deflate_answer(c, value) :
			"extensions: answered, none offered";

		if (problem)
		{
			conn_end(c, problem);
			return false;
		}
		if (run.deflate_negotiated++ == 0)
			snprintf(run.deflate_answer, sizeof(run.deflate_answer), "%s", value);
	}
	else if (run.opt.deflate)
		run.deflate_declined++;
	conn_set_state(c, CONN_AWAIT_WELCOME);
	return true;
}


/* ---------------------------------------------------------------------
 * Server messages
 * ---------------------------------------------------------------------
 */

/*
 * A cursor event arrived: its position is the send time, so the latency
 * is receive time minus position.  Events sent inside the measured window
 * count towards the result, whenever they arrive.
 */
static void
record_cursor_event(Conn *c, const char *event, const char *end)
{
	const char *user = json_member(event, end, "user");
	const char *cursor = json_member(user, end, "cursor");
	const char *user_id;
	size_t		user_id_len;
	int64_t		position,
				latency;

	if (!json_member_int(cursor, end, "position", &position))
	{
		counter_addf(&run.anomalies, "cursor event without integer position");
		return;
	}
	if (position < 0 || position > run.read_us)
	{
		counter_addf(&run.anomalies, "cursor position not sent by this run");
		return;
	}
	/* a few microseconds of skew between the two clocks can go negative */
	latency = run.recv_us > position ? run.recv_us - position : 0;
	if (json_member_string(user, end, "userId", &user_id, &user_id_len) &&
		str_is(user_id, user_id_len, c->user_id))
		run.own_echoes++;
	TRAFFIC_ADD(deliveries, 1, position);
	hist_add(&run.progress_latency, latency);
	if (in_window(position))
	{
		Step	   *step = step_at(position);

		hist_add(&run.window_latency, latency);
		hist_add(&run.window_latency_by_size[c->session >= run.opt.sessions], latency);
		if (step)
			hist_add(&step->latency, latency);
	}
	/* the time series goes by arrival, so a stall shows in the second it happened */
	if (run.ts.file && run.phase == PHASE_MEASURE)
	{
		run.ts.deliveries++;
		hist_add(&run.ts.latency, latency);
	}
}

/* A presence frame: count each event by kind, time the cursor events. */
static void
handle_presence(Conn *c, const char *msg, const char *end)
{
	JsonIter	it;
	const char *key,
			   *event;
	size_t		key_len;

	if (!json_iter_begin(&it, json_member(msg, end, "events"), end, 1))
	{
		counter_addf(&run.anomalies, "presence without events array");
		return;
	}
	while (json_iter_next(&it, &key, &key_len, &event))
	{
		const char *kind;
		size_t		kind_len;

		if (!json_member_string(event, end, "kind", &kind, &kind_len))
		{
			counter_addf(&run.anomalies, "presence event without kind");
			continue;
		}
		counter_add(&run.event_kinds, kind, kind_len);
		if (str_is(kind, kind_len, "cursor"))
			record_cursor_event(c, event, end);
		else if (str_is(kind, kind_len, "join") || str_is(kind, kind_len, "leave"))
			TRAFFIC_ADD(membership_events, 1, run.read_us);
	}
	if (it.malformed)
		counter_addf(&run.anomalies, "malformed presence frame");
}

/* Send session_join for the connection's session. */
static void
send_join(Conn *c)
{
	char		join[128];
	int			len;

	len = snprintf(join, sizeof(join),
				   "{\"type\":\"session_join\",\"ref\":\"join\",\"sessionId\":\"%s\"}",
				   c->session_id);
	send_message(c, join, len, run.read_us);
}

/*
 * session_joined: the connection is in its session.  After a rejoin,
 * count it with the users it lists (a large session's is the big one).
 */
static void
handle_session_joined(Conn *c, const char *msg, const char *end)
{
	if (c->state == CONN_REJOINING)
	{
		JsonIter	it;
		const char *key,
				   *user;
		size_t		key_len;
		uint64_t	users = 0;

		if (json_iter_begin(&it, json_member(msg, end, "users"), end, 1))
			while (json_iter_next(&it, &key, &key_len, &user))
				users++;
		TRAFFIC_ADD(rejoins_done, 1, run.read_us);
		TRAFFIC_ADD(rejoin_users, users, run.read_us);
		TRAFFIC_ADD(rejoin_bytes, end - msg, run.read_us);
	}
	else
		run.joined_ever++;
	conn_set_state(c, CONN_JOINED);
}

/* ack: of an activity (counted), or of the session_leave of a rejoin (join again). */
static void
handle_ack(Conn *c, const char *msg, const char *end)
{
	const char *ref;
	size_t		ref_len;

	if (!json_member_string(msg, end, "ref", &ref, &ref_len))
		return;
	if (str_is(ref, ref_len, "act"))
		TRAFFIC_ADD(activity_acks, 1, run.read_us);
	else if (str_is(ref, ref_len, "leave") && c->state == CONN_REJOINING)
		send_join(c);
}

/* welcome: learn the heartbeat interval if not set, then join the session. */
static void
handle_welcome(Conn *c, const char *msg, const char *end)
{
	int64_t		interval_ms;

	if (run.heartbeat_interval_us == 0)
	{
		if (!json_member_int(msg, end, "heartbeatInterval", &interval_ms) || interval_ms <= 0)
			interval_ms = 30000;
		run.heartbeat_interval_us = interval_ms * 1000;
	}
	conn_set_state(c, CONN_AWAIT_JOINED);
	send_join(c);
}

/*
 * error: count it by code; if it answers our session_join (or the leave
 * of a rejoin) the connection has failed or dropped and is closed.
 */
static void
handle_error(Conn *c, const char *msg, const char *end)
{
	const char *code = "(none)",
			   *ref;
	size_t		code_len = 6,
				ref_len;

	json_member_string(msg, end, "code", &code, &code_len);
	counter_add(&run.errors, code, code_len);
	if ((c->state == CONN_AWAIT_JOINED || c->state == CONN_REJOINING) &&
		json_member_string(msg, end, "ref", &ref, &ref_len) &&
		(str_is(ref, ref_len, "join") || str_is(ref, ref_len, "leave")))
	{
		char		reason[COUNTER_NAME_MAX];

		snprintf(reason, sizeof(reason), "join error %.*s", (int) code_len, code);
		conn_abandon(c, WS_CLOSE_NORMAL, reason);
	}
}

/* One complete text message from the server. */
static void
handle_text(Conn *c, const char *msg, size_t len)
{
	const char *end = msg + len;
	const char *type;
	size_t		type_len;

	msg = json_ws(msg, end);
	if (!json_member_string(msg, end, "type", &type, &type_len))
	{
		counter_addf(&run.anomalies, "message without type");
		return;
	}
	counter_add(&run.received_types, type, type_len);
	if (str_is(type, type_len, "presence"))
		handle_presence(c, msg, end);
	else if (str_is(type, type_len, "error"))
		handle_error(c, msg, end);
	else if (str_is(type, type_len, "welcome") && c->state == CONN_AWAIT_WELCOME)
		handle_welcome(c, msg, end);
	else if (str_is(type, type_len, "session_joined") &&
			 (c->state == CONN_AWAIT_JOINED || c->state == CONN_REJOINING))
		handle_session_joined(c, msg, end);
	else if (str_is(type, type_len, "ack"))
		handle_ack(c, msg, end);
	else if (str_is(type, type_len, "activity"))
		TRAFFIC_ADD(activity_deliveries, 1, run.read_us);
}

/*
 * A close frame: record its code; answer it unless we started the close,
 * then end the connection (RFC 6455 section 5.5.1).
 */
static void
handle_close_frame(Conn *c, const WsFrame *f)
{
	int			code = f->len >= 2 ? (f->payload[0] << 8) | f->payload[1] : WS_CLOSE_NO_STATUS;
	char		reason[32];

	if (c->state == CONN_CLOSING)
	{
		run.close_acked++;
		counter_addf(&run.close_acks, "%d", code);
		conn_end(c, NULL);
		return;
	}
	counter_addf(&run.server_closes, "%d", code);
	snprintf(reason, sizeof(reason), "closed by server %d", code);
	conn_abandon(c, code, reason);
}

/*
 * One complete data message: count its bytes by receive time, inflate it
 * if it came compressed, then read it if it is text.
 */
static void
handle_message(Conn *c, uint8_t opcode, bool compressed, const uint8_t *payload, size_t len)
{
	const char *text = (const char *) payload;
	size_t		text_len = len;
	const char *error = NULL;

	if (compressed && !inflate_message(c, payload, len, &text, &text_len, &error))
	{
		conn_end(c, error);
		return;
	}
	TRAFFIC_ADD(recv_messages, 1, run.read_us);
	TRAFFIC_ADD(recv_compressed, compressed, run.read_us);
	TRAFFIC_ADD(recv_wire_bytes, len, run.read_us);
	TRAFFIC_ADD(recv_bytes, text_len, run.read_us);
	if (opcode == WS_OP_TEXT)
		handle_text(c, text, text_len);
	else
		counter_addf(&run.anomalies, "binary message");
}

/* Dispatch one frame, reassembling fragmented messages. */
static void
handle_frame(Conn *c, const WsFrame *f)
{
	switch (f->opcode)
	{
		case WS_OP_TEXT:
		case WS_OP_BINARY:
		case WS_OP_CONTINUATION:
			if ((f->opcode == WS_OP_CONTINUATION) != (c->fragment_opcode != 0))
			{
				conn_end(c, "protocol: unexpected continuation state");
				return;
			}
			if (f->opcode != WS_OP_CONTINUATION && f->fin)
			{
				handle_message(c, f->opcode, f->rsv1, f->payload, f->len);
				return;
			}
			if (f->opcode != WS_OP_CONTINUATION)
			{
				c->fragment_opcode = f->opcode;
				c->fragment_compressed = f->rsv1;
			}
			if (c->fragments.len + f->len > run.opt.max_message)
			{
				conn_end(c, "protocol: message too large");
				return;
			}
			buf_append(&c->fragments, f->payload, f->len);
			if (f->fin)
			{
				uint8_t		opcode = c->fragment_opcode;

				c->fragment_opcode = 0;
				handle_message(c, opcode, c->fragment_compressed, c->fragments.data,
							   c->fragments.len);
				if (c->fd >= 0)
					c->fragments.len = 0;
			}
			break;
		case WS_OP_CLOSE:
			handle_close_frame(c, f);
			break;
		case WS_OP_PING:
			run.pings++;
			ws_send(c, WS_OP_PONG, false, f->payload, f->len);
			break;
		case WS_OP_PONG:
			break;
		default:
			conn_end(c, "protocol: unknown opcode");
			break;
	}
}

/*
 * Parse one server frame from buf.  Returns its total length, 0 if more
 * bytes are needed, or -1 (with *error set) if it breaks RFC 6455: server
 * frames are never masked, use no reserved bits (but RSV1 on the first
 * frame of a data message when permessage-deflate was agreed, RFC 7692),
 * and control frames are short and unfragmented.
 */
static ssize_t
ws_parse_frame(const uint8_t *buf, size_t avail, bool deflate, WsFrame *f, const char **error)
{
	size_t		header = 2;
	uint64_t	len;

	if (avail < 2)
		return 0;
	f->fin = (buf[0] & 0x80) != 0;
	f->rsv1 = (buf[0] & WS_RSV1) != 0;
	f->opcode = buf[0] & 0x0F;
	if (buf[0] & 0x30)
	{
		*error = "protocol: reserved bits set";
		return -1;
	}
	if (f->rsv1 && !deflate)
	{
		*error = "protocol: RSV1 without permessage-deflate";
		return -1;
	}
	if (f->rsv1 && (f->opcode == WS_OP_CONTINUATION || (f->opcode & 0x8)))
	{
		*error = "protocol: RSV1 on a continuation or control frame";
		return -1;
	}
	if (buf[1] & 0x80)
	{
		*error = "protocol: masked server frame";
		return -1;
	}
	len = buf[1] & 0x7F;
	if (len == 126)
	{
		if (avail < 4)
			return 0;
		len = ((uint64_t) buf[2] << 8) | buf[3];
		header = 4;
	}
	else if (len == 127)
	{
		if (avail < 10)
			return 0;
		len = 0;
		for (int i = 2; i < 10; i++)
			len = (len << 8) | buf[i];
		header = 10;
	}
	if ((f->opcode & 0x8) && (!f->fin || len > 125))
	{
		*error = "protocol: bad control frame";
		return -1;
	}
	if (len > run.opt.max_message)
	{
		*error = "protocol: frame too large";
		return -1;
	}
	if (avail < header + len)
		return 0;
	f->payload = buf + header;
	f->len = (size_t) len;
	return (ssize_t) (header + len);
}

/*
 * Parse received bytes: the HTTP response while upgrading, then frames.
 * Returns how many bytes were used; the rest waits for more input.
 */
static size_t
conn_process(Conn *c, const uint8_t *data, size_t len)
{
	size_t		used = 0;

	if (c->state == CONN_UPGRADING)
	{
		const uint8_t *head_end = memmem(data, len, "\r\n\r\n", 4);

		if (head_end == NULL)
		{
			if (len > MAX_HTTP_RESPONSE)
				conn_end(c, "upgrade response too large");
			return 0;
		}
		used = head_end + 4 - data;
		if (!conn_check_upgrade(c, (const char *) data, used))
			return used;
	}
	while (c->fd >= 0 && used < len)
	{
		WsFrame		f;
		const char *error = NULL;
		ssize_t		n = ws_parse_frame(data + used, len - used, c->deflate, &f, &error);

		if (n == 0)
			break;
		if (n < 0)
		{
			conn_end(c, error);
			break;
		}
		used += n;
		handle_frame(c, &f);
	}
	return used;
}

/*
 * The socket is readable: read what is there and parse it.  Bytes of an
 * incomplete frame stay in the connection's pending buffer; most reads
 * parse straight from the shared scratch buffer without copying.
 *
 * The arrival time is the kernel's receive timestamp (SO_TIMESTAMPNS), not
 * the time of the read, so latency does not include the generator's own
 * polling delay.
 */
static void
conn_read(Conn *c)
{
	static uint8_t scratch[READ_CHUNK];
	char		control[CMSG_SPACE(sizeof(struct timespec))];
	struct iovec iov = {.iov_base = scratch, .iov_len = sizeof(scratch)};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1,
	.msg_control = control, .msg_controllen = sizeof(control)};
	ssize_t		n = recvmsg(c->fd, &msg, 0);
	size_t		used;

	if (n <= 0)
	{
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (c->state == CONN_JOINED || c->state == CONN_CLOSING)
			counter_addf(c->state == CONN_CLOSING ? &run.close_acks : &run.server_closes,
						 "%d", WS_CLOSE_ABNORMAL);
		conn_end(c, n == 0 ? "connection closed without close frame" : strerror(errno));
		return;
	}
	run.read_us = run.recv_us = now_us();
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm))
	{
		if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_TIMESTAMPNS)
		{
			struct timespec ts;

			memcpy(&ts, CMSG_DATA(cm), sizeof(ts));
			run.recv_us = (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000 -
				run.realtime_origin_us;
		}
	}
	if (c->pending.len == 0)
	{
		used = conn_process(c, scratch, n);
		if (c->fd >= 0 && used < (size_t) n)
			buf_append(&c->pending, scratch + used, n - used);
	}
	else
	{
		buf_append(&c->pending, scratch, n);
		used = conn_process(c, c->pending.data, c->pending.len);
		if (c->fd >= 0)
			buf_consume(&c->pending, used);
	}
}

/* Handle one epoll event for a connection. */
static void
conn_event(Conn *c, uint32_t events)
{
	if (c->state == CONN_CONNECTING)
	{
		int			err = 0;
		socklen_t	err_len = sizeof(err);

		getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &err_len);
		if (err != 0)
		{
			conn_end(c, strerror(err));
			return;
		}
		conn_send_upgrade(c);
		if (c->fd >= 0)
			conn_want_write(c, c->out.len > 0);
		return;
	}
	if ((events & EPOLLOUT) && c->fd >= 0)
		conn_flush(c);
	if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && c->fd >= 0)
		conn_read(c);
}


/* ---------------------------------------------------------------------
 * Load: ramp, cursor updates, heartbeats
 * ---------------------------------------------------------------------
 */

/* How many emissions a pacer owes at time now (bounded to one round). */
static int
pacer_due(Pacer *p, int64_t now)
{
	uint64_t	target;
	uint64_t	due;

	if (p->rate <= 0 || now < p->start_us)
		return 0;
	target = (uint64_t) ((double) (now - p->start_us) * p->rate / 1e6);
	due = target > p->issued ? target - p->issued : 0;
	if (due > (uint64_t) run.opt.connections)
	{
		p->issued += due - run.opt.connections;
		due = run.opt.connections;
	}
	return (int) due;
}

/* Open the connections the ramp rate allows by now. */
static void
open_due_connections(int64_t now)
{
	int64_t		target = 1 + (int64_t) ((double) (now - run.ramp_start_us) * run.opt.ramp_rate / 1e6);

	while (run.opened < run.opt.connections && run.opened < target)
		conn_open(&run.conns[run.opened], now);
}

/* Run a pacer at a new rate from now on (a step change restarts its count). */
static void
pacer_set_rate(Pacer *p, double rate, int64_t now)
{
	p->rate = rate;
	p->start_us = now;
	p->issued = 0;
}

/*
 * The pacer's next joined connection, round-robin; only those of large
 * sessions if asked.  NULL when none is joined.
 */
static Conn *
next_joined_conn(Pacer *p, bool large_only)
{
	for (int tries = 0; tries < run.opt.connections; tries++)
	{
		Conn	   *c = &run.conns[p->next_conn];

		p->next_conn = (p->next_conn + 1) % run.opt.connections;
		if (c->state == CONN_JOINED && (!large_only || c->session >= run.opt.sessions))
			return c;
	}
	return NULL;
}

/*
 * Send the cursor updates that are due, round-robin over the joined
 * connections, so the total rate is the step's and each connection gets
 * an equal share.  The position is the send time.
 */
static void
send_due_cursor_updates(int64_t now)
{
	Pacer	   *p = &run.cursor_pacer;

	for (int due = pacer_due(p, now); due > 0; due--)
	{
		Conn	   *c = next_joined_conn(p, false);
		char		msg[192];
		int			len;
		int64_t		sent_at;

		if (c == NULL)
			break;
		p->issued++;
		sent_at = now_us();
		len = snprintf(msg, sizeof(msg),
					   "{\"type\":\"cursor_update\",\"sessionId\":\"%s\","
					   "\"cursor\":{\"eventId\":\"e\",\"position\":%lld}}",
					   c->session_id, (long long) sent_at);
		TRAFFIC_ADD(cursor_sent, 1, sent_at);
		TRAFFIC_ADD(expected_deliveries, run.session_joined[c->session] - 1, sent_at);
		send_message(c, msg, len, sent_at);
	}
}

/*
 * Send the activities that are due (--activity-rate), round-robin over
 * the joined connections: a few hundred bytes of words in details, which
 * the server writes to the activity log and sends to the whole session.
 */
static void
send_due_activities(int64_t now)
{
	static const char *const words[] = {
		"review", "the", "cursor", "moved", "to", "line", "deploy", "check", "looks",
		"good", "merge", "after", "tests", "pass", "please", "see", "comment", "above",
		"session", "update", "status", "ticket", "draft", "final", "fixed", "typo",
	};
	Pacer	   *p = &run.activity_pacer;

	for (int due = pacer_due(p, now); due > 0; due--)
	{
		Conn	   *c = next_joined_conn(p, false);
		char		msg[1024];
		size_t		target;
		int			len;

		if (c == NULL)
			break;
		p->issued++;
		len = snprintf(msg, sizeof(msg),
					   "{\"type\":\"activity\",\"ref\":\"act\",\"sessionId\":\"%s\","
					   "\"activityType\":\"bench.note\",\"details\":{\"seq\":%llu,"
					   "\"sentAt\":%lld,\"text\":\"",
					   c->session_id, (unsigned long long) ++run.activity_seq, (long long) now);
		target = len + ACTIVITY_TEXT_MIN + prng_next() % ACTIVITY_TEXT_SPREAD;
		while ((size_t) len < target)
		{
			const char *w = words[prng_next() % (sizeof(words) / sizeof(words[0]))];

			len += snprintf(msg + len, sizeof(msg) - len, "%s%s", w, (size_t) len + 8 < target ? " " : "");
		}
		len += snprintf(msg + len, sizeof(msg) - len, "\"}}");
		TRAFFIC_ADD(activities_sent, 1, now);
		TRAFFIC_ADD(expected_activity_deliveries, run.session_joined[c->session], now);
		send_message(c, msg, len, now);
	}
}

/*
 * Start the rejoins that are due (--rejoin-rate): a joined connection,
 * of a large session when there are any, leaves its session; the ack
 * makes it join again, and the server answers with the session_joined
 * that lists every user there.
 */
static void
send_due_rejoins(int64_t now)
{
	Pacer	   *p = &run.rejoin_pacer;

	for (int due = pacer_due(p, now); due > 0; due--)
	{
		Conn	   *c = next_joined_conn(p, run.opt.large_sessions > 0);
		char		msg[128];
		int			len;

		if (c == NULL)
			break;
		p->issued++;
		len = snprintf(msg, sizeof(msg),
					   "{\"type\":\"session_leave\",\"ref\":\"leave\",\"sessionId\":\"%s\"}",
					   c->session_id);
		conn_set_state(c, CONN_REJOINING);
		c->deadline_us = now + (int64_t) (run.opt.connect_timeout * 1e6);
		TRAFFIC_ADD(rejoins_started, 1, now);
		send_message(c, msg, len, now);
	}
}

/*
 * Send the heartbeats that are due.  The pacer walks every connection slot
 * at connections/interval per second, so each joined connection sends one
 * heartbeat per interval and they are spread evenly in time.
 */
static void
send_due_heartbeats(int64_t now)
{
	static const char heartbeat[] = "{\"type\":\"heartbeat\"}";
	Pacer	   *p = &run.heartbeat_pacer;

	if (p->rate == 0 && run.heartbeat_interval_us > 0)
	{
		p->rate = run.opt.connections * 1e6 / run.heartbeat_interval_us;
		p->start_us = now;
	}
	for (int due = pacer_due(p, now); due > 0; due--)
	{
		Conn	   *c = &run.conns[p->next_conn];

		p->next_conn = (p->next_conn + 1) % run.opt.connections;
		p->issued++;
		if (c->state != CONN_JOINED)
			continue;
		TRAFFIC_ADD(heartbeats_sent, 1, now);
		send_message(c, heartbeat, sizeof(heartbeat) - 1, now);
	}
}

/*
 * Fail connections stuck in a handshake, finish overdue close handshakes.
 * Only connections between opening and joined, or closing, have a
 * deadline; when there are none (the steady state) nothing is scanned.
 */
static void
expire_deadlines(int64_t now)
{
	if (run.state_count[CONN_IDLE] + run.state_count[CONN_JOINED] +
		run.state_count[CONN_DONE] == run.opt.connections)
		return;
	for (int i = 0; i < run.opened; i++)
	{
		Conn	   *c = &run.conns[i];

		if (c->state == CONN_JOINED || c->state == CONN_DONE || now < c->deadline_us)
			continue;
		conn_end(c, c->state == CONN_CLOSING ? "no close frame before timeout" : "timeout");
	}
}


/* ---------------------------------------------------------------------
 * Phases and reporting
 * ---------------------------------------------------------------------
 */

/* Print one progress line covering the time since the previous one. */
static void
print_progress(int64_t now)
{
	ProcUsage	server = server_usage();
	ProcUsage	self = self_usage();
	double		secs = (now - run.self_at_last_progress.wall_us) / 1e6;
	Traffic    *last = &run.at_last_progress;

	printf("[%6.1fs] %-7s conns %d joined %d failed %llu dropped %llu | "
		   "sent %.0f/s deliv %.0f/s | lat p50 %.2f p99 %.2f max %.2f ms | cpu",
		   now / 1e6, phase_names[run.phase], run.opened,
		   run.state_count[CONN_JOINED] + run.state_count[CONN_REJOINING],
		   (unsigned long long) run.failed, (unsigned long long) run.dropped,
		   (run.total.messages_sent - last->messages_sent) / secs,
		   (run.total.deliveries - last->deliveries) / secs,
		   hist_percentile_ms(&run.progress_latency, 50),
		   hist_percentile_ms(&run.progress_latency, 99),
		   run.progress_latency.max / 1000.0);
	if (run.n_server_pids > 0)
		printf(" server %.1f%%", cpu_percent(&run.server_at_last_progress, &server));
	printf(" gen %.1f%%\n", cpu_percent(&run.self_at_last_progress, &self));
	if (run.n_server_pids > 0 && !server.valid)
		fprintf(stderr, "loadgen: warning: a server worker pid is gone (crash or restart?)\n");
	*last = run.total;
	memset(&run.progress_latency, 0, sizeof(run.progress_latency));
	run.server_at_last_progress = server;
	run.self_at_last_progress = self;
}

/* Start a --timeseries second at now, from samples taken now. */
static void
timeseries_begin_second(int64_t now, ProcUsage server, ProcUsage self)
{
	TimeSeries *ts = &run.ts;

	ts->second++;
	ts->next_us = now + 1000000;
	ts->deliveries = 0;
	ts->cursor_sent_before = run.window.cursor_sent;
	memset(&ts->latency, 0, sizeof(ts->latency));
	ts->server_last = server;
	ts->self_last = self;
}

/*
 * Write the --timeseries line of the second that ends: updates sent
 * in it, cursor events received in it and their latency, then the server's
 * and the generator's CPU over it.
 */
static void
timeseries_end_second(ProcUsage server, ProcUsage self)
{
	TimeSeries *ts = &run.ts;
	double		rate = run.cursor_pacer.rate;

	/* the rate offered in the middle of the second, settle times included */
	for (int i = 0; i < run.n_steps; i++)
	{
		if (ts->next_us - 500000 >= run.steps[i].settle_us && ts->next_us - 500000 < run.steps[i].end_us)
			rate = run.steps[i].rate;
	}

	fprintf(ts->file, "%d,%llu,%llu,%.3f,%.3f,%.3f,%.3f,", ts->second,
			(unsigned long long) (run.window.cursor_sent - ts->cursor_sent_before),
			(unsigned long long) ts->deliveries,
			hist_percentile_ms(&ts->latency, 50), hist_percentile_ms(&ts->latency, 99),
			hist_percentile_ms(&ts->latency, 99.9), ts->latency.max / 1000.0);
	if (run.n_server_pids > 0 && server.valid)
		fprintf(ts->file, "%.1f,%lld,", cpu_percent(&ts->server_last, &server),
				(long long) server.rss_kb);
	else
		fputs(",,", ts->file);
	fprintf(ts->file, "%.1f,%.0f\n", cpu_percent(&ts->self_last, &self), rate);
}

/* Once a tick in the window: close the --timeseries second when it is over. */
static void
timeseries_tick(int64_t now)
{
	if (run.ts.file && now >= run.ts.next_us)
	{
		ProcUsage	server = server_usage();
		ProcUsage	self = self_usage();

		timeseries_end_second(server, self);
		timeseries_begin_second(now, server, self);
	}
}

/*
 * Lay the steps out end to end from the start of the window: each later
 * step runs --step-settle seconds unmeasured at its rate, then its
 * seconds measured.  Sets the window's end.
 */
static void
plan_steps(int64_t window_start)
{
	int64_t		t = window_start;

	for (int i = 0; i < run.n_steps; i++)
	{
		Step	   *step = &run.steps[i];

		step->settle_us = t;
		step->start_us = t + (i > 0 ? (int64_t) (run.opt.step_settle * 1e6) : 0);
		step->end_us = step->start_us + (int64_t) (step->seconds * 1e6);
		t = step->end_us;
	}
	run.window_start_us = window_start;
	run.window_end_us = t;
}

/*
 * In the window: close the measured step whose time is over, switch the
 * cursor rate when the next step's time comes, open its measurement after
 * the settle time.  Prints a line at each change.
 */
static void
advance_steps(int64_t now)
{
	int			next = run.step_running + 1;

	if (run.step_measuring >= 0 && now >= run.steps[run.step_measuring].end_us)
	{
		Step	   *step = &run.steps[run.step_measuring];

		step->server_end = server_usage();
		step->self_end = self_usage();
		run.step_measuring = -1;
	}
	if (next < run.n_steps && now >= run.steps[next].settle_us)
	{
		pacer_set_rate(&run.cursor_pacer, run.steps[next].rate, now);
		run.step_running = next;
		if (run.n_steps > 1)
			printf("[%6.1fs] step %d/%d: %.0f cursor updates/s for %.1f s\n", now / 1e6,
				   next + 1, run.n_steps, run.steps[next].rate, run.steps[next].seconds);
	}
	if (run.step_measuring < 0 && run.step_running >= 0 &&
		now >= run.steps[run.step_running].start_us &&
		now < run.steps[run.step_running].end_us &&
		!run.steps[run.step_running].self_start.valid)
	{
		Step	   *step = &run.steps[run.step_running];

		step->server_start = server_usage();
		step->self_start = self_usage();
		run.step_measuring = run.step_running;
	}
}

/* Close every connection that is still open and enter the close phase. */
static void
begin_shutdown(int64_t now)
{
	for (int i = 0; i < run.opened; i++)
		conn_begin_close(&run.conns[i], now);
	run.close_end_us = now + (int64_t) (run.opt.close_timeout * 1e6);
	run.phase = PHASE_CLOSE;
}

/* Move between phases when their time (or condition) has come. */
static void
advance_phase(int64_t now)
{
	if (run.stop_requested && !run.interrupted && run.phase < PHASE_DRAIN)
	{
		run.interrupted = true;
		if (run.phase == PHASE_MEASURE)
		{
			run.window_end_us = now;
			for (int i = 0; i < run.n_steps; i++)
			{
				if (run.steps[i].end_us > now)
					run.steps[i].end_us = now > run.steps[i].start_us ? now : run.steps[i].start_us;
			}
		}
		else
		{
			run.drain_end_us = now;
			run.phase = PHASE_DRAIN;
		}
	}
	switch (run.phase)
	{
		case PHASE_RAMP:
			if (run.opened == run.opt.connections &&
				run.state_count[CONN_JOINED] + run.state_count[CONN_DONE] == run.opt.connections)
			{
				run.ramp_end_us = now;
				run.joined_at_ramp_end = run.state_count[CONN_JOINED];
				run.server_after_connect = server_usage();
				plan_steps(now + (int64_t) (run.opt.warmup * 1e6));
				/* the warm-up runs at the first step's rate */
				pacer_set_rate(&run.cursor_pacer, run.steps[0].rate, now);
				run.step_running = 0;
				pacer_set_rate(&run.activity_pacer, run.opt.activity_rate, now);
				pacer_set_rate(&run.rejoin_pacer, run.opt.rejoin_rate, now);
				run.phase = PHASE_WARMUP;
				printf("ramp done in %.2f s: %d joined, %llu failed\n",
					   (now - run.ramp_start_us) / 1e6, run.state_count[CONN_JOINED],
					   (unsigned long long) run.failed);
			}
			break;
		case PHASE_WARMUP:
			if (now >= run.window_start_us)
			{
				run.server_window_start = server_usage();
				run.self_window_start = self_usage();
				run.phase = PHASE_MEASURE;
				if (run.ts.file)
					timeseries_begin_second(now, run.server_window_start, run.self_window_start);
				advance_steps(now);
			}
			break;
		case PHASE_MEASURE:
			advance_steps(now);
			if (now >= run.window_end_us)
			{
				run.server_window_end = server_usage();
				run.self_window_end = self_usage();
				if (run.ts.file)
					timeseries_end_second(run.server_window_end, run.self_window_end);
				run.held = run.state_count[CONN_JOINED] + run.state_count[CONN_REJOINING];
				run.measured_s = (run.window_end_us - run.window_start_us) / 1e6;
				run.cursor_pacer.rate = 0;
				run.activity_pacer.rate = 0;
				run.rejoin_pacer.rate = 0;
				run.drain_end_us = now + (int64_t) (run.opt.drain * 1e6);
				run.phase = PHASE_DRAIN;
			}
			else
				timeseries_tick(now);
			break;
		case PHASE_DRAIN:
			if (now >= run.drain_end_us)
				begin_shutdown(now);
			break;
		case PHASE_CLOSE:
			if (run.state_count[CONN_CLOSING] == 0 || now >= run.close_end_us)
			{
				expire_deadlines(INT64_MAX);
				run.phase = PHASE_DONE;
			}
			break;
		case PHASE_DONE:
			break;
	}
}

/* Handle every event that is ready now, without waiting. */
static void
poll_events(void)
{
	struct epoll_event events[MAX_EPOLL_EVENTS];
	int			n;

	do
	{
		n = epoll_wait(run.epfd, events, MAX_EPOLL_EVENTS, 0);
		if (n < 0 && errno != EINTR)
			fatal("epoll_wait: %s", strerror(errno));
		for (int i = 0; i < n; i++)
		{
			Conn	   *c = events[i].data.ptr;

			if (c->fd >= 0)
				conn_event(c, events[i].events);
		}
	} while (n == MAX_EPOLL_EVENTS);
}

/* Sleep until a time on the now_us() clock. */
static void
sleep_until(int64_t when_us)
{
	struct timespec ts = clock_origin;

	ts.tv_sec += when_us / 1000000;
	ts.tv_nsec += (when_us % 1000000) * 1000;
	if (ts.tv_nsec >= 1000000000)
	{
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR &&
		   !run.stop_requested)
		;
}

/*
 * The event loop: runs every phase until all connections are closed.  It
 * wakes once per tick and then handles everything that is ready, instead
 * of waking for every arriving frame: thousands of connections each
 * receiving now and then would otherwise cost a context switch per frame.
 */
static void
run_load(void)
{
	int64_t		next_tick;

	run.ramp_start_us = now_us();
	run.window_start_us = run.window_end_us = INT64_MAX;
	run.next_progress_us = run.ramp_start_us + (int64_t) (run.opt.progress * 1e6);
	run.server_at_last_progress = server_usage();
	run.self_at_last_progress = self_usage();
	run.phase = PHASE_RAMP;
	next_tick = run.ramp_start_us;

	while (run.phase != PHASE_DONE)
	{
		int64_t		now = now_us();
		int64_t		pass;

		advance_phase(now);
		if (run.phase == PHASE_RAMP)
			open_due_connections(now);
		if (run.phase == PHASE_WARMUP || run.phase == PHASE_MEASURE)
		{
			send_due_cursor_updates(now);
			send_due_activities(now);
			send_due_rejoins(now);
		}
		if (run.phase < PHASE_CLOSE)
			send_due_heartbeats(now);
		if (now >= run.next_housekeeping_us)
		{
			expire_deadlines(now);
			run.next_housekeeping_us = now + HOUSEKEEPING_US;
		}
		if (now >= run.next_progress_us)
		{
			print_progress(now);
			sync_realtime_origin();
			run.next_progress_us = now + (int64_t) (run.opt.progress * 1e6);
		}
		poll_events();

		pass = now_us() - now;
		if (run.phase == PHASE_MEASURE)
		{
			if (pass > run.longest_pass_us)
				run.longest_pass_us = pass;
			if (pass > run.opt.tick_us)
				run.overrun_passes++;
		}
		next_tick += run.opt.tick_us;
		if (next_tick < now_us())
			next_tick = now_us();
		else
			sleep_until(next_tick);
	}
}

/* A count per second over a period; NAN when there was no period. */
static double
per_second(uint64_t count, double seconds)
{
	return seconds > 0 ? count / seconds : NAN;
}

/* The report's line about permessage-deflate: what was agreed, and what it did to the bytes. */
static void
print_deflate_report(double window_s)
{
	const Traffic *w = &run.window;

	if (!run.opt.deflate)
		printf("mode            plain (no extension offered)\n");
	else
	{
		printf("mode            deflate: offered \"%s\" on %d connections; %d agreed",
			   DEFLATE_OFFER, run.opened, run.deflate_negotiated);
		if (run.deflate_negotiated)
			printf(", answer \"%s\"", run.deflate_answer);
		printf(", %d declined\n", run.deflate_declined);
		if (run.deflate_negotiated)
		{
			int			shared_deflaters = 0;

			for (int i = 0; i < 16; i++)
				shared_deflaters += run.shared_deflater[i] != NULL;
			printf("                zlib streams: %d own deflaters (context kept), %d shared (reset per message); "
				   "%d own inflaters, %d shared\n",
				   run.deflaters_allocated, shared_deflaters, run.inflaters_allocated,
				   run.shared_inflater != NULL);
		}
	}
	printf("bytes           received %.1f messages/s (%.1f/s compressed): %.1f KB/s on the wire, "
		   "%.1f KB/s inflated (wire/inflated %.3f)\n",
		   per_second(w->recv_messages, window_s), per_second(w->recv_compressed, window_s),
		   per_second(w->recv_wire_bytes, window_s) / 1000, per_second(w->recv_bytes, window_s) / 1000,
		   w->recv_bytes ? (double) w->recv_wire_bytes / w->recv_bytes : NAN);
	printf("                sent %.1f messages/s (%.1f/s compressed): %.1f KB/s of text, "
		   "%.1f KB/s on the wire (wire/text %.3f)\n",
		   per_second(w->messages_sent, window_s), per_second(w->sent_compressed, window_s),
		   per_second(w->sent_bytes, window_s) / 1000, per_second(w->sent_wire_bytes, window_s) / 1000,
		   w->sent_bytes ? (double) w->sent_wire_bytes / w->sent_bytes : NAN);
}

/* The report's line about activities and rejoins, when there were any. */
static void
print_mix_report(double window_s)
{
	const Traffic *w = &run.window;

	if (run.opt.activity_rate <= 0 && run.opt.rejoin_rate <= 0 && run.opt.large_sessions <= 0)
		return;
	printf("mix             %d large sessions of %d users; activities sent %.2f/s, activity events "
		   "received %.1f/s (expected %.1f/s), acks %.2f/s\n",
		   run.opt.large_sessions, LARGE_SESSION_USERS, per_second(w->activities_sent, window_s),
		   per_second(w->activity_deliveries, window_s),
		   per_second(w->expected_activity_deliveries, window_s), per_second(w->activity_acks, window_s));
	printf("                rejoins started %.2f/s, done %.2f/s (session_joined of %.1f users, "
		   "%.0f bytes on average); join/leave events received %.1f/s\n",
		   per_second(w->rejoins_started, window_s), per_second(w->rejoins_done, window_s),
		   w->rejoins_done ? (double) w->rejoin_users / w->rejoins_done : NAN,
		   w->rejoins_done ? (double) w->rejoin_bytes / w->rejoins_done : NAN,
		   per_second(w->membership_events, window_s));
}

/* Measures of one step, for its report line and its CSV row. */
typedef struct StepFigures
{
	double		seconds;
	double		cursor_per_s;
	double		deliveries_per_s;
	double		ratio;
	double		p50,
				p99,
				p999,
				max;
	double		server_cpu;
	double		server_us_per_delivery;
	double		gen_cpu;
} StepFigures;

/* Compute a step's figures; false if it was never measured (interrupted). */
static bool
step_figures(const Step *step, StepFigures *f)
{
	const Traffic *t = &step->traffic;

	if (!step->self_start.valid || !step->self_end.valid)
		return false;
	f->seconds = (step->end_us - step->start_us) / 1e6;
	f->cursor_per_s = per_second(t->cursor_sent, f->seconds);
	f->deliveries_per_s = per_second(t->deliveries, f->seconds);
	f->ratio = t->expected_deliveries ? (double) t->deliveries / t->expected_deliveries : NAN;
	f->p50 = hist_percentile_ms(&step->latency, 50);
	f->p99 = hist_percentile_ms(&step->latency, 99);
	f->p999 = hist_percentile_ms(&step->latency, 99.9);
	f->max = step->latency.max / 1000.0;
	f->server_cpu = cpu_percent(&step->server_start, &step->server_end);
	f->server_us_per_delivery = t->deliveries ?
		cpu_ms(&step->server_start, &step->server_end) * 1000.0 / t->deliveries : NAN;
	f->gen_cpu = cpu_percent(&step->self_start, &step->self_end);
	return true;
}

/* The per-step table (--steps), and its CSV (--steps-csv). */
static void
print_steps_report(void)
{
	FILE	   *csv = NULL;

	if (run.opt.steps_spec == NULL)
		return;
	if (run.opt.steps_csv_path && (csv = fopen(run.opt.steps_csv_path, "w")) == NULL)
		fprintf(stderr, "loadgen: cannot write %s: %s\n", run.opt.steps_csv_path, strerror(errno));
	if (csv)
		fprintf(csv, "step,offered_rate,seconds,cursor_per_s,deliveries_per_s,delivery_ratio,"
				"p50_ms,p99_ms,p999_ms,max_ms,server_cpu_pct,server_cpu_us_per_delivery,gen_cpu_pct\n");
	printf("steps           (settle %.1f s before each later step; updates sent in a step's "
		   "measured time, whenever delivered)\n", run.opt.step_settle);
	printf("  %4s %9s %9s %11s %7s %8s %8s %8s %8s %8s %10s %7s\n", "step", "offered/s", "sent/s",
		   "deliveries/s", "ratio", "p50_ms", "p99_ms", "p99.9_ms", "max_ms", "srv_cpu%",
		   "srv_us/dlv", "gen_cpu%");
	for (int i = 0; i < run.n_steps; i++)
	{
		const Step *step = &run.steps[i];
		StepFigures f;

		if (!step_figures(step, &f))
		{
			printf("  %4d %9.0f (not run)\n", i + 1, step->rate);
			continue;
		}
		printf("  %4d %9.0f %9.1f %11.1f %7.4f %8.3f %8.3f %8.3f %8.3f %8.1f %10.2f %7.1f\n",
			   i + 1, step->rate, f.cursor_per_s, f.deliveries_per_s, f.ratio, f.p50, f.p99, f.p999,
			   f.max, f.server_cpu, f.server_us_per_delivery, f.gen_cpu);
		if (csv)
			fprintf(csv, "%d,%.0f,%.3f,%.1f,%.1f,%.4f,%.3f,%.3f,%.3f,%.3f,%.1f,%.3f,%.1f\n",
					i + 1, step->rate, f.seconds, f.cursor_per_s, f.deliveries_per_s, f.ratio,
					f.p50, f.p99, f.p999, f.max, f.server_cpu, f.server_us_per_delivery, f.gen_cpu);
	}
	if (csv)
		fclose(csv);
}

/* Print the human-readable report and the RESULT line. */
static void
print_report(void)
{
	const Options *o = &run.opt;
	const Traffic *w = &run.window;
	const Histogram *h = &run.window_latency;
	double		window_s = run.measured_s;
	double		msgs_per_s = per_second(w->messages_sent, window_s);
	double		cursor_per_s = per_second(w->cursor_sent, window_s);
	double		deliveries_per_s = per_second(w->deliveries, window_s);
	double		delivery_ratio = w->expected_deliveries ?
		(double) w->deliveries / w->expected_deliveries : NAN;
	double		p50 = hist_percentile_ms(h, 50);
	double		p95 = hist_percentile_ms(h, 95);
	double		p99 = hist_percentile_ms(h, 99);
	double		p999 = hist_percentile_ms(h, 99.9);
	double		server_cpu = cpu_percent(&run.server_window_start, &run.server_window_end);
	double		server_cpu_ms = cpu_ms(&run.server_window_start, &run.server_window_end);
	double		idle_cpu = cpu_percent(&run.server_idle_start, &run.server_before_connect);
	double		gen_cpu = cpu_percent(&run.self_window_start, &run.self_window_end);
	uint64_t	gen_messages = w->messages_sent + w->recv_messages;
	double		gen_us_per_msg = gen_messages ?
		cpu_ms(&run.self_window_start, &run.self_window_end) * 1000.0 / gen_messages : NAN;
	double		ms_per_1k_msgs = w->messages_sent ? server_cpu_ms * 1000.0 / w->messages_sent : NAN;
	double		ms_per_1k_deliveries = w->deliveries ? server_cpu_ms * 1000.0 / w->deliveries : NAN;
	double		rss_per_conn = NAN;

	if (run.joined_at_ramp_end > 0)
		rss_per_conn = (rss_kb(&run.server_after_connect) - rss_kb(&run.server_before_connect)) /
			run.joined_at_ramp_end;

	printf("\n== presence loadgen: %d connections, %d sessions (%.1f users each), ",
		   o->connections, o->sessions,
		   (double) (o->connections - o->large_sessions * LARGE_SESSION_USERS) / o->sessions);
	if (o->large_sessions > 0)
		printf("%d of %d, ", o->large_sessions, LARGE_SESSION_USERS);
	if (o->steps_spec)
		printf("cursor steps %s", o->steps_spec);
	else
		printf("%.0f cursor updates/s", o->rate);
	if (o->source_addresses > 0)
		printf(", from 127.0.0.1 .. %d addresses", o->source_addresses);
	printf(" ==\n");
	if (run.interrupted)
		printf("(interrupted: the window is shorter than asked, or missing)\n");
	printf("window          %.1f s measured after %.1f s warmup; ramp took %.2f s\n",
		   window_s, o->warmup, run.ramp_end_us ? (run.ramp_end_us - run.ramp_start_us) / 1e6 : NAN);
	printf("connections     attempted %d, joined %llu, held %d through the window, "
		   "failed %llu, dropped %llu\n",
		   run.opened, (unsigned long long) run.joined_ever, run.held,
		   (unsigned long long) run.failed, (unsigned long long) run.dropped);
	printf("  failures      ");
	counter_print(stdout, &run.failures, ", ", " x");
	printf("\n  drops         ");
	counter_print(stdout, &run.drops, ", ", " x");
	printf("\nmessages in     %.1f/s sent by the generator (cursor %.1f/s, heartbeat %.1f/s)\n",
		   msgs_per_s, cursor_per_s, per_second(w->heartbeats_sent, window_s));
	printf("deliveries out  %.1f/s cursor events received (expected %.1f/s, ratio %.4f)\n",
		   deliveries_per_s, per_second(w->expected_deliveries, window_s), delivery_ratio);
	printf("latency         p50 %.3f ms, p95 %.3f ms, p99 %.3f ms, p99.9 %.3f ms, max %.3f ms "
		   "(%llu samples)\n",
		   p50, p95, p99, p999, h->max / 1000.0, (unsigned long long) h->total);
	if (o->large_sessions > 0)
	{
		const Histogram *regular = &run.window_latency_by_size[0],
				   *large = &run.window_latency_by_size[1];

		printf("  by session    others: p50 %.3f, p99 %.3f, p99.9 %.3f, max %.3f ms (%llu); "
			   "large: p50 %.3f, p99 %.3f, p99.9 %.3f, max %.3f ms (%llu)\n",
			   hist_percentile_ms(regular, 50), hist_percentile_ms(regular, 99),
			   hist_percentile_ms(regular, 99.9), regular->max / 1000.0,
			   (unsigned long long) regular->total,
			   hist_percentile_ms(large, 50), hist_percentile_ms(large, 99),
			   hist_percentile_ms(large, 99.9), large->max / 1000.0,
			   (unsigned long long) large->total);
	}
	print_deflate_report(window_s);
	print_mix_report(window_s);
	print_steps_report();
	printf("whole run       sent %llu messages (%llu cursor, %llu heartbeat), "
		   "received %llu cursor events of %llu expected\n",
		   (unsigned long long) run.total.messages_sent, (unsigned long long) run.total.cursor_sent,
		   (unsigned long long) run.total.heartbeats_sent, (unsigned long long) run.total.deliveries,
		   (unsigned long long) run.total.expected_deliveries);
	printf("received        ");
	counter_print(stdout, &run.received_types, ", ", " ");
	printf("\npresence events ");
	counter_print(stdout, &run.event_kinds, ", ", " ");
	printf("\nerrors          ");
	counter_print(stdout, &run.errors, ", ", " ");
	printf("\ncloses          by server: ");
	counter_print(stdout, &run.server_closes, ", ", " x");
	printf("; answers to our %llu closes: ", (unsigned long long) run.close_acked);
	counter_print(stdout, &run.close_acks, ", ", " x");
	if (run.close_problems.used)
	{
		printf("\n  close issues  ");
		counter_print(stdout, &run.close_problems, ", ", " x");
	}
	printf("\nanomalies       ");
	counter_print(stdout, &run.anomalies, ", ", " x");
	printf("; own cursor echoed %llu; pings answered %llu\n",
		   (unsigned long long) run.own_echoes, (unsigned long long) run.pings);
	if (run.n_server_pids > 0)
	{
		printf("server          pid");
		for (int i = 0; i < run.n_server_pids; i++)
			printf("%s%d", i ? "," : " ", (int) run.server_pids[i]);
		printf("; RSS %.0f KB before connecting, %.0f KB all connected: %.2f KB/connection\n",
			   rss_kb(&run.server_before_connect), rss_kb(&run.server_after_connect), rss_per_conn);
		printf("                CPU idle %.2f%%, under load %.1f%% of one core; "
			   "%.2f ms per 1,000 messages in, %.3f ms per 1,000 deliveries\n",
			   idle_cpu, server_cpu, ms_per_1k_msgs, ms_per_1k_deliveries);
	}
	else
		printf("server          not sampled (give --server-pid or --pg)\n");
	printf("generator       CPU %.1f%% of one core during the window, %.2f us per message "
		   "sent or received; longest loop pass %.2f ms, %llu passes longer than the %d us tick\n",
		   gen_cpu, gen_us_per_msg, run.longest_pass_us / 1000.0,
		   (unsigned long long) run.overrun_passes, run.opt.tick_us);

	printf("RESULT connections=%d sessions=%d rate_target=%.0f duration_s=%.1f "
		   "attempted=%d joined=%llu held=%d failed=%llu dropped=%llu "
		   "msgs_in_per_s=%.1f cursor_per_s=%.1f deliveries_per_s=%.1f delivery_ratio=%.4f "
		   "lat_p50_ms=%.3f lat_p95_ms=%.3f lat_p99_ms=%.3f lat_max_ms=%.3f lat_samples=%llu "
		   "server_rss_before_kb=%.0f server_rss_after_kb=%.0f rss_per_conn_kb=%.2f "
		   "server_cpu_pct=%.1f server_idle_cpu_pct=%.2f server_cpu_ms_per_1k_msgs=%.3f "
		   "server_cpu_ms_per_1k_deliveries=%.3f gen_cpu_pct=%.1f gen_longest_pass_ms=%.2f "
		   "errors=%llu mode=%s deflate_negotiated=%d lat_p999_ms=%.3f gen_us_per_msg=%.3f "
		   "recv_msgs_per_s=%.1f recv_wire_bytes_per_s=%.0f recv_bytes_per_s=%.0f "
		   "sent_wire_bytes_per_s=%.0f sent_bytes_per_s=%.0f activities_per_s=%.2f "
		   "activity_deliveries_per_s=%.1f rejoins_per_s=%.2f "
		   "lat_others_p99_ms=%.3f lat_large_p99_ms=%.3f messages_sent_total=%llu",
		   o->connections, o->sessions, o->rate, window_s,
		   run.opened, (unsigned long long) run.joined_ever, run.held,
		   (unsigned long long) run.failed, (unsigned long long) run.dropped,
		   msgs_per_s, cursor_per_s, deliveries_per_s, delivery_ratio,
		   p50, p95, p99, h->max / 1000.0, (unsigned long long) h->total,
		   rss_kb(&run.server_before_connect), rss_kb(&run.server_after_connect), rss_per_conn, server_cpu, idle_cpu, ms_per_1k_msgs, ms_per_1k_deliveries, gen_cpu,
		   run.longest_pass_us / 1000.0, (unsigned long long) counter_total(&run.errors),
		   o->deflate ? "deflate" : "plain", run.deflate_negotiated, p999, gen_us_per_msg,
		   per_second(w->recv_messages, window_s), per_second(w->recv_wire_bytes, window_s),
		   per_second(w->recv_bytes, window_s), per_second(w->sent_wire_bytes, window_s),
		   per_second(w->sent_bytes, window_s), per_second(w->activities_sent, window_s),
		   per_second(w->activity_deliveries, window_s), per_second(w->rejoins_done, window_s),
		   hist_percentile_ms(&run.window_latency_by_size[0], 99),
		   hist_percentile_ms(&run.window_latency_by_size[1], 99),
		   (unsigned long long) run.total.messages_sent);
	printf(" errors_by_code=");
	counter_print(stdout, &run.errors, ",", ":");
	printf(" closes_by_server=");
	counter_print(stdout, &run.server_closes, ",", ":");
	putchar('\n');
}


/* ---------------------------------------------------------------------
 * Start-up
 * ---------------------------------------------------------------------
 */

/* Print the usage text with the defaults. */
static void
usage(const Options *d)
{
	printf("Usage: loadgen [OPTION]...\n"
		   "Load generator for the presence WebSocket server: N connections in S sessions,\n"
		   "heartbeats plus cursor updates at a total rate, fan-out latency and server cost.\n\n"
		   "Target:\n"
		   "  --host HOST               server address (default %s)\n"
		   "  --port PORT               WebSocket port (default %d)\n"
		   "  --path PATH               upgrade path (default %s)\n"
		   "  --subprotocol NAME        offered subprotocol, '' for none (default %s)\n"
		   "  --jwt-secret SECRET       HS256 secret (default %s)\n"
		   "  --token-ttl SEC           token lifetime (default %d)\n"
		   "Load:\n"
		   "  --connections N           connections, one user each (default %d)\n"
		   "  --first-user K            users are K .. K+N-1, to split them over generators (default 0)\n"
		   "  --clock-origin UNIXSECS   time base of cursor positions, shared by generators whose\n"
		   "                            users see each other's updates (default: own start)\n"
		   "  --sessions S              sessions; user i joins bench-(i %% S) (default %d)\n"
		   "  --rate R                  cursor updates per second in total (default %.0f)\n"
		   "  --duration SEC            measured window (default %.0f)\n"
		   "  --warmup SEC              load before the window (default %.0f)\n"
		   "  --heartbeat-interval SEC  per connection; 0 = as the welcome says (default %.0f)\n"
		   "  --ramp-rate N             new connections per second (default %.0f)\n"
		   "  --connect-timeout SEC     connect to session_joined, per connection (default %.0f)\n"
		   "  --drain SEC               receive-only time after the window (default %.0f)\n"
		   "  --close-timeout SEC       wait for the server's close frames (default %.0f)\n"
		   "  --max-message BYTES       largest server message accepted (default %zu)\n"
		   "  --steps R:SEC,R:SEC,...   instead of --rate/--duration: cursor rate steps, one after\n"
		   "                            another on the same connections, reported per step\n"
		   "  --step-settle SEC         unmeasured time at the start of each later step (default %.0f)\n"
		   "  --source-addresses N      bind connections round-robin to 127.0.0.1 .. 127.0.0.N, so\n"
		   "                            the server's per-address bounds see N hosts (default: no bind)\n"
		   "Compression and message mix:\n"
		   "  --deflate                 offer permessage-deflate as Chromium does and compress every\n"
		   "                            message; inflate what the server compresses\n"
		   "  --mix                     add activities, large sessions and rejoins (defaults below)\n"
		   "  --activity-rate R         activity messages per second in total, each a few hundred\n"
		   "                            bytes; logged by the server (default 0, with --mix 10)\n"
		   "  --large-sessions L        sessions of %d users besides the others: users 0 .. 50L-1\n"
		   "                            (default 0, with --mix 2)\n"
		   "  --rejoin-rate R           leaves and rejoins per second in total, in large sessions when\n"
		   "                            there are any (default 0, with --mix 1)\n"
		   "Setup and server numbers:\n"
		   "  --pg CONNINFO             libpq conninfo of the presence database\n"
		   "  --no-setup                do not create users, sessions, participants\n"
		   "  --server-pid PID[,PID]    ws worker pid(s); default: found through --pg\n"
		   "  --idle-seconds SEC        server idle CPU sample before the load (default %.0f)\n"
		   "  --wait-ready SEC          wait this long for the worker and its port (default %.0f)\n"
		   "Output:\n"
		   "  --progress SEC            seconds between progress lines (default %.0f)\n"
		   "  --tick-us N               event-loop period in microseconds (default %d)\n"
		   "  --histogram FILE          CSV of the window's cursor latency histogram: bucket's\n"
		   "                            upper bound in us, deliveries in it\n"
		   "  --timeseries FILE         CSV, one line per second of the window: updates sent,\n"
		   "                            deliveries, latency, server CPU and RSS, generator CPU\n"
		   "  --steps-csv FILE          CSV of the per-step figures (with --steps)\n"
		   "  --help                    this text\n\n"
		   "Exit status: 0 if every connection joined and was held through the window,\n"
		   "2 if the run completed with failed or dropped connections, 1 on fatal errors\n"
		   "or when no connection was held.\n",
		   d->host, d->port, d->path, d->subprotocol, d->jwt_secret, d->token_ttl,
		   d->connections, d->sessions, d->rate, d->duration, d->warmup,
		   d->heartbeat_interval, d->ramp_rate, d->connect_timeout, d->drain,
		   d->close_timeout, d->max_message, d->step_settle, LARGE_SESSION_USERS,
		   d->idle_seconds, d->wait_ready, d->progress, d->tick_us);
}

/* Parse a number option, exiting on nonsense or values below min. */
static double
parse_number(const char *name, const char *text, double min)
{
	char	   *end;
	double		v = strtod(text, &end);

	if (end == text || *end != '\0' || !(v >= min))
		fatal("--%s must be a number >= %g, not '%s'", name, min, text);
	return v;
}

/*
 * Parse --steps RATE:SECONDS,... into run.steps; without it, one step of
 * --rate for --duration.
 */
static void
parse_steps(const char *spec)
{
	const char *p = spec;

	run.steps = xrealloc(NULL, sizeof(Step) * MAX_STEPS);
	memset(run.steps, 0, sizeof(Step) * MAX_STEPS);
	run.step_running = run.step_measuring = -1;
	if (spec == NULL)
	{
		run.steps[0].rate = run.opt.rate;
		run.steps[0].seconds = run.opt.duration;
		run.n_steps = 1;
		return;
	}
	while (*p)
	{
		char	   *end;
		double		rate = strtod(p, &end),
					seconds;

		if (end == p || *end != ':' || !(rate >= 0))
			fatal("bad --steps '%s': want RATE:SECONDS,RATE:SECONDS,...", spec);
		p = end + 1;
		seconds = strtod(p, &end);
		if (end == p || (*end != ',' && *end != '\0') || !(seconds >= 0.1))
			fatal("bad --steps '%s': want RATE:SECONDS,... with SECONDS >= 0.1", spec);
		if (run.n_steps == MAX_STEPS)
			fatal("--steps: at most %d steps", MAX_STEPS);
		run.steps[run.n_steps].rate = rate;
		run.steps[run.n_steps++].seconds = seconds;
		p = *end == ',' ? end + 1 : end;
	}
	if (run.n_steps == 0)
		fatal("--steps: no steps");
	run.opt.rate = run.steps[0].rate;	/* for the report's RESULT rate_target */
}

/* Fill run.opt from the command line. */
static void
parse_options(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"host", required_argument, NULL, 'H'},
		{"port", required_argument, NULL, 'p'},
		{"path", required_argument, NULL, 'P'},
		{"subprotocol", required_argument, NULL, 'S'},
		{"connections", required_argument, NULL, 'c'},
		{"first-user", required_argument, NULL, 'F'},
		{"clock-origin", required_argument, NULL, 'O'},
		{"sessions", required_argument, NULL, 's'},
		{"rate", required_argument, NULL, 'r'},
		{"duration", required_argument, NULL, 'd'},
		{"warmup", required_argument, NULL, 'w'},
		{"heartbeat-interval", required_argument, NULL, 'b'},
		{"ramp-rate", required_argument, NULL, 'R'},
		{"connect-timeout", required_argument, NULL, 't'},
		{"drain", required_argument, NULL, 'D'},
		{"close-timeout", required_argument, NULL, 'C'},
		{"max-message", required_argument, NULL, 'm'},
		{"jwt-secret", required_argument, NULL, 'j'},
		{"token-ttl", required_argument, NULL, 'T'},
		{"pg", required_argument, NULL, 'g'},
		{"no-setup", no_argument, NULL, 'n'},
		{"server-pid", required_argument, NULL, 'i'},
		{"idle-seconds", required_argument, NULL, 'I'},
		{"wait-ready", required_argument, NULL, 'W'},
		{"progress", required_argument, NULL, 'o'},
		{"tick-us", required_argument, NULL, 'k'},
		{"deflate", no_argument, NULL, 'z'},
		{"mix", no_argument, NULL, 'x'},
		{"activity-rate", required_argument, NULL, 'a'},
		{"large-sessions", required_argument, NULL, 'L'},
		{"rejoin-rate", required_argument, NULL, 'J'},
		{"timeseries", required_argument, NULL, 'Y'},
		{"histogram", required_argument, NULL, 'G'},
		{"steps", required_argument, NULL, 'E'},
		{"steps-csv", required_argument, NULL, 'Q'},
		{"step-settle", required_argument, NULL, 'q'},
		{"source-addresses", required_argument, NULL, 'A'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}
	};
	static const Options defaults = {
		.host = "127.0.0.1", .port = 8765, .path = "/ws", .subprotocol = "presence.v1",
		.connections = 100, .sessions = 10, .rate = 100, .duration = 30, .warmup = 5,
		.heartbeat_interval = 0, .ramp_rate = 2000, .connect_timeout = 15,
		.idle_seconds = 3, .drain = 2, .close_timeout = 5, .progress = 5, .tick_us = 1000, .wait_ready = 20,
		.jwt_secret = "test-secret-0123456789abcdef0123456789", .token_ttl = 3600,
		.setup = true, .max_message = 16 * 1024 * 1024,
		.activity_rate = -1, .large_sessions = -1, .rejoin_rate = -1, .step_settle = 1,
	};
	Options    *o = &run.opt;
	int			opt;

	*o = defaults;
	while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1)
	{
		const char *name = "";

		for (const struct option *lo = longopts; lo->name; lo++)
			if (lo->val == opt)
				name = lo->name;
		switch (opt)
		{
			case 'H':
				o->host = optarg;
				break;
			case 'p':
				o->port = (int) parse_number(name, optarg, 1);
				break;
			case 'P':
				o->path = optarg;
				break;
			case 'S':
				o->subprotocol = optarg;
				break;
			case 'c':
				o->connections = (int) parse_number(name, optarg, 1);
				break;
			case 'F':
				o->first_user = (int) parse_number(name, optarg, 0);
				break;
			case 'O':
				o->clock_origin = (long) parse_number(name, optarg, 0);
				break;
			case 's':
				o->sessions = (int) parse_number(name, optarg, 1);
				break;
			case 'r':
				o->rate = parse_number(name, optarg, 0);
				break;
			case 'd':
				o->duration = parse_number(name, optarg, 0.1);
				break;
			case 'w':
				o->warmup = parse_number(name, optarg, 0);
				break;
			case 'b':
				o->heartbeat_interval = parse_number(name, optarg, 0);
				break;
			case 'R':
				o->ramp_rate = parse_number(name, optarg, 1);
				break;
			case 't':
				o->connect_timeout = parse_number(name, optarg, 0.1);
				break;
			case 'D':
				o->drain = parse_number(name, optarg, 0);
				break;
			case 'C':
				o->close_timeout = parse_number(name, optarg, 0.1);
				break;
			case 'm':
				o->max_message = (size_t) parse_number(name, optarg, 1024);
				break;
			case 'j':
				o->jwt_secret = optarg;
				break;
			case 'T':
				o->token_ttl = (int) parse_number(name, optarg, 1);
				break;
			case 'g':
				o->pg_conninfo = optarg;
				break;
			case 'n':
				o->setup = false;
				break;
			case 'i':
				o->server_pids = optarg;
				break;
			case 'I':
				o->idle_seconds = parse_number(name, optarg, 0);
				break;
			case 'W':
				o->wait_ready = parse_number(name, optarg, 0);
				break;
			case 'o':
				o->progress = parse_number(name, optarg, 0.1);
				break;
			case 'k':
				o->tick_us = (int) parse_number(name, optarg, 1);
				break;
			case 'z':
				o->deflate = true;
				break;
			case 'x':
				o->mix = true;
				break;
			case 'a':
				o->activity_rate = parse_number(name, optarg, 0);
				break;
			case 'L':
				o->large_sessions = (int) parse_number(name, optarg, 0);
				break;
			case 'J':
				o->rejoin_rate = parse_number(name, optarg, 0);
				break;
			case 'Y':
				o->timeseries_path = optarg;
				break;
			case 'G':
				o->histogram_path = optarg;
				break;
			case 'E':
				o->steps_spec = optarg;
				break;
			case 'Q':
				o->steps_csv_path = optarg;
				break;
			case 'q':
				o->step_settle = parse_number(name, optarg, 0);
				break;
			case 'A':
				o->source_addresses = (int) parse_number(name, optarg, 1);
				if (o->source_addresses > 16777214)
					fatal("--source-addresses: 127.0.0.0/8 holds at most 16777214");
				break;
			case 'h':
				usage(&defaults);
				exit(0);
			default:
				fprintf(stderr, "Try 'loadgen --help'.\n");
				exit(1);
		}
	}
	if (optind < argc)
		fatal("unexpected argument '%s'", argv[optind]);
	/* --mix gives the parts of the mix that were not given their own values */
	if (o->activity_rate < 0)
		o->activity_rate = o->mix ? 10 : 0;
	if (o->large_sessions < 0)
		o->large_sessions = o->mix ? 2 : 0;
	if (o->rejoin_rate < 0)
		o->rejoin_rate = o->mix ? 1 : 0;
	if (o->first_user == 0 &&
		o->connections - o->large_sessions * LARGE_SESSION_USERS < o->sessions)
		fatal("%d connections cannot fill %d large sessions of %d users and still give one "
			  "user to each of %d sessions", o->connections, o->large_sessions,
			  LARGE_SESSION_USERS, o->sessions);
	parse_steps(o->steps_spec);
	if (o->steps_csv_path && o->steps_spec == NULL)
		fatal("--steps-csv needs --steps");
	if (o->sessions > o->connections)
		fatal("--sessions (%d) cannot exceed --connections (%d)", o->sessions, o->connections);
	if (o->rate > 0 && o->connections == o->sessions + o->large_sessions * LARGE_SESSION_USERS)
		fprintf(stderr, "loadgen: warning: one user per session: nobody receives cursor updates\n");
}

/* Resolve --host/--port into run.server_addr. */
static void
resolve_server(void)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
	struct addrinfo *res;
	char		port[16];
	int			rc;

	snprintf(port, sizeof(port), "%d", run.opt.port);
	if ((rc = getaddrinfo(run.opt.host, port, &hints, &res)) != 0)
		fatal("cannot resolve %s: %s", run.opt.host, gai_strerror(rc));
	memcpy(&run.server_addr, res->ai_addr, res->ai_addrlen);
	run.server_addr_len = res->ai_addrlen;
	freeaddrinfo(res);
	if (run.opt.source_addresses > 0 &&
		(run.server_addr.ss_family != AF_INET ||
		 (ntohl(((struct sockaddr_in *) &run.server_addr)->sin_addr.s_addr) >> 24) != 127))
		fatal("--source-addresses binds to 127.0.0.x: --host must be an IPv4 loopback address");
}

/* Wait until the WebSocket port accepts TCP connections. */
static void
wait_for_port(void)
{
	int64_t		give_up = now_us() + (int64_t) (run.opt.wait_ready * 1e6);

	for (;;)
	{
		int			fd = socket(run.server_addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		int			rc = connect(fd, (struct sockaddr *) &run.server_addr, run.server_addr_len);
		int			err = errno;

		close(fd);
		if (rc == 0)
			return;
		if (now_us() >= give_up)
			fatal("%s:%d does not accept connections: %s", run.opt.host, run.opt.port, strerror(err));
		usleep(100000);
	}
}

/* Raise the open-files limit to the hard limit; warn if still too low. */
static void
raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
	{
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
		if (rl.rlim_cur < (rlim_t) run.opt.connections + 32)
			fprintf(stderr, "loadgen: warning: open files limited to %llu, "
					"not enough for %d connections\n",
					(unsigned long long) rl.rlim_cur, run.opt.connections);
	}
}

/* SIGINT/SIGTERM: finish early but still close cleanly and report. */
static void
handle_stop_signal(int signo)
{
	if (run.stop_requested)
		_exit(128 + signo);
	run.stop_requested = 1;
}

/* Allocate the connections and derive each one's user and session. */
static void
init_connections(void)
{
	static const char jwt_header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
	uint64_t	seed;

	if (getrandom(&seed, sizeof(seed), 0) != sizeof(seed))
		seed = (uint64_t) time(NULL) ^ ((uint64_t) getpid() << 32);
	run.prng_state = seed | 1;
	base64_encode((const uint8_t *) jwt_header, sizeof(jwt_header) - 1, run.jwt_header_b64, true);

	run.conns = xrealloc(NULL, sizeof(Conn) * run.opt.connections);
	memset(run.conns, 0, sizeof(Conn) * run.opt.connections);
	run.n_sessions = run.opt.sessions + run.opt.large_sessions;
	run.session_joined = xrealloc(NULL, sizeof(int) * run.n_sessions);
	memset(run.session_joined, 0, sizeof(int) * run.n_sessions);
	for (int i = 0; i < run.opt.connections; i++)
	{
		Conn	   *c = &run.conns[i];
		int			user = i + run.opt.first_user;

		c->index = i;
		c->fd = -1;
		/* the first 50 L users fill the large sessions, the rest go round the others */
		if (user < run.opt.large_sessions * LARGE_SESSION_USERS)
		{
			c->session = run.opt.sessions + user / LARGE_SESSION_USERS;
			snprintf(c->session_id, sizeof(c->session_id), LARGE_SESSION_FORMAT,
					 user / LARGE_SESSION_USERS);
		}
		else
		{
			c->session = user % run.opt.sessions;
			snprintf(c->session_id, sizeof(c->session_id), SESSION_FORMAT, c->session);
		}
		snprintf(c->user_id, sizeof(c->user_id), USER_ID_FORMAT, (unsigned) user);
	}
	run.state_count[CONN_IDLE] = run.opt.connections;
	if (run.opt.heartbeat_interval > 0)
		run.heartbeat_interval_us = (int64_t) (run.opt.heartbeat_interval * 1e6);
	run.epfd = epoll_create1(EPOLL_CLOEXEC);
	if (run.epfd < 0)
		fatal("epoll_create1: %s", strerror(errno));
}

/* Sample the server at rest before any connection: idle CPU and base RSS. */
static void
sample_idle_server(void)
{
	if (run.n_server_pids == 0)
		return;
	check_server_fd_limit();
	run.server_idle_start = server_usage();
	usleep((useconds_t) (run.opt.idle_seconds * 1e6));
	run.server_before_connect = server_usage();
	printf("server idle: %.2f%% CPU over %.1f s, RSS %.0f KB\n",
		   cpu_percent(&run.server_idle_start, &run.server_before_connect),
		   run.opt.idle_seconds, rss_kb(&run.server_before_connect));
}

/*
 * Set up, sample the idle server, run the load and report.  Exits 0 when
 * every connection was held through the window, 2 when some were not.
 */
int
main(int argc, char **argv)
{
	struct sigaction sa = {.sa_handler = handle_stop_signal};

	clock_gettime(CLOCK_MONOTONIC, &clock_origin);
	sync_realtime_origin();
	setvbuf(stdout, NULL, _IOLBF, 0);
	parse_options(argc, argv);
	if (run.opt.clock_origin > 0)
	{
		/* move the origin back to that realtime instant, so positions agree across generators */
		struct timespec real;
		int64_t		back_us;

		clock_gettime(CLOCK_REALTIME, &real);
		back_us = ((int64_t) real.tv_sec - run.opt.clock_origin) * 1000000 + real.tv_nsec / 1000;
		clock_origin.tv_sec -= back_us / 1000000;
		clock_origin.tv_nsec -= (back_us % 1000000) * 1000;
		while (clock_origin.tv_nsec < 0)
		{
			clock_origin.tv_nsec += 1000000000;
			clock_origin.tv_sec--;
		}
	}
	sync_realtime_origin();
	raise_fd_limit();
	signal(SIGPIPE, SIG_IGN);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	run.self_pid = getpid();
	if (run.opt.timeseries_path)
	{
		if ((run.ts.file = fopen(run.opt.timeseries_path, "w")) == NULL)
			fatal("cannot write %s: %s", run.opt.timeseries_path, strerror(errno));
		fputs("second,cursor_sent,deliveries,p50_ms,p99_ms,p999_ms,max_ms,"
			  "server_cpu_pct,server_rss_kb,gen_cpu_pct,offered_rate\n", run.ts.file);
	}

	resolve_server();
	prepare_database();
	wait_for_port();
	init_connections();
	sample_idle_server();
	run_load();
	print_report();
	if (run.opt.histogram_path)
		hist_write_csv(&run.window_latency, run.opt.histogram_path);
	if (run.ts.file)
		fclose(run.ts.file);

	if (run.held == 0)
		return 1;
	return run.held == run.opt.connections && run.dropped == 0 ? 0 : 2;
}
