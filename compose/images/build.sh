#!/usr/bin/env bash
# Build stand-in broker images from Debian packages, for hosts that have a
# container engine (podman) but reach no container registry:
#
#   bridgeq/redis:7-debian        redis-server (Debian 12)
#   bridgeq/rabbitmq:3-debian     rabbitmq-server (Debian 12)
#   bridgeq/kafka:4.4.0-debian    openjdk-17-jre-headless + Kafka's jars from Maven Central
#
#   bash compose/images/build.sh [redis] [rabbitmq] [kafka] [--force]
#
# Each image: a `debootstrap --variant=minbase bookworm` root (made once, kept in
# ${BRIDGEQ_CACHE_DIR:-~/.cache/bridgeq}/images/), copied, `apt-get install
# --no-install-recommends` inside it, plus the entrypoint from this folder,
# then `tar | podman import`. An image already in podman's store with the same
# recipe (label org.bridgeq.recipe: a hash of this folder and the Kafka version)
# is kept; --force rebuilds. The entrypoints behave like the official images'
# for what the test fixtures use (see each entrypoint.sh), so the same
# container settings work for `redis:7`, `rabbitmq:3-management`, `apache/kafka:4.4.0`.
#
# Progress and timings go to stderr; stdout carries only the export lines
# naming the images (BRIDGEQ_TEST_*_IMAGE). Needs root.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NATIVE="$HERE/../native"
BQ_NAME=images
# shellcheck source-path=SCRIPTDIR source=../native/lib.sh
. "$NATIVE/lib.sh"

SUITE=bookworm
MIRROR="${BRIDGEQ_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SECURITY_MIRROR="${BRIDGEQ_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
KAFKA_VERSION="${BRIDGEQ_KAFKA_VERSION:-4.4.0}"
CACHE="$BRIDGEQ_CACHE_DIR/images"
BASE="$CACHE/$SUITE-minbase"

declare -A IMAGE=(
    [redis]=localhost/bridgeq/redis:7-debian
    [rabbitmq]=localhost/bridgeq/rabbitmq:3-debian
    [kafka]="localhost/bridgeq/kafka:$KAFKA_VERSION-debian"
)
declare -A PACKAGES=(
    [redis]="redis-server"
    [rabbitmq]="rabbitmq-server"
    [kafka]="openjdk-17-jre-headless"
)
declare -A PORT=([redis]=6379 [rabbitmq]=5672 [kafka]=9092)
declare -A CMD=(
    [redis]='["redis-server"]'
    [rabbitmq]='["rabbitmq-server"]'
    [kafka]='["/usr/local/bin/bridgeq-kafka"]'
)

force=0
wanted=()
for a in "$@"; do
    case "$a" in
        --force) force=1 ;;
        redis|rabbitmq|kafka) wanted+=("$a") ;;
        *) die "unknown argument '$a' (usage: build.sh [redis] [rabbitmq] [kafka] [--force])" ;;
    esac
done
[ "${#wanted[@]}" -gt 0 ] || wanted=(redis rabbitmq kafka)

