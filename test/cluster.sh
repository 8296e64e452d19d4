#!/usr/bin/env bash
# Throwaway PostgreSQL clusters with presence preloaded, for tests, benches
# and the demo.  Runs as root (switching to the postgres user) or as any
# ordinary user.
#
#   test/cluster.sh start DIR PGPORT WSPORT [GUC=VALUE ...]
#       initdb DIR (once), write presence settings, start (or reload when
#       already running), create database "presence" with the extension.
#       Returns when the server accepts SQL.  Use ports below 32768: the
#       ephemeral range can collide with outgoing connections.
#   test/cluster.sh stop DIR [MODE]     pg_ctl stop (-m MODE, default fast)
#   test/cluster.sh restart DIR         pg_ctl restart
#   test/cluster.sh reload DIR          pg_ctl reload
#   test/cluster.sh set DIR GUC=VALUE…  rewrite GUCs in presence.conf (then reload or restart)
#   test/cluster.sh psql DIR [ARGS…]    psql as the cluster's superuser to db presence
#   test/cluster.sh destroy DIR         stop (immediate) and remove DIR
set -euo pipefail

PGBIN=${PGBIN:-$(pg_config --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)}
[ -x "$PGBIN/initdb" ] || PGBIN=/usr/lib/postgresql/15/bin

# setpriv rather than runuser: runuser's PAM session resets the open
# files limit, and the ws worker needs one descriptor per client.  From /,
# since the caller's directory may be one postgres cannot enter (a clone
# in a closed home directory).
as_owner() {
	if [ "$(id -u)" = 0 ]; then
		(cd / && setpriv --reuid=postgres --regid=postgres --init-groups -- "$@")
	else
		"$@"
	fi
}

cmd=${1:?usage: cluster.sh start|stop|restart|reload|set|psql|destroy DIR ...}
dir=${2:?cluster directory required}
dir=$(realpath -m "$dir")	# absolute: commands run as postgres from /
shift 2

port_of() { sed -n 's/^port = \([0-9]*\)$/\1/p' "$dir/data/postgresql.auto.conf.presence" 2>/dev/null || true; }

write_gucs() {
	local conf="$dir/data/presence.conf" kv key
	touch "$conf"
	for kv in "$@"; do
		key=${kv%%=*}
		grep -v "^${key} *=" "$conf" > "$conf.tmp" || true
		printf "%s = '%s'\n" "$key" "${kv#*=}" >> "$conf.tmp"
		mv "$conf.tmp" "$conf"
	done
	[ "$(id -u)" = 0 ] && chown postgres: "$conf" || true
}

case "$cmd" in
start)
	pgport=${1:?PGPORT}; wsport=${2:?WSPORT}; shift 2
	mkdir -p "$dir"
	[ "$(id -u)" = 0 ] && chown postgres: "$dir"
	if [ ! -f "$dir/data/PG_VERSION" ]; then
		as_owner "$PGBIN/initdb" -D "$dir/data" -U postgres -A trust --no-sync >"$dir/initdb.log" 2>&1
		cat >> "$dir/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $pgport
unix_socket_directories = '$dir'
shared_preload_libraries = 'presence'
fsync = off
max_wal_senders = 4
wal_level = replica
logging_collector = off
log_line_prefix = '%m [%p] %b '
presence.database = 'presence'
presence.port = $wsport
presence.jwt_secret = 'test-secret-0123456789abcdef0123456789'
include_if_exists = 'presence.conf'
EOF
		echo "port = $pgport" > "$dir/data/postgresql.auto.conf.presence"
	fi
	write_gucs "$@"
	if as_owner "$PGBIN/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
		as_owner "$PGBIN/pg_ctl" -D "$dir/data" reload >/dev/null
	else
		as_owner "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null
	fi
	if ! as_owner "$PGBIN/psql" -h "$dir" -p "$pgport" -U postgres -XtAc \
		"SELECT 1 FROM pg_database WHERE datname = 'presence'" postgres | grep -q 1; then
		as_owner "$PGBIN/psql" -h "$dir" -p "$pgport" -U postgres -Xq -v ON_ERROR_STOP=1 \
			-c "CREATE DATABASE presence" postgres
		as_owner "$PGBIN/psql" -h "$dir" -p "$pgport" -U postgres -Xq -v ON_ERROR_STOP=1 \
			-c "CREATE EXTENSION presence" presence
	fi
	;;
stop)
	as_owner "$PGBIN/pg_ctl" -D "$dir/data" -m "${1:-fast}" -w -t 60 stop >/dev/null
	;;
restart)
	as_owner "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -m fast -w -t 60 restart >/dev/null
	;;
reload)
	as_owner "$PGBIN/pg_ctl" -D "$dir/data" reload >/dev/null
	;;
set)
	write_gucs "$@"
	;;
psql)
	as_owner "$PGBIN/psql" -h "$dir" -p "$(port_of)" -U postgres -X "$@" presence
	;;
destroy)
	if [ -f "$dir/data/postmaster.pid" ]; then
		as_owner "$PGBIN/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
	fi
	rm -rf "$dir"
	;;
*)
	echo "unknown command $cmd" >&2
	exit 2
	;;
esac
