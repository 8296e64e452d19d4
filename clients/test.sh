#!/usr/bin/env bash
# Tests of the JS client, the React hook and the demo page: unit tests on a
# fake clock against a scripted WebSocket server, then integration and
# browser tests against the real server (throwaway clusters from
# test/cluster.sh). Installs what it needs; run as root (apt-get, and
# cluster.sh switches to the postgres user). Screenshots: clients/artifacts/.
#
#   clients/test.sh            everything
#   clients/test.sh FILE...    only these test files (paths under clients/)
#   PRESENCE_INSTALLED=1 clients/test.sh   skip building and installing the extension
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$here"

if [ ! -x /usr/bin/chromium ]; then
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
npm ci --no-audit --no-fund --loglevel=error

# The real-server tests need the extension installed where test/cluster.sh's
# PostgreSQL finds it; a caller that just did that sets PRESENCE_INSTALLED=1.
if [ "${PRESENCE_INSTALLED:-0}" != 1 ]; then
	make -C "$root" -s
	make -C "$root" -s install >/dev/null
fi

npx tsc -p test/types

# Clusters and browser profiles go under one directory, so that whatever a
# killed run leaves behind is stopped and removed on exit.
scratch=$(mktemp -d /tmp/presence-clients-run.XXXXXX)
chmod 755 "$scratch"
cleanup() {
	for cluster in "$scratch"/presence-clients-*/; do
		if [ -d "$cluster" ]; then bash "$root/test/cluster.sh" destroy "$cluster"; fi
	done
	rm -rf "$scratch"
}
trap cleanup EXIT
export TMPDIR=$scratch

if [ $# -eq 0 ]; then
	set -- test/unit/*.test.js test/react/*.test.js test/integration/*.test.js test/e2e/*.test.js
fi
# One file at a time: the real-server files each run a cluster (and one a
# browser), too much at once for a 2-core machine. Every test has its own
# timeout; this bounds the run as a whole.
timeout 900 node --test --test-concurrency=1 "$@"
