#!/usr/bin/env bash
# bench/run-scaleout.sh: fan-out in four set-ups, side by side, in one run.
#
#   1. embedded      one node, no Redis, 1 ws worker
#   2. redis-1w      one node through Redis, 1 ws worker
#   3. redis-2w      one node through Redis, 2 ws workers
#   4. two-nodes     a primary and its hot standby through Redis, 1 worker
#                    each, half of the clients on each node (so every
#                    session spans both nodes)
#
# Each runs the fan-out load (bench/loadgen) and prints fan-out p50/p95/
# p99, deliveries/s, Redis round trips per presence update (EVALSHA calls
# counted by Redis over cursor updates sent) and server CPU per 1,000
# messages.  The two cores are shared with the load generator, so more
# workers show up as CPU per message, not as speed.
#
#   CONNECTIONS SESSIONS RATE DURATION WARMUP   the load (10000, 1000, 5000, 20, 5)
set -euo pipefail

bench_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root_dir=$(dirname "$bench_dir")
cluster="$root_dir/test/cluster.sh"
CONNECTIONS=${CONNECTIONS:-10000}
SESSIONS=${SESSIONS:-1000}
RATE=${RATE:-5000}
DURATION=${DURATION:-20}
WARMUP=${WARMUP:-5}

make -s -C "$bench_dir" loadgen
ulimit -n "$(ulimit -Hn)"
work=$(mktemp -d /tmp/presence-scaleout.XXXXXX)
chmod 755 "$work"
redis_port=26390
redis_pid=
cleanup() {
	for d in "$work"/*/; do [ -d "$d/data" ] && "$cluster" destroy "$d" >/dev/null 2>&1; done
	[ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT

start_redis() {
	redis-server --port $redis_port --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
	redis_pid=$!
	until redis-cli -p $redis_port ping >/dev/null 2>&1; do sleep 0.1; done
}
evalsha_calls() {
	redis-cli -p $redis_port info commandstats | sed -n 's/^cmdstat_evalsha:calls=\([0-9]*\).*/\1/p' | grep . || echo 0
}

# node DIR PGPORT WSPORT GUC...: a fresh node, workers ready
node() {
	local dir=$1 pgport=$2 wsport=$3
	shift 3
	# the generators' clients all come from 127.0.0.1 (see run-fanout.sh)
	"$cluster" start "$dir" "$pgport" "$wsport" presence.max_connections=20000 \
		presence.max_unauthenticated_per_address=1024 "$@" >/dev/null
}

# load PGPORT WSPORT CONNECTIONS FIRST RATE [extra]: one generator, prints its RESULT line
load() {
	local dir=$1 wsport=$2 conns=$3 first=$4 rate=$5
	shift 5
	"$bench_dir/loadgen" --port "$wsport" --connections "$conns" --first-user "$first" \
		--sessions "$SESSIONS" --rate "$rate" --duration "$DURATION" --warmup "$WARMUP" \
		--pg "host=$dir port=$(sed -n 's/^port = //p' "$dir/data/postgresql.auto.conf.presence") dbname=presence user=postgres" \
		--progress 1000 "$@" | grep '^RESULT'
}

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }

printf '%-11s %8s %8s %8s %8s %12s %14s %16s\n' setup p50_ms p95_ms p99_ms max_ms deliveries/s redis_rt/update cpu_ms/1k_msgs
report() {
	local name=$1 result=$2 round_trips=$3
	printf '%-11s %8s %8s %8s %8s %12s %14s %16s\n' "$name" \
		"$(field lat_p50_ms "$result")" "$(field lat_p95_ms "$result")" "$(field lat_p99_ms "$result")" \
		"$(field lat_max_ms "$result")" "$(field deliveries_per_s "$result")" "$round_trips" \
		"$(field server_cpu_ms_per_1k_msgs "$result")"
}

# 1. embedded
node "$work/embedded" 23501 23511
report embedded "$(load "$work/embedded" 23511 "$CONNECTIONS" 0 "$RATE")" "-"
"$cluster" destroy "$work/embedded"

start_redis
redis_url="presence.redis_url=redis://127.0.0.1:$redis_port"
for workers in 1 2; do
	dir="$work/redis-${workers}w"
	node "$dir" 23502 23512 "$redis_url" "presence.workers=$workers"
	before=$(evalsha_calls)
	result=$(load "$dir" 23512 "$CONNECTIONS" 0 "$RATE")
	after=$(evalsha_calls)
	sent=$(awk -v r="$(field cursor_per_s "$result")" -v d="$DURATION" -v w="$WARMUP" 'BEGIN { printf "%d", r * (d + w) }')
	report "redis-${workers}w" "$result" "$(awk -v c=$((after - before)) -v s="$sent" 'BEGIN { printf "%.2f", c / s }')"
	"$cluster" destroy "$dir"
	redis-cli -p $redis_port flushall >/dev/null
done

# 4. a primary and its standby, clients split
primary="$work/primary" standby="$work/standby"
node "$primary" 23503 23513 "$redis_url"
mkdir -p "$standby"
chown postgres: "$standby"
setpriv --reuid=postgres --regid=postgres --init-groups -- /usr/lib/postgresql/15/bin/pg_basebackup \
	-h 127.0.0.1 -p 23503 -U postgres -D "$standby/data" -R -c fast -X stream
printf "port = 23504\nunix_socket_directories = '%s'\n" "$standby" >> "$standby/data/postgresql.conf"
echo "port = 23504" > "$standby/data/postgresql.auto.conf.presence"
chown postgres: "$standby/data/postgresql.conf" "$standby/data/postgresql.auto.conf.presence"
node "$standby" 23504 23514 presence.port=23514
half=$((CONNECTIONS / 2))
# users and sessions exist on the primary before either generator starts
"$cluster" psql "$primary" -XqAt -v ON_ERROR_STOP=1 >/dev/null <<SQL
INSERT INTO presence.users (id, username)
SELECT format('6c6f6164-0000-4000-8000-%s', lpad(to_hex(i), 12, '0'))::uuid, 'bench-user-' || i
  FROM generate_series(0, $CONNECTIONS - 1) AS i ON CONFLICT DO NOTHING;
SELECT count(presence.create_session(format('6c6f6164-0000-4000-8000-%s', lpad(to_hex(s), 12, '0'))::uuid,
                                     NULL, '{}', NULL, NULL, 'bench-' || s))
  FROM generate_series(0, $SESSIONS - 1) AS s;
SELECT count(presence.add_participant('bench-' || (i % $SESSIONS),
                                      format('6c6f6164-0000-4000-8000-%s', lpad(to_hex(i), 12, '0'))::uuid, 'operator'))
  FROM generate_series(0, $CONNECTIONS - 1) AS i;
SQL
sleep 2
before=$(evalsha_calls)
# one time base for both generators: each times the other's updates too
origin=$(date +%s)
load "$primary" 23513 "$half" 0 $((RATE / 2)) --no-setup --clock-origin "$origin" > "$work/primary.result" &
primary_load=$!
load "$standby" 23514 "$half" "$half" $((RATE / 2)) --no-setup --clock-origin "$origin" > "$work/standby.result"
wait $primary_load
after=$(evalsha_calls)
sent=$(awk -v r="$RATE" -v d="$DURATION" -v w="$WARMUP" 'BEGIN { printf "%d", r * (d + w) }')
report two-nodes/p "$(cat "$work/primary.result")" "$(awk -v c=$((after - before)) -v s="$sent" 'BEGIN { printf "%.2f", c / s }')"
report two-nodes/s "$(cat "$work/standby.result")" "(same run)"
