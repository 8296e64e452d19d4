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
# p99, deliveries/s, Redis round trips per client message (EVALSHA calls
# counted by Redis over the messages the generator sent, heartbeats
# included), server CPU per 1,000 messages, and redis-server's CPU per
# client message (its used_cpu_user + used_cpu_sys).  The two cores are shared with the load generator, so more
# workers show up as CPU per message, not as speed.
#
#   CONNECTIONS SESSIONS RATE DURATION WARMUP   the load (10000, 1000, 5000, 20, 5)
#   PGBIN                                       PostgreSQL's bin directory (as test/cluster.sh)
#   PGPORT_BASE WSPORT_BASE REDIS_PORT          ports: set-up k uses PGPORT_BASE+k and
#                                               WSPORT_BASE+k (23500, 23510, 26390)
#   DEFLATE=1 MIX=1 ACTIVITY_RATE LARGE_SESSIONS REJOIN_RATE STEPS SOURCE_ADDRESSES
#                                               as for run-fanout.sh (SOURCE_ADDRESSES default 64;
#                                               0 = all from 127.0.0.1, per-address bound raised)
#   SETUPS                                      which set-ups, in order (default: all four,
#                                               "embedded redis-1w redis-2w two-nodes")
#   TIMESERIES=PREFIX  STEPS_CSV=PREFIX         per set-up files PREFIX-SETUP.csv
#   HISTOGRAM=PREFIX                            (loadgen --timeseries, --steps-csv, --histogram)
#                                               (two-nodes writes PREFIX-two-nodes-p/-s.csv)
#
# Extra arguments go to every loadgen.
set -euo pipefail

bench_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root_dir=$(dirname "$bench_dir")
cluster="$root_dir/test/cluster.sh"
CONNECTIONS=${CONNECTIONS:-10000}
SESSIONS=${SESSIONS:-1000}
RATE=${RATE:-5000}
DURATION=${DURATION:-20}
WARMUP=${WARMUP:-5}
PGPORT_BASE=${PGPORT_BASE:-23500}
WSPORT_BASE=${WSPORT_BASE:-23510}
SOURCE_ADDRESSES=${SOURCE_ADDRESSES:-64}
SETUPS=${SETUPS:-embedded redis-1w redis-2w two-nodes}
wanted() { [[ " $SETUPS " == *" $1 "* ]]; }
pgbin=${PGBIN:-$(pg_config --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)}
[ -x "$pgbin/initdb" ] || pgbin=/usr/lib/postgresql/15/bin

# loadgen options from the environment, for every generator
# shellcheck source=bench/loadgen-options.sh
. "$bench_dir/loadgen-options.sh"
[ "$SOURCE_ADDRESSES" -gt 0 ] && loadgen_env+=(--source-addresses "$SOURCE_ADDRESSES")
# the per-address handshake bound stays at its default unless all clients share 127.0.0.1
address_gucs=()
[ "$SOURCE_ADDRESSES" -gt 0 ] || address_gucs+=(presence.max_unauthenticated_per_address=1024)
large_sessions=${LARGE_SESSIONS:-$([ "${MIX:-0}" = 1 ] && echo 2 || echo 0)}
extra_args=("$@")

make -s -C "$bench_dir" loadgen
ulimit -n "$(ulimit -Hn)"
work=$(mktemp -d /tmp/presence-scaleout.XXXXXX)
chmod 755 "$work"
redis_port=${REDIS_PORT:-26390}
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
# seconds of CPU redis-server has used, user plus system
redis_cpu_s() {
	redis-cli -p $redis_port info cpu | tr -d '\r' | awk -F: '$1 == "used_cpu_sys" || $1 == "used_cpu_user" { s += $2 } END { print s + 0 }'
}

# node DIR PGPORT WSPORT GUC...: a fresh node, workers ready
node() {
	local dir=$1 pgport=$2 wsport=$3
	shift 3
	# the generators' clients come from SOURCE_ADDRESSES addresses (see run-fanout.sh)
	"$cluster" start "$dir" "$pgport" "$wsport" presence.max_connections=20000 \
		"${address_gucs[@]}" "$@" >/dev/null
}

