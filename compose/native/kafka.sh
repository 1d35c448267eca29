#!/usr/bin/env bash
# Apache Kafka ${BRIDGEQ_KAFKA_VERSION:-4.4.0} in KRaft mode (one combined
# broker+controller, node.id=1) on 127.0.0.1:${BRIDGEQ_KAFKA_PORT:-9092},
# jars from Maven Central, run with the machine's `java`.
#
#   kafka.sh install   fetch the jars (compose/native/kafka/pom.xml) into
#                      ${BRIDGEQ_CACHE_DIR:-~/.cache/bridgeq}/kafka-VERSION/libs (skipped when there)
#   kafka.sh start     install if needed, format storage once, start, wait until the
#                      broker answers an ApiVersions request (no-op if running)
#   kafka.sh stop      SIGTERM (controlled shutdown), bounded wait, SIGKILL as a last resort
#   kafka.sh restart   stop + start: a new JVM, topics, records and group offsets kept
#   kafka.sh status    exit 0 when up and answering, 3 when not running
#   kafka.sh url       print kafka://127.0.0.1:PORT
#
# State (config, data, log, pid) lives in ${BRIDGEQ_STATE_DIR:-/tmp/bridgeq-brokers}/kafka.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BQ_NAME=kafka
# shellcheck source=lib.sh
. "$HERE/lib.sh"

VERSION="${BRIDGEQ_KAFKA_VERSION:-4.4.0}"
HOST=127.0.0.1
PORT="${BRIDGEQ_KAFKA_PORT:-9092}"
CONTROLLER_PORT="${BRIDGEQ_KAFKA_CONTROLLER_PORT:-9093}"
AUTO_CREATE="${BRIDGEQ_KAFKA_AUTO_CREATE_TOPICS:-false}"
HEAP_OPTS="${BRIDGEQ_KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}"
START_TIMEOUT="${BRIDGEQ_KAFKA_START_TIMEOUT:-60}"
STOP_TIMEOUT="${BRIDGEQ_KAFKA_STOP_TIMEOUT:-60}"
POM="$HERE/kafka/pom.xml"
LIBS="$BRIDGEQ_CACHE_DIR/kafka-$VERSION/libs"
DIR="$BRIDGEQ_STATE_DIR/kafka"
DATA="$DIR/data"
CONF="$DIR/server.properties"
LOG4J="$DIR/log4j2.properties"
PIDFILE="$DIR/kafka.pid"
LOGFILE="$DIR/kafka.log"

java_cp() { java -cp "$LIBS/*" "$@"; }
our_pid() { pid_from_file "$PIDFILE" kafka.Kafka; }

do_install() {
    command -v java >/dev/null || apt_install openjdk-17-jre-headless
    if [ -f "$LIBS/.complete" ] && [ -f "$LIBS/kafka_2.13-$VERSION.jar" ]; then
        log "Kafka $VERSION jars already in $LIBS"
        return 0
    fi
    command -v mvn >/dev/null || apt_install maven
    local t0 tmp mvnlog
    t0="$(now)"
    mkdir -p "$(dirname "$LIBS")"
    tmp="$(mktemp -d "$(dirname "$LIBS")/libs.tmp.XXXXXX")"
    mvnlog="$tmp.mvn.log"
    log "fetching Kafka $VERSION jars from Maven Central into $LIBS"
    if ! timeout 600 mvn -B -q -f "$POM" -Dkafka.version="$VERSION" \
            dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" \
            >"$mvnlog" 2>&1; then
        tail -n 40 "$mvnlog" >&2
        rm -rf "$tmp"
        die "mvn could not fetch Kafka $VERSION (full log: $mvnlog)"
    fi
    [ -f "$tmp/kafka_2.13-$VERSION.jar" ] || die "kafka_2.13-$VERSION.jar missing after mvn (log: $mvnlog)"
    touch "$tmp/.complete"
    rm -rf "$LIBS"
    mv "$tmp" "$LIBS"
    rm -f "$mvnlog"
    log "fetched $(find "$LIBS" -name '*.jar' | wc -l) jars ($(du -sh "$LIBS" | cut -f1)) in $(elapsed_since "$t0")s"
}

write_config() {
    mkdir -p "$DATA"
    cat >"$CONF" <<EOF
# Written by compose/native/kafka.sh; rewritten on every start.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=$HOST:$CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CONTROLLER_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$DATA
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=$AUTO_CREATE
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# Let tests use short session timeouts (consumer-crash redelivery) without waiting 6 s+.
group.min.session.timeout.ms=1000
num.io.threads=2
num.network.threads=2
num.recovery.threads.per.data.dir=1
log.retention.hours=168
EOF
    cat >"$LOG4J" <<'EOF'
# Written by compose/native/kafka.sh: everything to stdout, which goes to kafka.log.
status = warn
# Kafka logs its own shutdown from its shutdown hook; keep log4j alive for it.
shutdownHook = disable
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = STDOUT
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
EOF
}

