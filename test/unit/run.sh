#!/usr/bin/env bash
# Builds the C unit tests (clang, AddressSanitizer, UndefinedBehavior-
# Sanitizer, LeakSanitizer) from the project's own sources, without a
# server, into test/unit/build/, and runs them: one line per case
# ("ok - name" / "not ok - name"), then a summary.  Exits non-zero on any
# failed case, build error or sanitizer report (leaks included).
#   test/unit/run.sh                    every test binary
#   test/unit/run.sh live_state         one (test_live_state.c); also "test_live_state"
#   test/unit/run.sh frame deflate_repetitive_message   one binary, some cases by name
set -euo pipefail
cd "$(dirname "$0")/../.."

all=(protocol frame live_state)
tests=("${all[@]}")
cases=()
if [ $# -gt 0 ]; then
	tests=("${1#test_}")
	tests=("${tests[0]%.c}")
	shift
	cases=("$@")
fi

start_ns=$(date +%s%N)
build=test/unit/build
mkdir -p "$build"
CC=${CC:-clang}
pglib=$(pg_config --pkglibdir)
# -Wno-ignored-attributes: PostgreSQL was built with gcc, its headers name
# gnu_printf, which clang does not know.
cflags=(-g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all
	-Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers
	-Wno-ignored-attributes -Isrc -Itest/unit -I"$(pg_config --includedir-server)")

# The project's sources each test links (the real ones), the doubles, and the libraries.
sources() {
	case $1 in
	protocol) echo src/protocol.c ;;
	frame) echo src/frame.c src/protocol.c ;;
	# libpgcommon: hash_bytes; libpgport: strlcpy and pg_snprintf, as the server has them
	live_state) echo test/unit/live_doubles.c src/live_state.c src/frame.c src/protocol.c \
		src/growable.c "$pglib/libpgcommon.a" "$pglib/libpgport.a" ;;
	*) echo "unknown test: $1 (one of: ${all[*]})" >&2; return 1 ;;
	esac
}

for test in "${tests[@]}"; do
	srcs=$(sources "$test")
	# shellcheck disable=SC2086
	"$CC" "${cflags[@]}" -o "$build/test_$test" "test/unit/test_$test.c" $srcs -ljansson -lz
done

symbolizer=$(command -v llvm-symbolizer || command -v llvm-symbolizer-14 || true)
[ -n "$symbolizer" ] && export ASAN_SYMBOLIZER_PATH=$symbolizer
# live_state.c's tables live as long as the process, reachable from its
# statics: LeakSanitizer does not count them, so no suppression is needed.
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:symbolize=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

failed=()
passed_cases=0
failed_cases=0
for test in "${tests[@]}"; do
	log=$build/test_$test.log
	status=0
	"$build/test_$test" "${cases[@]}" >"$log" 2>&1 || status=$?
	grep -E '^(ok|not ok) - |^#' "$log" || true
	passed_cases=$((passed_cases + $(grep -c '^ok - ' "$log" || true)))
	failed_cases=$((failed_cases + $(grep -c '^not ok - ' "$log" || true)))
	if grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$log"; then
		echo "not ok - test_$test: sanitizer report (exit status $status), from $log:"
		grep -E -A40 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$log" | head -60
		failed+=("test_$test")
	elif [ $status -ne 0 ]; then
		# 1: a case failed (listed above); anything else: it did not run to its end
		[ $status -eq 1 ] || { echo "not ok - test_$test: exit status $status, from $log:"; tail -20 "$log"; }
		failed+=("test_$test")
	fi
done
elapsed_ms=$((($(date +%s%N) - start_ns) / 1000000))
echo "unit tests: $passed_cases ok, $failed_cases not ok," \
	"${#tests[@]} binaries built and run in ${elapsed_ms} ms"
[ ${#failed[@]} -eq 0 ] || { echo "unit tests failed: ${failed[*]}"; exit 1; }