# load DIR WSPORT CONNECTIONS FIRST RATE NAME [extra]: one generator, prints its RESULT line
load() {
	local dir=$1 wsport=$2 conns=$3 first=$4 rate=$5 name=$6
	local files=()
	shift 6
	[ -n "${TIMESERIES:-}" ] && files+=(--timeseries "$TIMESERIES-$name.csv")
	[ -n "${HISTOGRAM:-}" ] && files+=(--histogram "$HISTOGRAM-$name.csv")
	[ -n "${STEPS_CSV:-}" ] && [ -n "${STEPS:-}" ] && files+=(--steps-csv "$STEPS_CSV-$name.csv")
	"$bench_dir/loadgen" --port "$wsport" --connections "$conns" --first-user "$first" \
		--sessions "$SESSIONS" --rate "$rate" --duration "$DURATION" --warmup "$WARMUP" \
		--pg "host=$dir port=$(sed -n 's/^port = //p' "$dir/data/postgresql.auto.conf.presence") dbname=presence user=postgres" \
		--progress 1000 "${loadgen_env[@]}" "${files[@]}" "$@" "${extra_args[@]}" | grep '^RESULT'
}

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }

printf '%-11s %-7s %8s %8s %8s %8s %8s %12s %14s %16s %15s\n' setup mode p50_ms p95_ms p99_ms p999_ms max_ms \
	deliveries/s redis_rt/msg cpu_ms/1k_msgs redis_us/msg
report() {
	local name=$1 result=$2 round_trips=$3 redis_us=${4:--}
	printf '%-11s %-7s %8s %8s %8s %8s %8s %12s %14s %16s %15s\n' "$name" "$(field mode "$result")" \
		"$(field lat_p50_ms "$result")" "$(field lat_p95_ms "$result")" "$(field lat_p99_ms "$result")" \
		"$(field lat_p999_ms "$result")" "$(field lat_max_ms "$result")" \
		"$(field deliveries_per_s "$result")" "$round_trips" \
		"$(field server_cpu_ms_per_1k_msgs "$result")" "$redis_us"
}

# 1. embedded
if wanted embedded; then
	node "$work/embedded" $((PGPORT_BASE + 1)) $((WSPORT_BASE + 1))
	report embedded "$(load "$work/embedded" $((WSPORT_BASE + 1)) "$CONNECTIONS" 0 "$RATE" embedded)" "-"
	"$cluster" destroy "$work/embedded"
fi
wanted redis-1w || wanted redis-2w || wanted two-nodes || exit 0

start_redis
redis_url="presence.redis_url=redis://127.0.0.1:$redis_port"
for workers in 1 2; do
	wanted "redis-${workers}w" || continue
	dir="$work/redis-${workers}w"
	node "$dir" $((PGPORT_BASE + 2)) $((WSPORT_BASE + 2)) "$redis_url" "presence.workers=$workers"
	before=$(evalsha_calls)
	cpu_before=$(redis_cpu_s)
	result=$(load "$dir" $((WSPORT_BASE + 2)) "$CONNECTIONS" 0 "$RATE" "redis-${workers}w")
	after=$(evalsha_calls)
	cpu_after=$(redis_cpu_s)
	# every message the generator sent (cursor updates and heartbeats), ramp included
	sent=$(field messages_sent_total "$result")
	report "redis-${workers}w" "$result" "$(awk -v c=$((after - before)) -v s="$sent" 'BEGIN { printf "%.2f", c / s }')" \
		"$(awk -v a="$cpu_after" -v b="$cpu_before" -v s="$sent" 'BEGIN { printf "%.2f", 1e6 * (a - b) / s }')"
	"$cluster" destroy "$dir"
	redis-cli -p $redis_port flushall >/dev/null
done

