#!/usr/bin/env bash
# bench/run-report.sh: every run docs/benchmarks.md reports, one after
# another, into a results directory, then the plots (bench/plot.py into
# docs/img).  About an hour on a 2-core machine; nothing else should run
# meanwhile, since the generator and the server share the cores.
#
#   bench/run-report.sh [RESULTS_DIR]         (default bench/results)
#
# Environment:
#   HEADLINE_SECONDS   the plain headline run (600: the 10-minute latency goal)
#   OTHER_SECONDS      the compressed headline runs (300)
#   STEP_SECONDS       each saturation step (30; 11 steps make a run of 5.5 minutes)
#   ONLY               a space-separated subset of: floor headline saturation plots
#   DEFLATE_SETUPS     the set-ups of the compressed saturation curve (all three)
#
# Writes, per run, the generator's report (*.log), its per-second CSV
# (headline-*.csv), latency histogram (headline-*-hist.csv) and per-step
# CSV (sat-*.csv).  The presence extension must be built and installed.
set -euo pipefail

bench_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
results=${1:-$bench_dir/results}
HEADLINE_SECONDS=${HEADLINE_SECONDS:-600}
OTHER_SECONDS=${OTHER_SECONDS:-300}
STEP_SECONDS=${STEP_SECONDS:-30}
ONLY=${ONLY:-floor headline saturation plots}
mkdir -p "$results"
results=$(cd "$results" && pwd)
wanted() { [[ " $ONLY " == *" $1 "* ]]; }

make -s -C "$bench_dir" all
ulimit -n "$(ulimit -Hn)"

if wanted floor; then
	echo "== send() floor"
	"$bench_dir/send_floor" 10000 262 45000 30 9 | tee "$results/floor.log"
fi

# the issue's load: 10,000 connections, 1,000 sessions, 5,000 cursor updates/s, one worker
headline() {
	local name=$1 seconds=$2
	shift 2
	echo "== headline $name ($seconds s)"
	env DURATION="$seconds" TIMESERIES="$results/headline-$name.csv" HISTOGRAM="$results/headline-$name-hist.csv" \
		"$@" bash "$bench_dir/run-fanout.sh" --progress 60 | tee "$results/headline-$name.log" | grep -E '^(latency|server|  |generator|mode|bytes)'
}
if wanted headline; then
	headline plain "$HEADLINE_SECONDS"
	headline deflate "$OTHER_SECONDS" DEFLATE=1
	headline deflate-mix "$OTHER_SECONDS" DEFLATE=1 MIX=1
	# keepalive at work: with a 1 s interval about half the connections are
	# silent for a second at each visit, so thousands of pings and pongs a second
	headline keepalive-1s "$OTHER_SECONDS" PRESENCE_GUCS="presence.ping_interval=1s"
fi

# cursor rates of 556 .. 12,000 updates/s: 5,000 .. 108,000 deliveries/s at 10 users a session
steps=""
for rate in 556 1111 2222 3333 4444 5556 6667 7778 8889 10000 12000; do
	steps="$steps${steps:+,}$rate:$STEP_SECONDS"
done
saturation() {
	local mode=$1 setups=$2
	echo "== saturation, $mode: $setups"
	env STEPS="$steps" STEPS_CSV="$results/sat-$mode" SETUPS="$setups" \
		DEFLATE=$([ "$mode" = deflate ] && echo 1 || echo 0) \
		bash "$bench_dir/run-scaleout.sh" | tee "$results/sat-$mode.log"
}
if wanted saturation; then
	saturation plain "embedded redis-1w redis-2w"
	saturation deflate "${DEFLATE_SETUPS:-embedded redis-1w redis-2w}"
fi

if wanted plots; then
	/usr/bin/python3 "$bench_dir/plot.py" "$results"
fi