# recipe B : a hash of what image B is made from; a changed recipe rebuilds it.
recipe() {
    { cat "$HERE/build.sh" "$HERE/$1"/*; echo "$SUITE ${PACKAGES[$1]}"
      [ "$1" != kafka ] || { echo "$KAFKA_VERSION"; cat "$NATIVE/kafka/pom.xml"; }
    } | sha256sum | cut -c1-16
}
image_recipe() { podman image inspect --format '{{index .Labels "org.bridgeq.recipe"}}' "$1" 2>/dev/null || true; }

# Bind mounts made for the chroot, undone on any exit.
MOUNTS=()
WORK=""
cleanup() {
    local m
    for m in "${MOUNTS[@]}"; do umount -l "$m" 2>/dev/null || true; done
    MOUNTS=()
    [ -z "$WORK" ] || rm -rf "$WORK"
}
trap cleanup EXIT

in_root() { chroot "$1" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive "${@:2}"; }

# kill_root_procs ROOT : end processes left running inside ROOT (a postinst
# that started a daemon despite policy-rc.d). Only processes whose root is ROOT.
kill_root_procs() {
    local p root
    for p in /proc/[0-9]*; do
        root="$(readlink "$p/root" 2>/dev/null || true)"
        if [ "$root" = "$1" ]; then
            log "killing pid ${p#/proc/} left running in the build root"
            kill -KILL "${p#/proc/}" 2>/dev/null || true
        fi
    done
}

apt_in_root() {
    local root="$1"; shift
    in_root "$root" apt-get -qq -o DPkg::Lock::Timeout=120 -o Dpkg::Use-Pty=0 "$@" >&2
}

make_base() {
    if [ -f "$BASE/.complete" ]; then
        log "base root cached in $BASE"
        return 0
    fi
    command -v debootstrap >/dev/null || apt_install debootstrap
    local t0 tmp
    t0="$(now)"
    mkdir -p "$CACHE"
    rm -rf "$BASE" "$BASE.tmp"
    tmp="$BASE.tmp"
    log "debootstrap --variant=minbase $SUITE from $MIRROR"
    debootstrap --variant=minbase "$SUITE" "$tmp" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
        || { tail -n 20 "$CACHE/debootstrap.log" >&2; die "debootstrap failed (log: $CACHE/debootstrap.log)"; }
    cat >"$tmp/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY_MIRROR $SUITE-security main
EOF
    # No service starts inside a build root: its ports would be the host's.
    printf '#!/bin/sh\nexit 101\n' >"$tmp/usr/sbin/policy-rc.d"
    chmod 755 "$tmp/usr/sbin/policy-rc.d"
    cp /etc/resolv.conf "$tmp/etc/resolv.conf"
    apt_in_root "$tmp" update
    rm -f "$tmp/var/cache/apt/archives/"*.deb
    touch "$tmp/.complete"
    mv "$tmp" "$BASE"
    BASE_SECONDS="$(elapsed_since "$t0")"
    log "base root ($(du -sh "$BASE" | cut -f1)) in ${BASE_SECONDS}s"
}

build_one() {
    local b="$1" name="${IMAGE[$1]}" sum="$2" root t0 t_apt t_imp
    t0="$(now)"
    WORK="$(mktemp -d "$CACHE/build-$b.XXXXXX")"
    root="$WORK/root"
    cp -a "$BASE" "$root"
    rm -f "$root/.complete"
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    mount -t proc proc "$root/proc" && MOUNTS+=("$root/proc")
    log "$b: apt-get install --no-install-recommends ${PACKAGES[$b]}"
    # shellcheck disable=SC2086  # a list of packages
    if ! apt_in_root "$root" install -y --no-install-recommends ${PACKAGES[$b]}; then
        log "$b: install failed; refreshing the package lists once"
        apt_in_root "$root" update
        # shellcheck disable=SC2086
        apt_in_root "$root" install -y --no-install-recommends ${PACKAGES[$b]} || die "$b: apt-get install failed"
    fi
    kill_root_procs "$(readlink -f "$root")"
    t_apt="$(elapsed_since "$t0")"

    case "$b" in
        redis)
            install -m 755 "$HERE/redis/entrypoint.sh" "$root/usr/local/bin/docker-entrypoint.sh"
            mkdir -p "$root/data"
            ;;
        rabbitmq)
            install -m 755 "$HERE/rabbitmq/entrypoint.sh" "$root/usr/local/bin/docker-entrypoint.sh"
            # The node's cookie and data are made at first start, per container.
            rm -rf "$root/var/lib/rabbitmq/mnesia" "$root/var/lib/rabbitmq/.erlang.cookie"
            ;;
        kafka)
            # The jars: compose/native/kafka.sh resolves them with Maven into the cache.
            BRIDGEQ_KAFKA_VERSION="$KAFKA_VERSION" bash "$NATIVE/kafka.sh" install
            mkdir -p "$root/opt/kafka/config" "$root/opt/kafka/logs" "$root/var/lib/kafka/data"
            cp -a "$BRIDGEQ_CACHE_DIR/kafka-$KAFKA_VERSION/libs" "$root/opt/kafka/libs"
            rm -f "$root/opt/kafka/libs/.complete"
            install -m 644 "$HERE/kafka/log4j2.properties" "$root/opt/kafka/config/log4j2.properties"
            install -m 755 "$HERE/kafka/entrypoint.sh" "$root/usr/local/bin/bridgeq-kafka"
            ;;
    esac

    cleanup_mounts_of "$root"
    in_root "$root" apt-get clean
    rm -rf "$root/var/lib/apt/lists/"* "$root/var/log/"*.log "$root/var/log/apt/"* "$root/tmp/"* \
        "$root/etc/resolv.conf" "$root/usr/sbin/policy-rc.d"
    : >"$root/etc/hostname"

    t0="$(now)"
    local entry=() changes=()
    [ "$b" = kafka ] || entry=(--change 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]')
    changes=(
        --change "CMD ${CMD[$b]}"
        --change "EXPOSE ${PORT[$b]}"
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
        --change "LABEL org.bridgeq.recipe=$sum"
    )
    [ "$b" != redis ] || changes+=(--change 'WORKDIR /data')
    podman rmi -f "$name" >/dev/null 2>&1 || true
    tar --numeric-owner -C "$root" -c . | podman import "${entry[@]}" "${changes[@]}" - "$name" >/dev/null
    t_imp="$(elapsed_since "$t0")"
    rm -rf "$WORK"
    WORK=""
    log "$b: built $name ($(podman image inspect --format '{{.Size}}' "$name" | awk '{printf "%.0f MB", $1/1e6}')): apt ${t_apt}s, import ${t_imp}s"
}

cleanup_mounts_of() {
    local keep=() m
    for m in "${MOUNTS[@]}"; do
        if [[ "$m" == "$1"/* ]]; then umount "$m" || umount -l "$m"; else keep+=("$m"); fi
    done
    MOUNTS=("${keep[@]}")
}

need_root
command -v podman >/dev/null || die "podman is not installed; run compose/podman/setup.sh first"
t_all="$(now)"
BASE_SECONDS=""
built=()
for b in "${wanted[@]}"; do
    sum="$(recipe "$b")"
    if [ "$force" = 0 ] && [ "$(image_recipe "${IMAGE[$b]}")" = "$sum" ]; then
        log "$b: ${IMAGE[$b]} is up to date (recipe $sum)"
        continue
    fi
    make_base
    t_one="$(now)"
    build_one "$b" "$sum"
    log "$b: image in $(elapsed_since "$t_one")s"
    built+=("$b")
done
log "images ready in $(elapsed_since "$t_all")s (built: ${built[*]:-none}${BASE_SECONDS:+; debootstrap ${BASE_SECONDS}s})"
for b in "${wanted[@]}"; do
    printf "export BRIDGEQ_TEST_%s_IMAGE=%s\n" "$(tr '[:lower:]' '[:upper:]' <<<"$b")" "${IMAGE[$b]}"
done
