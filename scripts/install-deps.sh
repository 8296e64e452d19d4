#!/usr/bin/env bash
# Installs what presence needs from Debian's packages, once: packages
# already present are not touched, and apt-get update runs only when
# something is missing.
#   scripts/install-deps.sh build    build and run the extension
#   scripts/install-deps.sh deb      build + what building the Debian package needs
#   scripts/install-deps.sh test     build + deb + everything the tests use
set -euo pipefail

build_packages=(build-essential pkg-config ca-certificates curl
	postgresql-15 postgresql-server-dev-15 postgresql-contrib
	libwebsockets-dev libuv1-dev libjansson-dev libssl-dev libhiredis-dev libpq-dev zlib1g-dev
	redis-server)
test_packages=(python3 python3-pytest python3-websockets python3-psycopg python3-jwt python3-cryptography
	libipc-run-perl valgrind clang libclang-rt-14-dev)

# debian/control's Build-Depends beyond the build's, the tools that read
# them, and lintian for scripts/test-deb.sh
deb_packages=(dpkg-dev debhelper fakeroot postgresql-server-dev-all lintian)

wanted=("${build_packages[@]}")
case ${1:-build} in
build) ;;
deb) wanted+=("${deb_packages[@]}") ;;
test) wanted+=("${deb_packages[@]}" "${test_packages[@]}") ;;
*) echo "usage: scripts/install-deps.sh build|deb|test" >&2; exit 2 ;;
esac

missing=()
for package in "${wanted[@]}"; do
	dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" ||
		missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "missing packages: ${missing[*]} (run as root to install them)" >&2
		exit 1
	fi
	echo "installing: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