# 4. a primary and its standby, clients split
wanted two-nodes || exit 0
primary="$work/primary" standby="$work/standby"
primary_pgport=$((PGPORT_BASE + 3)) standby_pgport=$((PGPORT_BASE + 4))
primary_wsport=$((WSPORT_BASE + 3)) standby_wsport=$((WSPORT_BASE + 4))
node "$primary" $primary_pgport $primary_wsport "$redis_url"
mkdir -p "$standby"
chown postgres: "$standby"
setpriv --reuid=postgres --regid=postgres --init-groups -- "$pgbin/pg_basebackup" \
	-h 127.0.0.1 -p $primary_pgport -U postgres -D "$standby/data" -R -c fast -X stream
printf "port = %d\nunix_socket_directories = '%s'\n" $standby_pgport "$standby" >> "$standby/data/postgresql.conf"
echo "port = $standby_pgport" > "$standby/data/postgresql.auto.conf.presence"
chown postgres: "$standby/data/postgresql.conf" "$standby/data/postgresql.auto.conf.presence"
node "$standby" $standby_pgport $standby_wsport presence.port=$standby_wsport
half=$((CONNECTIONS / 2))
# users and sessions exist on the primary before either generator starts
# (the same users, sessions and participants as loadgen's own setup)
"$cluster" psql "$primary" -XqAt -v ON_ERROR_STOP=1 >/dev/null <<SQL
INSERT INTO presence.users (id, username)
SELECT format('6c6f6164-0000-4000-8000-%s', lpad(to_hex(i), 12, '0'))::uuid, 'bench-user-' || i
  FROM generate_series(0, $CONNECTIONS - 1) AS i ON CONFLICT DO NOTHING;
SELECT count(presence.create_session(format('6c6f6164-0000-4000-8000-%s', lpad(to_hex(s), 12, '0'))::uuid,
                                     NULL, '{}', NULL, NULL, 'bench-' || s))
  FROM generate_series(0, $SESSIONS - 1) AS s;
SELECT count(presence.create_session(format('6c6f6164-0000-4000-8000-%s', lpad(to_hex(k * 50), 12, '0'))::uuid,
                                     NULL, '{}', NULL, NULL, 'bench-large-' || k))
  FROM generate_series(0, $large_sessions - 1) AS k;
SELECT count(presence.add_participant(
         CASE WHEN i < $large_sessions * 50 THEN 'bench-large-' || (i / 50) ELSE 'bench-' || (i % $SESSIONS) END,
         format('6c6f6164-0000-4000-8000-%s', lpad(to_hex(i), 12, '0'))::uuid, 'operator'))
  FROM generate_series(0, $CONNECTIONS - 1) AS i;
SQL
sleep 2
before=$(evalsha_calls)
# one time base for both generators: each times the other's updates too
origin=$(date +%s)
# each generator offers half of every rate (cursor steps, activities, rejoins)
half_rates=()
if [ -n "${STEPS:-}" ]; then
	half_rates+=(--steps "$(tr ',' '\n' <<<"$STEPS" | awk -F: '{ printf "%s%g:%s", (NR > 1 ? "," : ""), $1 / 2, $2 }')")
fi
mix_default() { [ "${MIX:-0}" = 1 ] && echo "$1" || echo 0; }
half_rates+=(--activity-rate "$(awk -v r="${ACTIVITY_RATE:-$(mix_default 10)}" 'BEGIN { print r / 2 }')")
half_rates+=(--rejoin-rate "$(awk -v r="${REJOIN_RATE:-$(mix_default 1)}" 'BEGIN { print r / 2 }')")
load "$primary" $primary_wsport "$half" 0 $((RATE / 2)) two-nodes-p --no-setup --clock-origin "$origin" \
	"${half_rates[@]}" > "$work/primary.result" &
primary_load=$!
load "$standby" $standby_wsport "$half" "$half" $((RATE / 2)) two-nodes-s --no-setup --clock-origin "$origin" \
	"${half_rates[@]}" > "$work/standby.result"
wait $primary_load
after=$(evalsha_calls)
sent=$(awk -v r="$RATE" -v d="$DURATION" -v w="$WARMUP" 'BEGIN { printf "%d", r * (d + w) }')
report two-nodes/p "$(cat "$work/primary.result")" "$(awk -v c=$((after - before)) -v s="$sent" 'BEGIN { printf "%.2f", c / s }')"
report two-nodes/s "$(cat "$work/standby.result")" "(same run)"
