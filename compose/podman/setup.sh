#!/usr/bin/env bash
# Serve the Docker API with Debian's podman (rootful, runc) so that
# testcontainers can start brokers on a machine without Docker. Prints only
# `export` lines on stdout (progress goes to stderr):
#
#   eval "$(bash compose/podman/setup.sh)"
#
#   setup.sh          install podman + runc if missing, write containers.conf,
#                     start the API service if it is not answering, wait, print exports
#   setup.sh stop     stop the API service this script started (containers are kept)
#   setup.sh status   exit 0 when the API answers on the socket, 3 when not
#
# Settings: BRIDGEQ_PODMAN_SOCKET (default /run/bridgeq-podman.sock),
# BRIDGEQ_STATE_DIR (default /tmp/bridgeq-brokers; the service log and pid go
# to its podman/ folder). Needs root (apt-get, /etc/containers, rootful podman).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BQ_NAME=podman
# shellcheck source-path=SCRIPTDIR source=../native/lib.sh
. "$HERE/../native/lib.sh"

SOCK="${BRIDGEQ_PODMAN_SOCKET:-/run/bridgeq-podman.sock}"
DIR="$BRIDGEQ_STATE_DIR/podman"
PIDFILE="$DIR/service.pid"
LOGFILE="$DIR/service.log"
CONF=/etc/containers/containers.conf
MARK="# Written by bridgeq compose/podman/setup.sh"
START_TIMEOUT="${BRIDGEQ_PODMAN_START_TIMEOUT:-30}"

# api_ok : the Docker API answers /_ping on the socket.
api_ok() { [ "$(curl -fsS --max-time 5 --unix-socket "$SOCK" http://d/_ping 2>/dev/null)" = OK ]; }

do_install() {
    if command -v podman >/dev/null && command -v runc >/dev/null; then
        log "podman $(podman --version | awk '{print $3}') and runc already installed"
    else
        apt_install podman runc
        log "installed podman $(podman --version | awk '{print $3}'), $(runc --version | head -1)"
    fi
}

# Rootful podman with runc: crun refuses this host's cgroup v1 hybrid layout,
# and the default ulimits (nofile from the host) fail inside such VMs.
write_conf() {
    local want
    want="$MARK; rewritten when missing or when it carries this line.
[containers]
default_ulimits = []

[engine]
runtime = \"runc\""
    mkdir -p "$(dirname "$CONF")"
    if [ -f "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
        if grep -q '^runtime *= *"runc"' "$CONF"; then
            log "keeping $CONF (not ours, already selects runc)"
            return 0
        fi
        die "$CONF exists and is not ours; add  [engine] runtime = \"runc\"  and  [containers] default_ulimits = []  to it, or move it away"
    fi
    if [ "$(cat "$CONF" 2>/dev/null)" != "$want" ]; then
        printf '%s\n' "$want" >"$CONF"
        log "wrote $CONF (runtime runc, no default ulimits)"
    fi
}

service_pid() { pid_from_file "$PIDFILE" "system service"; }

do_start() {
    local t0 pid
    t0="$(now)"
    if api_ok; then
        log "Docker API already answers on $SOCK"
        return 0
    fi
    pid="$(service_pid)"
    if [ -z "$pid" ]; then
        mkdir -p "$DIR" "$(dirname "$SOCK")"
        rm -f "$SOCK"
        setsid podman system service --time=0 "unix://$SOCK" >>"$LOGFILE" 2>&1 </dev/null &
        pid=$!
        echo "$pid" >"$PIDFILE"
        log "started podman system service (pid $pid, log $LOGFILE)"
    fi
    local deadline=$((SECONDS + START_TIMEOUT))
    until api_ok; do
        if ! pid_alive "$pid"; then
            tail -n 20 "$LOGFILE" >&2 2>/dev/null || true
            die "podman system service (pid $pid) exited; see $LOGFILE"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            tail -n 20 "$LOGFILE" >&2 2>/dev/null || true
            die "the Docker API did not answer on $SOCK within ${START_TIMEOUT}s; see $LOGFILE"
        fi
        sleep 0.2
    done
    log "Docker API answers on $SOCK (API $(curl -fsS --unix-socket "$SOCK" http://d/version \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["ApiVersion"])')) in $(elapsed_since "$t0")s"
}

do_stop() {
    local pid
    pid="$(service_pid)"
    if [ -z "$pid" ]; then
        log "service not running (from this script)"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    wait_pid_exit "$pid" 30 || { kill -KILL "$pid" 2>/dev/null || true; }
    rm -f "$PIDFILE" "$SOCK"
    log "stopped podman system service (was pid $pid)"
}

print_exports() {
    # Checked against testcontainers-python 4.15 (testcontainers/core/config.py,
    # docker_client.py): no Ryuk (its image cannot be pulled here), the mapped
    # ports on 127.0.0.1, and docker_host mode even though /.dockerenv may exist.
    cat <<EOF
export DOCKER_HOST='unix://$SOCK'
export TESTCONTAINERS_RYUK_DISABLED=true
export TC_HOST=127.0.0.1
export TESTCONTAINERS_CONNECTION_MODE=docker_host
export BRIDGEQ_TEST_REDIS_IMAGE=localhost/bridgeq/redis:7-debian
export BRIDGEQ_TEST_RABBITMQ_IMAGE=localhost/bridgeq/rabbitmq:3-debian
export BRIDGEQ_TEST_KAFKA_IMAGE=localhost/bridgeq/kafka:4.4.0-debian
EOF
}

case "${1:-up}" in
    up) need_root; do_install; write_conf; do_start; print_exports ;;
    stop) do_stop ;;
    status) if api_ok; then echo "podman: Docker API answers on $SOCK"; else echo "podman: no answer on $SOCK"; exit 3; fi ;;
    *) echo "usage: $0 [up|stop|status]" >&2; exit 2 ;;
esac
