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
#   PGPORT WSPORT                               ports of the cluster (55460, 18760)
#   PRESENCE_GUCS                               extra GUC=VALUE settings, space-separated
#   KEEP_CLUSTER=1                              leave the cluster running (prints its directory)
#
# Extra arguments go to loadgen and override the defaults, e.g.
# "bench/run-fanout.sh --ramp-rate 1000".  The presence extension must be
# built and installed first (make && make install at the top).
set -euo pipefail

bench_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root_dir=$(dirname "$bench_dir")
cluster="$root_dir/test/cluster.sh"

CONNECTIONS=${CONNECTIONS:-10000}
SESSIONS=${SESSIONS:-1000}
RATE=${RATE:-5000}
DURATION=${DURATION:-30}
WARMUP=${WARMUP:-5}
PGPORT=${PGPORT:-55460}
WSPORT=${WSPORT:-18760}
PRESENCE_GUCS=${PRESENCE_GUCS:-}

make -s -C "$bench_dir" loadgen

if [ ! -f "$(pg_config --pkglibdir)/presence.so" ]; then
	echo "run-fanout: presence is not installed; run 'make && make install' in $root_dir" >&2
	exit 1
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

# Every generated client comes from 127.0.0.1: the per-address bound on
# sockets that have not authenticated yet (64, against one host flooding
# the handshake) would close most of the ramp, so it gets the worker's
# whole pool.
# shellcheck disable=SC2086  # PRESENCE_GUCS is a list of words
cluster_sh start "$cluster_dir" "$PGPORT" "$WSPORT" \
	presence.max_connections=$((CONNECTIONS + 1000)) \
	presence.max_participants=$(( (CONNECTIONS + SESSIONS - 1) / SESSIONS + 10 )) \
	presence.max_unauthenticated_per_address=1024 \
	$PRESENCE_GUCS

echo "run-fanout: cluster in $cluster_dir, SQL port $PGPORT, WebSocket port $WSPORT"
"$bench_dir/loadgen" \
	--host 127.0.0.1 --port "$WSPORT" \
	--pg "host=127.0.0.1 port=$PGPORT dbname=presence user=postgres" \
	--connections "$CONNECTIONS" --sessions "$SESSIONS" --rate "$RATE" \
	--duration "$DURATION" --warmup "$WARMUP" \
	"$@"
