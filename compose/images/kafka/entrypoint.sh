#!/bin/bash
# Entrypoint of bridgeq/kafka:4.4.0-debian: one KRaft node configured from the
# environment the way the official apache/kafka image is, so that the same
# container settings work for both images:
#
#   KAFKA_FOO_BAR=v        -> foo.bar=v   in server.properties
#   KAFKA_FOO__BAR=v       -> foo_bar=v   (double underscore)
#   KAFKA_FOO___BAR=v      -> foo-bar=v   (triple underscore)
#   KAFKA_ADVERTISED_LISTENERS  what clients are told to connect to: the
#                          host's mapped port (testcontainers picks it)
#   KAFKA_LISTENERS        default: the advertised ones on 0.0.0.0
#   CLUSTER_ID             storage is formatted with it on first start
#   KAFKA_HEAP_OPTS, KAFKA_JVM_PERFORMANCE_OPTS, KAFKA_OPTS  JVM flags
#
# With no KAFKA_* setting at all, a single combined broker+controller on
# 9092 (advertised as localhost:9092) and 9093, like apache/kafka's default.
set -euo pipefail
shopt -s extglob
KAFKA_HOME=/opt/kafka
CONF=$KAFKA_HOME/config/server.properties
JVM_ENV='^KAFKA_(HEAP_OPTS|JVM_PERFORMANCE_OPTS|OPTS|GC_LOG_OPTS|JMX_OPTS|JMX_PORT|JMX_HOSTNAME|LOG4J_OPTS|LOG4J_ROOT_LOGLEVEL|LOG4J_LOGGERS|TOOLS_LOG4J_LOGLEVEL|DEBUG|VERSION|HOME)$'

settings() { compgen -e | grep '^KAFKA_' | grep -Ev "$JVM_ENV" || true; }

if [ -z "$(settings)" ]; then
    export KAFKA_NODE_ID=1 KAFKA_PROCESS_ROLES=broker,controller \
        KAFKA_LISTENERS=PLAINTEXT://:9092,CONTROLLER://:9093 \
        KAFKA_ADVERTISED_LISTENERS=PLAINTEXT://localhost:9092 \
        KAFKA_CONTROLLER_LISTENER_NAMES=CONTROLLER \
        KAFKA_CONTROLLER_QUORUM_VOTERS=1@localhost:9093 \
        KAFKA_LISTENER_SECURITY_PROTOCOL_MAP=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT \
        KAFKA_LOG_DIRS=/var/lib/kafka/data \
        KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR=1 KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR=1 \
        KAFKA_TRANSACTION_STATE_LOG_MIN_ISR=1 KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR=1 \
        KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR=1
fi
# As apache/kafka does: listen where advertised, on every interface.
if [ -z "${KAFKA_LISTENERS:-}" ] && [ -n "${KAFKA_ADVERTISED_LISTENERS:-}" ]; then
    export KAFKA_LISTENERS="${KAFKA_ADVERTISED_LISTENERS//:\/\/+([^:]):/://0.0.0.0:}"
fi
: "${KAFKA_LOG_DIRS:=/var/lib/kafka/data}"
export KAFKA_LOG_DIRS

mkdir -p "$(dirname "$CONF")"
{
    echo "# Written by the bridgeq image entrypoint from KAFKA_* at container start."
    for name in $(settings); do
        key="${name#KAFKA_}"
        key="${key//___/-}"
        key="${key//__/$'\x01'}"
        key="${key//_/.}"
        key="${key//$'\x01'/_}"
        printf '%s=%s\n' "${key,,}" "${!name}"
    done
} >"$CONF"

IFS=, read -ra log_dirs <<<"$KAFKA_LOG_DIRS"
mkdir -p "${log_dirs[@]}"
if [ ! -f "${log_dirs[0]}/meta.properties" ]; then
    cluster_id="${CLUSTER_ID:-$(java -cp "$KAFKA_HOME/libs/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)}"
    standalone=()
    grep -q '^controller\.quorum\.voters=' "$CONF" || standalone=(--standalone)
    java -cp "$KAFKA_HOME/libs/*" -Dlog4j2.configurationFile="$KAFKA_HOME/config/log4j2.properties" \
        kafka.tools.StorageTool format --ignore-formatted -t "$cluster_id" -c "$CONF" "${standalone[@]}"
fi

# shellcheck disable=SC2086  # JVM flags are lists
exec java ${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m} \
    ${KAFKA_JVM_PERFORMANCE_OPTS:--XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -Djava.awt.headless=true} \
    ${KAFKA_OPTS:-} \
    -Dlog4j2.configurationFile="$KAFKA_HOME/config/log4j2.properties" -Dkafka.logs.dir="$KAFKA_HOME/logs" \
    -cp "$KAFKA_HOME/libs/*" kafka.Kafka "$CONF"
