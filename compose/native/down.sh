#!/usr/bin/env bash
# Stop the brokers that up.sh started (default: all). Data stays in
# ${BRIDGEQ_STATE_DIR:-/tmp/bridgeq-brokers}; `down.sh --purge` also deletes it.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BQ_NAME=down
# shellcheck source=lib.sh
. "$HERE/lib.sh"

purge=0
brokers=()
for a in "$@"; do
    case "$a" in
        --purge) purge=1 ;;
        redis|rabbitmq|kafka) brokers+=("$a") ;;
        *) die "unknown argument '$a' (usage: down.sh [--purge] [redis] [rabbitmq] [kafka])" ;;
    esac
done
[ "${#brokers[@]}" -gt 0 ] || brokers=(kafka rabbitmq redis)

rc=0
for b in "${brokers[@]}"; do
    bash "$HERE/$b.sh" stop || rc=1
    if [ "$purge" = 1 ] && [ "$rc" = 0 ]; then
        rm -rf "${BRIDGEQ_STATE_DIR:?}/$b"
        log "deleted $BRIDGEQ_STATE_DIR/$b"
    fi
done
exit "$rc"