format_storage_once() {
    [ -f "$DATA/meta.properties" ] && return 0
    local cluster_id
    if [ -s "$DIR/cluster.id" ]; then
        cluster_id="$(cat "$DIR/cluster.id")"
    else
        cluster_id="$(java_cp kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)"
        [ -n "$cluster_id" ] || die "kafka.tools.StorageTool random-uuid produced no id"
        echo "$cluster_id" >"$DIR/cluster.id"
    fi
    log "formatting storage in $DATA (cluster id $cluster_id)"
    timeout 120 java -cp "$LIBS/*" -Dlog4j2.configurationFile="$LOG4J" \
        kafka.tools.StorageTool format -t "$cluster_id" -c "$CONF" --standalone >>"$LOGFILE" 2>&1 \
        || { tail -n 20 "$LOGFILE" >&2; die "kafka storage format failed; see $LOGFILE"; }
}

# api_versions_ok : send a Kafka ApiVersions v0 request over /dev/tcp and
# check the answer (matching correlation id, error_code 0). No client needed.
api_versions_ok() {
    # shellcheck disable=SC2016  # the inner script expands its own $0 $1
    timeout 5 bash -c '
        exec 3<>"/dev/tcp/$0/$1" || exit 1
        # size=12 | api_key=18 ApiVersions | version=0 | correlation_id=7 | client_id="bq"
        printf "\x00\x00\x00\x0c\x00\x12\x00\x00\x00\x00\x00\x07\x00\x02bq" >&3
        reply="$(head -c 10 <&3 | od -An -tx1 | tr -d " \n")"
        # 4-byte size, correlation id 7, error code 0
        [ "${reply:8:12}" = "000000070000" ]
    ' "$HOST" "$PORT" 2>/dev/null
}

# started_logged OFFSET : the broker logged its startup after byte OFFSET of the
# log (the ApiVersions check is separate).
started_logged() {
    # grep reads a process substitution, not a pipe: with pipefail, `tail | grep -q`
    # fails on a big log (grep exits at the first match, tail dies of SIGPIPE).
    grep -q "Kafka Server started" < <(tail -c "+$(( $1 + 1 ))" "$LOGFILE" 2>/dev/null)
}

await_ready() {
    local pid="$1" offset="$2" deadline=$((SECONDS + START_TIMEOUT))
    while :; do
        if ! pid_alive "$pid"; then
            tail -n 30 "$LOGFILE" >&2 2>/dev/null || true
            die "Kafka (pid $pid) exited during startup; see $LOGFILE"
        fi
        if started_logged "$offset" && api_versions_ok; then
            return 0
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            tail -n 30 "$LOGFILE" >&2 2>/dev/null || true
            die "Kafka (pid $pid) did not answer on $HOST:$PORT within ${START_TIMEOUT}s; see $LOGFILE"
        fi
        sleep 0.2
    done
}

do_start() {
    local t0 pid offset
    t0="$(now)"
    [ -f "$LIBS/.complete" ] || do_install
    command -v java >/dev/null || do_install
    pid="$(our_pid)"
    if [ -n "$pid" ]; then
        await_ready "$pid" 0
        log "already running (pid $pid) on $HOST:$PORT"
        return 0
    fi
    local p
    for p in "$PORT" "$CONTROLLER_PORT"; do
        if port_open "$HOST" "$p"; then
            die "port $p is already in use by another process ($(port_owner "$p")); stop it or set BRIDGEQ_KAFKA_PORT / BRIDGEQ_KAFKA_CONTROLLER_PORT"
        fi
    done
    write_config
    format_storage_once
    # Keep the log bounded across many restarts: one old generation.
    if [ -f "$LOGFILE" ] && [ "$(stat -c %s "$LOGFILE")" -gt $((20 * 1024 * 1024)) ]; then
        mv -f "$LOGFILE" "$LOGFILE.1"
    fi
    touch "$LOGFILE"
    offset="$(stat -c %s "$LOGFILE")"
    rm -f "$PIDFILE"
    # shellcheck disable=SC2086  # HEAP_OPTS is a list of JVM flags
    setsid java $HEAP_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$LOG4J" -Dkafka.logs.dir="$DIR" \
        -cp "$LIBS/*" kafka.Kafka "$CONF" >>"$LOGFILE" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$PIDFILE"
    await_ready "$pid" "$offset"
    log "ready on $HOST:$PORT (pid $pid, Kafka $VERSION KRaft, data $DATA) in $(elapsed_since "$t0")s"
}

do_stop() {
    local pid
    pid="$(our_pid)"
    if [ -z "$pid" ]; then
        log "not running"
        rm -f "$PIDFILE"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    finish_stop "$pid" Kafka "$STOP_TIMEOUT"  # a SIGKILLed Kafka recovers its logs on the next start
}

do_status() {
    local pid
    pid="$(our_pid)"
    if [ -z "$pid" ]; then
        echo "kafka: not running"
        return 3
    fi
    if api_versions_ok; then
        echo "kafka: running pid=$pid addr=$HOST:$PORT controller=$HOST:$CONTROLLER_PORT version=$VERSION dir=$DIR"
        return 0
    fi
    echo "kafka: process $pid alive but not answering on $HOST:$PORT"
    return 1
}

case "${1:-}" in
    install) do_install ;;
    start) do_start ;;
    stop) do_stop ;;
    restart) do_stop; do_start ;;
    status) do_status ;;
    url) echo "kafka://$HOST:$PORT" ;;
    *) usage_exit ;;
esac
