# bench/loadgen-options.sh: sourced by run-fanout.sh and run-scaleout.sh.
# Sets loadgen_env, the loadgen options both take from the environment
# (DEFLATE=1 MIX=1 ACTIVITY_RATE LARGE_SESSIONS REJOIN_RATE STEPS); each
# script adds its own.
loadgen_env=()
[ "${DEFLATE:-0}" = 1 ] && loadgen_env+=(--deflate)
[ "${MIX:-0}" = 1 ] && loadgen_env+=(--mix)
[ -n "${ACTIVITY_RATE:-}" ] && loadgen_env+=(--activity-rate "$ACTIVITY_RATE")
[ -n "${LARGE_SESSIONS:-}" ] && loadgen_env+=(--large-sessions "$LARGE_SESSIONS")
[ -n "${REJOIN_RATE:-}" ] && loadgen_env+=(--rejoin-rate "$REJOIN_RATE")
[ -n "${STEPS:-}" ] && loadgen_env+=(--steps "$STEPS")
: # the tests above leave a false status when their variable is unset
