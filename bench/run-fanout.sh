#!/usr/bin/env bash
# bench/run-fanout.sh: the fan-out benchmark on a throwaway cluster.
#
# Builds bench/loadgen, starts a fresh PostgreSQL cluster with presence
# preloaded (test/cluster.sh), runs the target load (by default 10,000
# connections = 1,000 sessions x 10 users, 5,000 cursor updates/s, 30 s
# measured), prints the generator's report and destroys the cluster.
#
#   bench/run-fanout.sh [LOADGEN OPTIONS...]
#
# Environment (all optional):
#   CONNECTIONS SESSIONS RATE DURATION WARMUP   the load (defaults above, warmup 5 s)
#   PGPORT WSPORT                               ports of the cluster (25460, 18760)
#   PGBIN                                       PostgreSQL's bin directory (as test/cluster.sh;
#                                               default: pg_config --bindir)
#   PRESENCE_GUCS                               extra GUC=VALUE settings, space-separated
#   KEEP_CLUSTER=1                              leave the cluster running (prints its directory)
#   DEFLATE=1                                   loadgen --deflate: permessage-deflate as Chromium
#   MIX=1                                       loadgen --mix: activities, 50-user sessions, rejoins
#   ACTIVITY_RATE LARGE_SESSIONS REJOIN_RATE    the parts of the mix (loadgen's defaults)
#   TIMESERIES=FILE                             loadgen --timeseries FILE: one CSV line a second
#   HISTOGRAM=FILE                              loadgen --histogram FILE: the window's latency histogram
#   STEPS=RATE:SEC,...  STEPS_CSV=FILE          loadgen --steps (replaces RATE and DURATION)
#   SOURCE_ADDRESSES=N                          loadgen --source-addresses N (default 64; 0 = all
#                                               from 127.0.0.1)
#
# Extra arguments go to loadgen and override the defaults, e.g.
# "bench/run-fanout.sh --ramp-rate 1000".  The presence extension must be
# built and installed first (make && make install at the top, or
# make install DESTDIR=... with PGBIN pointing into it).
set -euo pipefail

bench_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root_dir=$(dirname "$bench_dir")
cluster="$root_dir/test/cluster.sh"

CONNECTIONS=${CONNECTIONS:-10000}
SESSIONS=${SESSIONS:-1000}
RATE=${RATE:-5000}
DURATION=${DURATION:-30}
WARMUP=${WARMUP:-5}
# below the ephemeral range (32768-60999): 10,000 client sockets would take the port
PGPORT=${PGPORT:-25460}
WSPORT=${WSPORT:-18760}
PRESENCE_GUCS=${PRESENCE_GUCS:-}
SOURCE_ADDRESSES=${SOURCE_ADDRESSES:-64}

make -s -C "$bench_dir" loadgen

# the library the cluster will load: cluster.sh runs $PGBIN's postgres
# (pg_config --bindir's by default), which loads from its own pkglibdir
pgbin=${PGBIN:-$(pg_config --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)}
[ -x "$pgbin/initdb" ] || pgbin=/usr/lib/postgresql/15/bin
pg_config_bin=$pgbin/pg_config
[ -x "$pg_config_bin" ] || pg_config_bin=pg_config
if [ ! -f "$("$pg_config_bin" --pkglibdir)/presence.so" ]; then
	echo "run-fanout: presence is not installed in $("$pg_config_bin" --pkglibdir);" \
		"run 'make && make install' in $root_dir" >&2
	exit 1
fi

# loadgen options from the environment
# shellcheck source=bench/loadgen-options.sh
. "$bench_dir/loadgen-options.sh"
[ -n "${TIMESERIES:-}" ] && loadgen_env+=(--timeseries "$TIMESERIES")
[ -n "${HISTOGRAM:-}" ] && loadgen_env+=(--histogram "$HISTOGRAM")
[ -n "${STEPS_CSV:-}" ] && loadgen_env+=(--steps-csv "$STEPS_CSV")
[ "$SOURCE_ADDRESSES" -gt 0 ] && loadgen_env+=(--source-addresses "$SOURCE_ADDRESSES")

# sessions hold CONNECTIONS/SESSIONS users, the large ones of the mix 50
large_sessions=${LARGE_SESSIONS:-$([ "${MIX:-0}" = 1 ] && echo 2 || echo 0)}
max_participants=$(( (CONNECTIONS + SESSIONS - 1) / SESSIONS + 10 ))
if [ "$large_sessions" -gt 0 ] && [ "$max_participants" -lt 60 ]; then
	max_participants=60
fi

# Every client connection is one descriptor in the ws worker, and the
# postmaster (so the worker) inherits this shell's open-files limit.  As
# root, cluster.sh would switch to postgres through runuser, whose PAM
# session (pam_limits) resets the soft limit to 1024; so run cluster.sh
# itself as postgres through setpriv, which keeps the limit.
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt $((CONNECTIONS + 1000)) ]; then
	echo "run-fanout: warning: open files limited to $(ulimit -n), fewer than $CONNECTIONS connections need" >&2
fi
cluster_sh() {
	if [ "$(id -u)" = 0 ]; then
		setpriv --reuid=postgres --regid=postgres --init-groups -- bash "$cluster" "$@"
	else
		bash "$cluster" "$@"
	fi
}

cluster_dir=$(mktemp -d /tmp/presence-fanout.XXXXXX)
if [ "$(id -u)" = 0 ]; then
	chown postgres: "$cluster_dir"
fi
cleanup() {
	if [ "${KEEP_CLUSTER:-0}" = 1 ]; then
		echo "run-fanout: cluster left running in $cluster_dir (bash $cluster destroy $cluster_dir)"
	else
		cluster_sh destroy "$cluster_dir" || true
	fi
}
trap cleanup EXIT

# The per-address bound on sockets that have not authenticated yet (64,
# against one host flooding the handshake) stays at its default: loadgen
# spreads its connections over SOURCE_ADDRESSES loopback addresses, so
# each address holds a few handshakes at a time.  Only with
# SOURCE_ADDRESSES=0, every client from 127.0.0.1, does one address get
# the worker's whole pool, or the bound would close most of the ramp.
address_gucs=()
[ "$SOURCE_ADDRESSES" -gt 0 ] || address_gucs+=(presence.max_unauthenticated_per_address=1024)
# shellcheck disable=SC2086  # PRESENCE_GUCS is a list of words
cluster_sh start "$cluster_dir" "$PGPORT" "$WSPORT" \
	presence.max_connections=$((CONNECTIONS + 1000)) \
	presence.max_participants=$max_participants \
	"${address_gucs[@]}" \
	$PRESENCE_GUCS

echo "run-fanout: cluster in $cluster_dir, SQL port $PGPORT, WebSocket port $WSPORT"
"$bench_dir/loadgen" \
	--host 127.0.0.1 --port "$WSPORT" \
	--pg "host=127.0.0.1 port=$PGPORT dbname=presence user=postgres" \
	--connections "$CONNECTIONS" --sessions "$SESSIONS" --rate "$RATE" \
	--duration "$DURATION" --warmup "$WARMUP" \
	"${loadgen_env[@]}" "$@"
