#!/usr/bin/env bash
# Redis (Debian's redis-server) on 127.0.0.1:${BRIDGEQ_REDIS_PORT:-6379},
# run as our own daemon (not the distro service), data under
# ${BRIDGEQ_STATE_DIR:-/tmp/bridgeq-brokers}/redis with appendonly yes.
#
#   redis.sh install   apt-get install redis-server if missing
#   redis.sh start     install if needed, start, wait for PING -> PONG (no-op if running)
#   redis.sh stop      SHUTDOWN (AOF flushed), wait for the process to exit
#   redis.sh restart   stop + start: a new server process, same data
#   redis.sh status    exit 0 when up and answering, 3 when not running
#   redis.sh url       print redis://127.0.0.1:PORT/0
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BQ_NAME=redis
# shellcheck source=lib.sh
. "$HERE/lib.sh"

PORT="${BRIDGEQ_REDIS_PORT:-6379}"
HOST=127.0.0.1
DIR="$BRIDGEQ_STATE_DIR/redis"
CONF="$DIR/redis.conf"
PIDFILE="$DIR/redis.pid"
LOGFILE="$DIR/redis.log"
START_TIMEOUT="${BRIDGEQ_REDIS_START_TIMEOUT:-30}"
STOP_TIMEOUT="${BRIDGEQ_REDIS_STOP_TIMEOUT:-30}"
# The Debian service's pid file (its init script / unit writes it there).
DISTRO_PIDFILE=/run/redis/redis-server.pid

redis_version() { redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p'; }
cli() { redis-cli -h "$HOST" -p "$PORT" "$@"; }
ping_ok() { [ "$(timeout 5 redis-cli -h "$HOST" -p "$PORT" ping 2>/dev/null)" = PONG ]; }
our_pid() { pid_from_file "$PIDFILE" redis-server; }

do_install() {
    if command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then
        log "redis-server already installed: $(redis_version)"
    else
        apt_install redis-server redis-tools
        log "installed $(redis_version)"
    fi
    # The package may have started the distro service (on machines where
    # services start on install); it would take our port.
    stop_distro_service_if_conflicting
}

stop_distro_service_if_conflicting() {
    local dpid
    dpid="$(pid_from_file "$DISTRO_PIDFILE" redis-server)"
    [ -n "$dpid" ] || return 0
    # Only in the way when it listens on our port.
    if grep -q "pid=$dpid," < <(ss -ltnpH "sport = :$PORT" 2>/dev/null); then
        log "stopping the Debian redis-server service (pid $dpid) that holds port $PORT"
        if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
            systemctl stop redis-server >&2 || true
            systemctl disable redis-server >/dev/null 2>&1 || true
        elif [ -x /etc/init.d/redis-server ]; then
            /etc/init.d/redis-server stop >&2 || true
        fi
        if pid_alive "$dpid"; then
            kill "$dpid" 2>/dev/null || true
        fi
        wait_pid_exit "$dpid" "$STOP_TIMEOUT" || die "the Debian redis-server (pid $dpid) did not stop within ${STOP_TIMEOUT}s"
    fi
}

write_conf() {
    mkdir -p "$DIR/data"
    cat >"$CONF" <<EOF
# Written by compose/native/redis.sh; rewritten on every start.
bind $HOST
port $PORT
protected-mode yes
daemonize yes
pidfile $PIDFILE
logfile $LOGFILE
dir $DIR/data
appendonly yes
appendfsync everysec
save 3600 1 300 100 60 10000
EOF
}

do_start() {
    local t0 pid
    t0="$(now)"
    command -v redis-server >/dev/null || do_install
    pid="$(our_pid)"
    if [ -n "$pid" ]; then
        wait_for "$START_TIMEOUT" ping ping_ok \
            || die "redis-server (pid $pid) is running but did not answer PING on $HOST:$PORT within ${START_TIMEOUT}s; see $LOGFILE"
        log "already running (pid $pid) on $HOST:$PORT"
        return 0
    fi
    stop_distro_service_if_conflicting
    if port_open "$HOST" "$PORT"; then
        die "port $PORT is already in use by another process ($(port_owner "$PORT")); stop it or set BRIDGEQ_REDIS_PORT"
    fi
    write_conf
    rm -f "$PIDFILE"
    redis-server "$CONF" >&2 || die "redis-server failed to start; see $LOGFILE"
    if ! wait_for "$START_TIMEOUT" ping ping_ok; then
        tail -n 20 "$LOGFILE" >&2 2>/dev/null || true
        die "redis-server did not answer PING on $HOST:$PORT within ${START_TIMEOUT}s; see $LOGFILE"
    fi
    log "ready on $HOST:$PORT (pid $(our_pid), $(redis_version), data $DIR/data) in $(elapsed_since "$t0")s"
}

do_stop() {
    local pid
    pid="$(our_pid)"
    if [ -z "$pid" ]; then
        log "not running"
        rm -f "$PIDFILE"
        return 0
    fi
    # SHUTDOWN flushes the AOF (and writes an RDB snapshot) before exiting.
    timeout 10 redis-cli -h "$HOST" -p "$PORT" shutdown >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
    finish_stop "$pid" redis-server "$STOP_TIMEOUT"
}

do_status() {
    local pid
    pid="$(our_pid)"
    if [ -n "$pid" ] && ping_ok; then
        echo "redis: running pid=$pid addr=$HOST:$PORT version=$(cli info server | sed -n 's/^redis_version:\(.*\)\r$/\1/p') aof=$(cli config get appendonly | tail -1) dir=$DIR/data"
        return 0
    fi
    if [ -n "$pid" ]; then
        echo "redis: process $pid alive but not answering on $HOST:$PORT"
        return 1
    fi
    echo "redis: not running"
    return 3
}

case "${1:-}" in
    install) do_install ;;
    start) do_start ;;
    stop) do_stop ;;
    restart) do_stop; do_start ;;
    status) do_status ;;
    url) echo "redis://$HOST:$PORT/0" ;;
    *) usage_exit ;;
esac
