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

# Chromium and npm from Debian's packages.
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v npm >/dev/null || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Node trusts its own CA bundle only: add the machine's, so a registry
# reached through a proxy with a local CA verifies as curl and apt do.
if [ -z "${NODE_EXTRA_CA_CERTS:-}" ] && [ -r /etc/ssl/certs/ca-certificates.crt ]; then
	export NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
fi

# The tests need Node 20 (node --test --test-concurrency); Debian 12 ships
# 18. Then Node's own build is taken from the npm registry, pinned and
# checked, into clients/.node/ (Debian's npm runs on it).
NODE_VERSION=20.20.2
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 20 ]; then
	case $(uname -m) in
	x86_64) node_arch=x64 node_sha512=PeHQM8wAdmHtZA1mBocygZxs5LiUWtsJezQTkBd0iY987KpGrD1O2tVEydvMZiuXceRanxt7rjTnDEBwOPujoQ== ;;
	aarch64) node_arch=arm64 node_sha512=LCXJnNTFiyGuYBw2gZSI5OBFMbkjAPt8sqD/NKrWoE2QmDgSubTqFng6GaNJ9EJ8HpxBMGcWWpbbcs4Vo+CnGg== ;;
	*) echo "clients/test.sh: no pinned Node 20 for $(uname -m); install Node 20 or newer" >&2; exit 1 ;;
	esac
	node_dir=$here/.node/$NODE_VERSION
	if [ ! -x "$node_dir/bin/node" ]; then
		tarball=$(mktemp /tmp/presence-node.XXXXXX)
		curl -fsSL -o "$tarball" "https://registry.npmjs.org/node-linux-$node_arch/-/node-linux-$node_arch-$NODE_VERSION.tgz"
		if [ "$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)" != "$node_sha512" ]; then
			rm -f "$tarball"
			echo "clients/test.sh: node-linux-$node_arch-$NODE_VERSION.tgz does not match its pinned SHA-512" >&2
			exit 1
		fi
		mkdir -p "$node_dir"
		tar -xzf "$tarball" -C "$node_dir" --strip-components=1 package/bin package/LICENSE
		rm -f "$tarball"
	fi
	export PATH=$node_dir/bin:$PATH
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
