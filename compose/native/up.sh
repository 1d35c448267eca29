#!/usr/bin/env bash
# Bring brokers up natively (no Docker) and print shell `export` lines for the
# test suite. Progress goes to stderr; stdout carries only the exports:
#
#   eval "$(bash compose/native/up.sh)"                 # all three
#   eval "$(bash compose/native/up.sh redis kafka)"     # a subset
#
# Exports BRIDGEQ_TEST_{REDIS,RABBITMQ,KAFKA}_URL and
# BRIDGEQ_TEST_RESTART_{REDIS,RABBITMQ,KAFKA} (a command that restarts that
# broker and returns once it is ready again, data kept).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BQ_NAME=up
# shellcheck source=lib.sh
. "$HERE/lib.sh"

brokers=("$@")
[ "${#brokers[@]}" -gt 0 ] || brokers=(redis rabbitmq kafka)
for b in "${brokers[@]}"; do
    case "$b" in
        redis|rabbitmq|kafka) ;;
        *) die "unknown broker '$b' (choose from: redis rabbitmq kafka)" ;;
    esac
done

# shell-quote for the export lines: 'value' with embedded ' escaped
sq() { printf "'%s'" "${1//\'/\'\\\'\'}"; }

exports=()
for b in "${brokers[@]}"; do
    script="$HERE/$b.sh"
    t0="$(now)"
    bash "$script" install
    bash "$script" start
    log "$b up in $(elapsed_since "$t0")s (install+start)"
    upper="$(tr '[:lower:]' '[:upper:]' <<<"$b")"
    exports+=("export BRIDGEQ_TEST_${upper}_URL=$(sq "$(bash "$script" url)")")
    exports+=("export BRIDGEQ_TEST_RESTART_${upper}=$(sq "bash $(printf '%q' "$script") restart")")
done

# Carry the settings the scripts were run with, so that the restart commands
# act on the same instances when they run later in another environment.
for v in BRIDGEQ_STATE_DIR BRIDGEQ_CACHE_DIR BRIDGEQ_REDIS_PORT BRIDGEQ_RABBITMQ_PORT \
         BRIDGEQ_RABBITMQ_NODENAME BRIDGEQ_KAFKA_PORT BRIDGEQ_KAFKA_CONTROLLER_PORT BRIDGEQ_KAFKA_VERSION; do
    if [ -n "${!v:-}" ]; then
        exports=("export $v=$(sq "${!v}")" "${exports[@]}")
    fi
done
printf '%s\n' "${exports[@]}"
