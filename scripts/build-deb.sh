#!/usr/bin/env bash
# Builds the Debian package postgresql-15-presence (debian/, pg_buildext)
# from this checkout and prints the path of each .deb it made.
#   sudo scripts/build-deb.sh [OUTDIR]     (default OUTDIR: /tmp/presence-deb)
# Installs the build dependencies it lacks (scripts/install-deps.sh deb).
# The build runs on a copy of the checkout's files (tracked, and untracked
# ones git does not ignore) in a scratch directory, so the checkout gets
# no build products.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
outdir=$(mkdir -p "${1:-/tmp/presence-deb}" && cd "${1:-/tmp/presence-deb}" && pwd)

"$here/scripts/install-deps.sh" deb

work=$(mktemp -d /tmp/presence-debbuild.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir "$work/presence"
if git -C "$here" rev-parse --git-dir >/dev/null 2>&1; then
	(cd "$here" && git ls-files -z --cached --others --exclude-standard |
		tar --null -T - --ignore-failed-read -cf - 2>/dev/null) | tar -C "$work/presence" -xf -
else
	tar -C "$here" --exclude=.git --exclude='*.o' --exclude='*.so' --exclude='*.bc' -cf - . |
		tar -C "$work/presence" -xf -
fi
cd "$work/presence"
# debian/control is made from debian/control.in and debian/pgversions;
# a stale one fails the build (pg_buildext checkcontrol).
dpkg-buildpackage -us -uc -b >"$work/build.log" 2>&1 || {
	tail -n 60 "$work/build.log" >&2
	echo "dpkg-buildpackage failed" >&2
	exit 1
}
cd "$work"
debs=()
for deb in ./*.deb; do
	mv "$deb" "$outdir/"
	debs+=("$outdir/${deb#./}")
done
mv ./*.buildinfo ./*.changes "$outdir/" 2>/dev/null || true
printf '%s\n' "${debs[@]}"
