#!/usr/bin/env bash
# RabbitMQ (Debian's rabbitmq-server) on 127.0.0.1:${BRIDGEQ_RABBITMQ_PORT:-5672},
# run as the `rabbitmq` user like the distro service does, but as our own node
# (${BRIDGEQ_RABBITMQ_NODENAME:-bridgeq@localhost}) with its data, logs and pid
# file under ${BRIDGEQ_STATE_DIR:-/tmp/bridgeq-brokers}/rabbitmq.
#
#   rabbitmq.sh install   apt-get install rabbitmq-server if missing
#   rabbitmq.sh start     install if needed, start (-detached), await_startup (no-op if running)
#   rabbitmq.sh stop      rabbitmqctl stop, wait for the VM to exit
#   rabbitmq.sh restart   stop + start: a new VM, durable queues and their messages kept
#   rabbitmq.sh status    exit 0 when up, 3 when not running
#   rabbitmq.sh url       print amqp://guest:guest@127.0.0.1:PORT/%2F
#   rabbitmq.sh ctl ARGS  run rabbitmqctl against this node (e.g. `ctl list_queues`)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BQ_NAME=rabbitmq
# shellcheck source=lib.sh
. "$HERE/lib.sh"

PORT="${BRIDGEQ_RABBITMQ_PORT:-5672}"
HOST=127.0.0.1
NODENAME="${BRIDGEQ_RABBITMQ_NODENAME:-bridgeq@localhost}"
DIR="$BRIDGEQ_STATE_DIR/rabbitmq"
PIDFILE="$DIR/rabbitmq.pid"
START_TIMEOUT="${BRIDGEQ_RABBITMQ_START_TIMEOUT:-120}"
STOP_TIMEOUT="${BRIDGEQ_RABBITMQ_STOP_TIMEOUT:-60}"
RMQ_BIN=/usr/lib/rabbitmq/bin
RMQ_USER=rabbitmq
RMQ_HOME=/var/lib/rabbitmq   # the Erlang cookie lives here; server and CLI must share it

# as_rmq SECONDS PROGRAM ARGS... : run a RabbitMQ program as the rabbitmq user
# with this node's environment, killed after SECONDS. runuser's PAM session
# sets the soft open-files limit back to 1024, which a test run's connections
# can exhaust (the node then accepts no more, CLI included): it is raised to
# the hard limit first.
as_rmq() {
    local secs="$1" prog="$2"; shift 2
    (cd "$RMQ_HOME" && timeout "$secs" runuser -u "$RMQ_USER" -- \
        sh -c 'ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$@"' as_rmq env \
        HOME="$RMQ_HOME" \
        RABBITMQ_NODENAME="$NODENAME" \
        RABBITMQ_NODE_IP_ADDRESS="$HOST" \
        RABBITMQ_NODE_PORT="$PORT" \
        RABBITMQ_CONFIG_FILE="$DIR/rabbitmq.conf" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$DIR/enabled_plugins" \
        RABBITMQ_MNESIA_BASE="$DIR/mnesia" \
        RABBITMQ_LOG_BASE="$DIR/log" \
        RABBITMQ_PID_FILE="$PIDFILE" \
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
        ERL_EPMD_ADDRESS=127.0.0.1 \
        "$RMQ_BIN/$prog" "$@")
}
rmqctl() { as_rmq 120 rabbitmqctl "$@"; }
our_pid() { pid_from_file "$PIDFILE" beam; }
rmq_version() { dpkg-query -W -f='${Version}' rabbitmq-server 2>/dev/null | sed 's/-.*//'; }
erlang_version() { dpkg-query -W -f='${Version}' erlang-base 2>/dev/null | sed 's/^[0-9]*://; s/+.*//'; }

do_install() {
    if [ -x "$RMQ_BIN/rabbitmq-server" ] && getent passwd "$RMQ_USER" >/dev/null; then
        log "rabbitmq-server already installed: $(rmq_version) (Erlang $(erlang_version))"
    else
        apt_install rabbitmq-server
        log "installed rabbitmq-server $(rmq_version) (Erlang $(erlang_version))"
    fi
    stop_distro_service_if_conflicting
}

# The package starts its own service (node rabbit@<hostname>, port 5672) on
# machines where services start on install; it would hold our port.
stop_distro_service_if_conflicting() {
    local dpid
    dpid="$(pid_from_file /run/rabbitmq/pid beam)"
    if [ -z "$dpid" ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ] \
            && systemctl is-active --quiet rabbitmq-server 2>/dev/null; then
        dpid="$(systemctl show -p MainPID --value rabbitmq-server 2>/dev/null || true)"
    fi
    [ -n "$dpid" ] && [ "$dpid" != 0 ] || return 0
    [ "$dpid" = "$(our_pid)" ] && return 0
    log "stopping the Debian rabbitmq-server service (pid $dpid); this script runs its own node"
    if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
        systemctl stop rabbitmq-server >&2 || true
        systemctl disable rabbitmq-server >/dev/null 2>&1 || true
    elif [ -x /etc/init.d/rabbitmq-server ]; then
        timeout "$STOP_TIMEOUT" /etc/init.d/rabbitmq-server stop >&2 || true
    fi
    if pid_alive "$dpid"; then kill "$dpid" 2>/dev/null || true; fi
    wait_pid_exit "$dpid" "$STOP_TIMEOUT" || die "the Debian rabbitmq-server (pid $dpid) did not stop within ${STOP_TIMEOUT}s"
}

