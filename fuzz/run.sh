#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, AddressSanitizer, UndefinedBehavior-
# Sanitizer, LeakSanitizer) from the project's own sources and runs each
# for SECONDS, one after the other, starting from its seed corpus in
# fuzz/corpus/TARGET.  Prints each target's executions; exits non-zero on
# any crash, leak, sanitizer report or broken invariant, and leaves the
# input that caused it in fuzz/build/artifacts/.
#   fuzz/run.sh SECONDS [TARGET...]        every target, or those named
#   FUZZ_RUNS=N fuzz/run.sh SECONDS ...    stop each after N executions
# Inputs found along the way stay in fuzz/build/corpus/TARGET (not in git).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:?usage: fuzz/run.sh SECONDS [TARGET...]}
shift
targets=(protocol header_text jwt jwks redis_event redis_command redis_snapshot)
[ $# -gt 0 ] && targets=("$@")

build=fuzz/build
mkdir -p "$build/artifacts"
CC=${CC:-clang}
# -Wno-ignored-attributes: PostgreSQL was built with gcc, its headers name
# gnu_printf, which clang does not know.
cflags=(-g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined
	-fno-sanitize-recover=all -Wall -Wextra -Werror -Wno-unused-parameter
	-Wno-missing-field-initializers -Wno-ignored-attributes -Isrc -Ifuzz -I"$(pg_config --includedir-server)")

# The project's sources each target needs, and the libraries.
sources() {
	case $1 in
	protocol | header_text) echo src/protocol.c ;;
	jwt | jwks) echo src/auth.c ;;
	# libpgport: pg_snprintf and the rest of port.h, as the server has them
	redis_*) echo src/redis_layout.c src/auth.c src/protocol.c fuzz/pg_stubs.c \
		"$(pg_config --pkglibdir)/libpgport.a" ;;
	*) echo "unknown target: $1" >&2; return 1 ;;
	esac
}

for target in "${targets[@]}"; do
	# shellcheck disable=SC2046
	"$CC" "${cflags[@]}" -o "$build/fuzz_$target" "fuzz/fuzz_$target.c" $(sources "$target") \
		-ljansson -lcrypto
done

symbolizer=$(command -v llvm-symbolizer || command -v llvm-symbolizer-14 || true)
[ -n "$symbolizer" ] && export ASAN_SYMBOLIZER_PATH=$symbolizer
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

failed=()
for target in "${targets[@]}"; do
	corpus=$build/corpus/$target
	log=$build/$target.log
	mkdir -p "$corpus"
	limits=(-max_total_time="$seconds")
	[ -n "${FUZZ_RUNS:-}" ] && limits+=(-runs="$FUZZ_RUNS")
	max_len=4096
	[ "$target" = jwt ] && max_len=12288
	[ "$target" = jwks ] && max_len=8192	# a JWKS document of a few RSA keys
	[ "$target" = redis_snapshot ] && max_len=1024	# a few users; longer only runs slower
	status=0
	"$build/fuzz_$target" "${limits[@]}" -max_len=$max_len -timeout=10 -print_final_stats=1 \
		-dict=fuzz/json.dict -artifact_prefix="$build/artifacts/$target-" \
		"$corpus" "fuzz/corpus/$target" >"$log" 2>&1 || status=$?
	executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
	rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
	if [ $status -ne 0 ] || [ -z "$executions" ] ||
		grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error:|invariant failed' "$log"; then
		echo "fuzz $target: FAILED after ${executions:-?} executions (exit $status); log $log:"
		grep -E -A30 'ERROR:|runtime error:|invariant failed' "$log" | head -60 || tail -30 "$log"
		ls "$build/artifacts/$target-"* 2>/dev/null || true
		failed+=("$target")
	else
		echo "fuzz $target: $executions executions in ${seconds}s or less ($rate/s), corpus $(ls "$corpus" | wc -l) inputs, no crash"
	fi
done
[ ${#failed[@]} -eq 0 ] || { echo "fuzzing found problems in: ${failed[*]}"; exit 1; }
