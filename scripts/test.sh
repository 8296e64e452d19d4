#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test: pg_regress
# suites, the integration and fault tests, the C unit tests
# (test/unit/run.sh), the Debian package (scripts/test-deb.sh), a short
# fuzzing run of every parser of untrusted bytes (fuzz/run.sh), and the
# client tests.
# Exits non-zero when any test fails.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh test
make -s
make -s install

echo "== pg_regress (SQL API)"
test/run-regress.sh

echo "== integration tests (pytest)"
/usr/bin/python3 -m pytest -q -p no:cacheprovider test/

echo "== unit tests (C, no server)"
test/unit/run.sh

echo "== Debian package (build, lintian, install and serve on a fresh Debian 12)"
scripts/test-deb.sh

echo "== fuzzing (libFuzzer, 20 s per target)"
fuzz/run.sh 20

if [ -x clients/test.sh ]; then
	echo "== clients (JavaScript, React, browser)"
	clients/test.sh
fi
echo "all tests passed"