prepare_dirs() {
    mkdir -p "$DIR/mnesia" "$DIR/log"
    cat >"$DIR/rabbitmq.conf" <<EOF
# Written by compose/native/rabbitmq.sh; rewritten on every start.
listeners.tcp.default = $HOST:$PORT
# guest/guest works from loopback only (the default); we listen on loopback only.
loopback_users.guest = true
# Small CI disks: do not block publishers at the 50 MB default of a near-full disk.
disk_free_limit.absolute = 10MB
log.file.level = info
log.console = false
EOF
    [ -f "$DIR/enabled_plugins" ] || echo '[].' >"$DIR/enabled_plugins"
    chown -R "$RMQ_USER:" "$DIR"
    runuser -u "$RMQ_USER" -- test -w "$DIR/mnesia" \
        || die "user $RMQ_USER cannot write $DIR (a parent folder is not traversable?); set BRIDGEQ_STATE_DIR to a folder like /tmp/bridgeq-brokers"
}

await_ready() {
    # `rabbitmqctl wait PIDFILE` waits for the pid file, then for the node to
    # boot the rabbit app; await_startup then confirms the boot completed.
    local t=$((START_TIMEOUT + 10))
    if ! { as_rmq "$t" rabbitmqctl -q wait --timeout "$START_TIMEOUT" "$PIDFILE" \
            && as_rmq "$t" rabbitmqctl -q await_startup --timeout "$START_TIMEOUT"; } >&2; then
        tail -n 30 "$DIR/log/$NODENAME.log" >&2 2>/dev/null || true
        die "RabbitMQ node $NODENAME did not finish starting within ${START_TIMEOUT}s; see $DIR/log/"
    fi
    wait_for 10 "amqp port" port_open "$HOST" "$PORT" \
        || die "RabbitMQ booted but nothing accepts connections on $HOST:$PORT; see $DIR/log/"
}

do_start() {
    local t0 pid
    t0="$(now)"
    [ -x "$RMQ_BIN/rabbitmq-server" ] || do_install
    pid="$(our_pid)"
    if [ -n "$pid" ]; then
        await_ready
        log "already running (pid $pid, node $NODENAME) on $HOST:$PORT"
        return 0
    fi
    stop_distro_service_if_conflicting
    if port_open "$HOST" "$PORT"; then
        die "port $PORT is already in use by another process ($(port_owner "$PORT")); stop it or set BRIDGEQ_RABBITMQ_PORT"
    fi
    prepare_dirs
    rm -f "$PIDFILE"
    as_rmq 60 rabbitmq-server -detached >&2 || die "rabbitmq-server -detached failed; see $DIR/log/"
    await_ready
    log "ready on $HOST:$PORT (pid $(our_pid), node $NODENAME, RabbitMQ $(rmq_version), Erlang $(erlang_version)) in $(elapsed_since "$t0")s"
}

do_stop() {
    local pid
    pid="$(our_pid)"
    if [ -z "$pid" ]; then
        log "not running"
        return 0
    fi
    # `rabbitmqctl stop PIDFILE` stops the node and waits for the OS process.
    if ! as_rmq "$STOP_TIMEOUT" rabbitmqctl -q stop "$PIDFILE" >&2; then
        log "rabbitmqctl stop failed or timed out; sending SIGTERM to pid $pid"
        kill -TERM "$pid" 2>/dev/null || true
    fi
    finish_stop "$pid" RabbitMQ "$STOP_TIMEOUT"
}

do_status() {
    local pid
    pid="$(our_pid)"
    if [ -z "$pid" ]; then
        echo "rabbitmq: not running"
        return 3
    fi
    if as_rmq 30 rabbitmqctl -q await_startup --timeout 10 >/dev/null 2>&1 \
            && port_open "$HOST" "$PORT"; then
        echo "rabbitmq: running pid=$pid node=$NODENAME addr=$HOST:$PORT version=$(rmq_version) erlang=$(erlang_version) dir=$DIR"
        return 0
    fi
    echo "rabbitmq: process $pid alive but node $NODENAME not ready on $HOST:$PORT"
    return 1
}

case "${1:-}" in
    install) do_install ;;
    start) do_start ;;
    stop) do_stop ;;
    restart) do_stop; do_start ;;
    status) do_status ;;
    url) echo "amqp://guest:guest@$HOST:$PORT/%2F" ;;
    ctl) shift; rmqctl "$@" ;;
    *) echo "usage: $0 {install|start|stop|restart|status|url|ctl ARGS...}" >&2; exit 2 ;;
esac
