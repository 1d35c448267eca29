# shellcheck shell=bash
# Shared helpers for compose/native/*.sh. Sourced, never run.
# All progress output goes to stderr so that callers can capture stdout
# (up.sh prints only `export` lines there).

BRIDGEQ_STATE_DIR="${BRIDGEQ_STATE_DIR:-/tmp/bridgeq-brokers}"
BRIDGEQ_CACHE_DIR="${BRIDGEQ_CACHE_DIR:-${HOME:-/root}/.cache/bridgeq}"

log() { printf '[bridgeq-%s] %s\n' "${BQ_NAME:-native}" "$*" >&2; }
die() { printf '[bridgeq-%s] ERROR: %s\n' "${BQ_NAME:-native}" "$*" >&2; exit 1; }

# Seconds since the epoch with sub-second precision (for start-time reports).
now() { date +%s.%N; }
elapsed_since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

need_root() {
    [ "$(id -u)" = 0 ] || die "installing packages needs root (run as root or with sudo)"
}

# apt_install PKG... : install Debian packages non-interactively.
# Runs `apt-get update` at most once per process, and only when needed
# (empty package lists, no install candidate, or a failed install).
_BQ_APT_UPDATED=0
_apt_update_once() {
    if [ "$_BQ_APT_UPDATED" = 0 ]; then
        log "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq -o DPkg::Lock::Timeout=300 >&2 || die "apt-get update failed"
        _BQ_APT_UPDATED=1
    fi
}
apt_install() {
    need_root
    local pkg missing_candidate=0
    for pkg in "$@"; do
        if ! grep -q 'Candidate: [^(]' < <(apt-cache policy "$pkg" 2>/dev/null); then
            missing_candidate=1
        fi
    done
    [ "$missing_candidate" = 1 ] && _apt_update_once
    log "apt-get install $*"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 \
            -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@" >&2; then
        [ "$_BQ_APT_UPDATED" = 1 ] && die "apt-get install $* failed"
        _apt_update_once
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 \
            -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@" >&2 \
            || die "apt-get install $* failed"
    fi
}

# pid_alive PID : true when the process exists (and is not a zombie).
pid_alive() {
    local pid="$1" state
    [ -n "$pid" ] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    state="$(ps -o stat= -p "$pid" 2>/dev/null || true)"
    case "$state" in Z*|"") return 1 ;; esac
    return 0
}

# pid_from_file FILE [CMDLINE_PATTERN] : print the pid stored in FILE when that
# process is alive (and its command line matches the pattern); else nothing.
pid_from_file() {
    local file="$1" pattern="${2:-}" pid
    [ -s "$file" ] || return 0
    pid="$(tr -dc '0-9' <"$file")"
    pid_alive "$pid" || return 0
    if [ -n "$pattern" ]; then
        grep -q -- "$pattern" < <(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 0
    fi
    echo "$pid"
}

# port_open HOST PORT : true when something accepts TCP connections there.
port_open() {
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

# port_owner PORT : print "pid=... cmd=..." of the listener on PORT (best effort).
port_owner() {
    ss -ltnpH "sport = :$1" 2>/dev/null | sed -n 's/.*users:(("\([^"]*\)",pid=\([0-9]*\).*/pid=\2 cmd=\1/p' | head -1 || true
}

# wait_for SECONDS DESCRIPTION COMMAND... : poll COMMAND every 0.2 s until it
# succeeds; fail with a clear message after SECONDS.
wait_for() {
    local timeout="$1" what="$2"; shift 2
    local deadline=$((SECONDS + timeout))
    while ! "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "timed out after ${timeout}s waiting for $what"
            return 1
        fi
        sleep 0.2
    done
}

# wait_pid_exit PID SECONDS : true when PID is gone within SECONDS.
wait_pid_exit() {
    local pid="$1" deadline=$((SECONDS + $2))
    while pid_alive "$pid"; do
        [ "$SECONDS" -ge "$deadline" ] && return 1
        sleep 0.2
    done
}

# After a broker's own polite stop: wait up to $3 s, then SIGKILL; drop the pid file; log.
# finish_stop PID LABEL TIMEOUT
finish_stop() {
    local pid="$1" label="$2" timeout="$3"
    if ! wait_pid_exit "$pid" "$timeout"; then
        log "$label (pid $pid) still running after ${timeout}s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        wait_pid_exit "$pid" 10 || die "could not stop $label (pid $pid)"
    fi
    rm -f "$PIDFILE"
    log "stopped (was pid $pid)"
}

usage_exit() {
    echo "usage: $0 {install|start|stop|restart|status|url}" >&2
    exit 2
}
