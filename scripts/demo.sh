#!/usr/bin/env bash
# Builds and installs presence, starts a demo Redis and PostgreSQL cluster
# (owned by postgres, in /var/lib/presence-demo) with two WebSocket workers
# sharing 127.0.0.1:8765 through Redis, creates a demo session with three
# users and prints how to connect.  Running it again reuses both.
#   PRESENCE_DEMO_DIR   where the cluster lives: by default
#                       /var/lib/presence-demo as root, which the postgres
#                       user can reach wherever the clone is (a home
#                       directory is often closed to others); ./.demo when
#                       run as the user who owns the clone
#   PRESENCE_DEMO_PGPORT, PRESENCE_DEMO_WSPORT, PRESENCE_DEMO_REDISPORT
#                       (default 15432, 8765, 16379)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
if [ "$(id -u)" = 0 ]; then
	dir=${PRESENCE_DEMO_DIR:-/var/lib/presence-demo}
else
	dir=${PRESENCE_DEMO_DIR:-$root/.demo}
fi
pgport=${PRESENCE_DEMO_PGPORT:-15432}
wsport=${PRESENCE_DEMO_WSPORT:-8765}
redisport=${PRESENCE_DEMO_REDISPORT:-16379}

scripts/install-deps.sh build
make -s
make -s install

www="$dir/www"
mkdir -p "$www"
if [ -x demo/assemble.sh ]; then
	demo/assemble.sh "$www"
fi
[ "$(id -u)" = 0 ] && chown -R postgres: "$dir"
# the postgres user must be able to reach the demo page
chmod o+x "$dir" "$(dirname "$dir")" 2>/dev/null || true

if ! redis-cli -p "$redisport" ping >/dev/null 2>&1; then
	redis-server --port "$redisport" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
		--pidfile "$dir/redis.pid" --logfile "$dir/redis.log" >/dev/null
	until redis-cli -p "$redisport" ping >/dev/null 2>&1; do sleep 0.1; done
fi

# a secret of the demo's own, kept across runs so issued tokens stay valid
[ -s "$dir/jwt_secret" ] || (umask 077 && openssl rand -hex 32 > "$dir/jwt_secret")
test/cluster.sh start "$dir" "$pgport" "$wsport" presence.jwt_secret="$(cat "$dir/jwt_secret")" \
	presence.static_dir="$www" presence.away_threshold=30s \
	presence.redis_url="redis://127.0.0.1:$redisport" presence.workers=2

sql() { test/cluster.sh psql "$dir" -v ON_ERROR_STOP=1 -XtAq -c "$1"; }
sql "INSERT INTO presence.users (id, username) VALUES
	('a11ce000-0000-4000-8000-000000000001', 'Alice'),
	('b0b00000-0000-4000-8000-000000000002', 'Bob'),
	('ca401000-0000-4000-8000-000000000003', 'Carol')
	ON CONFLICT (id) DO NOTHING"
if [ "$(sql "SELECT count(*) FROM presence.collaboration_sessions WHERE session_id = 'demo'")" = 0 ]; then
	sql "SELECT presence.create_session('a11ce000-0000-4000-8000-000000000001', 'demo-operation',
		'{\"title\": \"Demo incident review\"}', 'timeline', 'Show live presence', 'demo')" >/dev/null
fi
sql "SELECT presence.add_participant('demo', 'b0b00000-0000-4000-8000-000000000002', 'operator')" >/dev/null
sql "SELECT presence.add_participant('demo', 'ca401000-0000-4000-8000-000000000003', 'commenter')" >/dev/null

# the workers connect once the database exists; wait until they serve
for _ in $(seq 1 100); do
	curl -sf "http://127.0.0.1:$wsport/healthz" >/dev/null && break
	sleep 0.2
done

echo
echo "presence demo is running."
echo "  PostgreSQL:  test/cluster.sh psql $dir      (or psql -h $dir -p $pgport -U postgres presence)"
echo "  WebSocket:   ws://127.0.0.1:$wsport/ws   (2 workers, sharing presence through Redis on port $redisport)"
echo "  health:      http://127.0.0.1:$wsport/healthz   metrics: http://127.0.0.1:$wsport/metrics"
echo
echo "Open one URL per user (tokens last 8 hours):"
for user in a11ce000-0000-4000-8000-000000000001 b0b00000-0000-4000-8000-000000000002 ca401000-0000-4000-8000-000000000003; do
	name=$(sql "SELECT username FROM presence.users WHERE id = '$user'")
	token=$(sql "SELECT presence.issue_token('$user', '8 hours')")
	printf '  %-6s http://127.0.0.1:%s/?session=demo&token=%s\n' "$name" "$wsport" "$token"
done
echo
echo "Stop it with: test/cluster.sh stop $dir; kill \$(cat $dir/redis.pid)"
