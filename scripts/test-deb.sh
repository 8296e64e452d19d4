#!/usr/bin/env bash
# Tests the Debian package: the version agrees in presence.control,
# debian/changelog and META.json; scripts/build-deb.sh builds it; it holds
# the extension and its documentation and nothing else; lintian finds no
# error; and installed with apt on a fresh Debian 12 that has never built
# presence, it serves (debian/tests/installed: a cluster with presence
# preloaded, CREATE EXTENSION, /healthz, a WebSocket handshake with a
# token from issue_token, nothing listening outside 127.0.0.1, ALTER
# EXTENSION UPDATE).
#   sudo scripts/test-deb.sh
# The fresh machine is a chroot made by fresh-debian.sh ($FRESH_DEBIAN, or
# ../shared/tools/fresh-debian.sh beside the checkout).  Without that
# tool the same check runs on this machine against the package unpacked
# with dpkg -x into a scratch directory, and says so.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }

work=$(mktemp -d /tmp/presence-debtest.XXXXXX)
chmod 755 "$work"
trap 'rm -rf "$work"' EXIT

echo "== versions: presence.control, debian/changelog, META.json"
version=$(sed -n "s/^default_version = '\(.*\)'/\1/p" presence.control)
changelog=$(dpkg-parsechangelog -S Version)
[ "$changelog" = "$version" ] ||
	{ echo "debian/changelog is at $changelog, presence.control at $version" >&2; exit 1; }
# PGXN wants SemVer: 1.2 is 1.2.0 there.
python3 - "$version" <<'EOF'
import json, sys
version = sys.argv[1]
semver = version if version.count(".") == 2 else version + ".0"
meta = json.load(open("META.json"))
for where, got in (("version", meta["version"]),
                   ("provides.presence.version", meta["provides"]["presence"]["version"])):
    if got != semver:
        sys.exit(f"META.json {where} is {got}, presence.control says {version} ({semver})")
if meta["meta-spec"]["version"] != "1.0.0":
    sys.exit("META.json: meta-spec version is not 1.0.0")
EOF
echo "presence $version"

echo "== build"
scripts/build-deb.sh "$work/out" >"$work/debs"
deb=$(grep '/postgresql-15-presence_[^/]*\.deb$' "$work/debs")
echo "$deb ($(stat -c %s "$deb") bytes)"

echo "== contents"
dpkg-deb -c "$deb" | awk '{ print $6 }' | sed 's|^\./|/|' >"$work/files"
stray=$(grep -v -e '^/$' -e '^/usr/$' -e '^/usr/lib/$' -e '^/usr/share/$' \
	-e '^/usr/lib/postgresql/\(15/\(lib/.*\)\?\)\?$' \
	-e '^/usr/share/postgresql/\(15/\(extension/.*\)\?\)\?$' \
	-e '^/usr/share/doc/\(postgresql-15-presence/.*\)\?$' "$work/files" || true)
[ -z "$stray" ] || { echo "unexpected files in the package:" >&2; echo "$stray" >&2; exit 1; }
expected=(/usr/lib/postgresql/15/lib/presence.so /usr/share/postgresql/15/extension/presence.control
	/usr/share/doc/postgresql-15-presence/README.Debian)
for script in sql/presence--*.sql; do
	expected+=("/usr/share/postgresql/15/extension/${script#sql/}")
done
for file in "${expected[@]}"; do
	grep -qx "$file" "$work/files" || { echo "missing from the package: $file" >&2; exit 1; }
done
echo "$(wc -l <"$work/files") entries"

if command -v lintian >/dev/null; then
	echo "== lintian"
	rc=0
	lintian --fail-on error "$work"/out/*.changes >"$work/lintian" 2>&1 || rc=$?
	grep -v '^running with root privileges' "$work/lintian" || true
	[ "$rc" = 0 ] || { echo "lintian found errors" >&2; exit 1; }
fi

fresh=${FRESH_DEBIAN:-$here/../shared/tools/fresh-debian.sh}
# Already inside a chroot (such as a fresh machine running this test
# suite), or without git (which the tool clones with), another one is not
# made within it.
in_chroot() {
	ischroot 2>/dev/null && return 0
	[ "$(stat -Lc %d:%i /)" != "$(stat -Lc %d:%i /proc/1/root/ 2>/dev/null || stat -Lc %d:%i /)" ]
}
if in_chroot || ! command -v git >/dev/null; then
	fresh=/nonexistent/fresh-debian.sh
fi
cp debian/tests/installed "$work/out/check-installed"
if [ -x "$fresh" ]; then
	echo "== a fresh Debian 12 that has never built presence: apt-get install ./$(basename "$deb")"
	# The chroot gets a clone of a repository; this one holds only the
	# package and the check, no source.
	git -C "$work/out" init -q
	git -C "$work/out" add "$(basename "$deb")" check-installed
	git -C "$work/out" -c user.name=test-deb -c user.email=test-deb@localhost commit -qm package
	# No main cluster on 5432: the chroot shares this machine's network.
	"$fresh" "$work/out" '
		set -e
		! command -v cc >/dev/null || { echo "this machine has a C compiler" >&2; exit 1; }
		mkdir -p /etc/postgresql-common/createcluster.d
		echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.d/no-main.conf
		apt-get update -qq
		apt-get install -y -qq --no-install-recommends ./'"$(basename "$deb")"' curl >/dev/null
		dpkg-query -W postgresql-15-presence
		bash check-installed' | tee "$work/fresh.log"
	# A root that passed is not kept (fresh-debian.sh has unmounted it).
	root=$(sed -n 's/^fresh machine: exit 0 (root kept at \(\/tmp\/fresh-[^)]*\))$/\1/p' "$work/fresh.log")
	if [ -n "$root" ] && ! grep -q " $root/" /proc/mounts; then
		rm -rf "$root"
	fi
else
	echo "== NOT a fresh machine: no fresh-debian.sh at $fresh (set FRESH_DEBIAN)."
	echo "== Checking the package unpacked with dpkg -x in a scratch directory on this machine instead."
	scripts/install-deps.sh build
	dpkg-deb -x "$deb" "$work/root"
	PRESENCE_DESTDIR=$work/root bash "$work/out/check-installed"
fi
echo "package test passed: $(basename "$deb")"
