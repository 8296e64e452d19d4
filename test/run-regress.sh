#!/usr/bin/env bash
# test/run-regress.sh: the pg_regress suites (sql/*.sql against
# expected/*.out, in the order of REGRESS in the Makefile) on a temporary
# instance, from any checkout, as root or as an ordinary user.
#
# It does what "make installcheck" does, but PostgreSQL will not run as
# root: the inputs are copied into a scratch directory owned by the
# postgres user, and PGXS's pg_regress runs there as postgres.  The
# extension under test is the installed one (make install); a warning
# says when it differs from this checkout.
#
#   test/run-regress.sh                 # every suite
#   test/run-regress.sh csv tokens      # some suites (after schema)
#
# Environment: PGPORT_REGRESS (default 25871; pg_regress moves on if it
# is taken), KEEP_REGRESS=1 keeps the scratch directory.  On failure
# regression.diffs is printed and the exit status is 1.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
pg_config=${PG_CONFIG:-pg_config}
pg_regress="$(dirname "$("$pg_config" --pgxs)")/../test/regress/pg_regress"
bindir=$("$pg_config" --bindir)
port=${PGPORT_REGRESS:-25871}

if [ $# -gt 0 ]; then
	# schema creates regress.try(), which every other suite uses.
	tests="$*"
	case " $tests " in
	*" schema "*) ;;
	*) tests="schema $tests" ;;
	esac
else
	tests=$(sed -n 's/^REGRESS *= *//p' "$here/Makefile")
fi
opts=$(sed -n 's/^REGRESS_OPTS *= *//p' "$here/Makefile" |
	sed 's|--temp-config=[^ ]*||; s|--temp-instance=[^ ]*||')

installed="$("$pg_config" --sharedir)/extension/presence--1.0.sql"
if ! cmp -s "$installed" "$here/sql/presence--1.0.sql"; then
	echo "warning: the installed extension differs from this checkout (make install)" >&2
fi

work=$(mktemp -d /tmp/presence-regress.XXXXXX)
cleanup() {
	if [ "${KEEP_REGRESS:-0}" = 1 ]; then
		echo "kept $work"
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT

mkdir "$work/sql" "$work/expected"
cp "$here"/sql/*.sql "$work/sql/"
cp "$here"/expected/*.out "$work/expected/" 2>/dev/null || true
cp "$here/test/regress.conf" "$work/"
if [ "$(id -u)" = 0 ]; then
	chown -R postgres: "$work"
	as_owner=(runuser -u postgres --)
else
	as_owner=()
fi

cd "$work"
# shellcheck disable=SC2086 # opts and tests are word lists
if "${as_owner[@]}" "$pg_regress" --temp-instance="$work/tmp_check" \
	--temp-config="$work/regress.conf" --inputdir="$work" --outputdir="$work" \
	--bindir="$bindir" --port="$port" --dbname=contrib_regression $opts $tests; then
	exit 0
fi
if [ -f "$work/regression.diffs" ]; then
	cat "$work/regression.diffs"
fi
exit 1
