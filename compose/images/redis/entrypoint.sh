#!/bin/sh
# Entrypoint of bridgeq/redis:7-debian, shaped like the official redis image's:
# `redis-server ARGS` (the default command) runs Redis as the redis user in
# /data, listening on every interface of the container without protected
# mode, so that the published port answers from the host; ARGS come last and
# win (e.g. `redis-server --appendonly yes`). Any other command runs as is.
set -eu
if [ "${1#-}" != "$1" ]; then
    set -- redis-server "$@"
fi
if [ "$1" = redis-server ]; then
    shift
    mkdir -p /data
    chown redis:redis /data
    cd /data
    exec setpriv --reuid=redis --regid=redis --init-groups \
        redis-server --bind 0.0.0.0 --protected-mode no --dir /data "$@"
fi
exec "$@"
