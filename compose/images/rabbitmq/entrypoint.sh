#!/bin/sh
# Entrypoint of bridgeq/rabbitmq:3-debian (Debian's rabbitmq-server), shaped
# like the official rabbitmq image's: `rabbitmq-server` (the default command)
# runs one node in the foreground as the rabbitmq user, AMQP on every interface
# of the container (5672, or RABBITMQ_NODE_PORT), and `guest` may log in from
# outside the container (loopback_users = none), as in the official image.
# RABBITMQ_DEFAULT_USER / _PASS / _VHOST set the default user and vhost, as
# testcontainers' RabbitMqContainer passes them. Any other command runs as is.
set -eu
if [ "$#" -eq 0 ] || [ "$1" = rabbitmq-server ]; then
    conf=/etc/rabbitmq/rabbitmq.conf
    {
        echo "# Written by the bridgeq image entrypoint at container start."
        echo "loopback_users = none"
        # Small CI disks: do not block publishers at the default 50 MB free-disk alarm.
        echo "disk_free_limit.absolute = 10MB"
        [ -z "${RABBITMQ_DEFAULT_USER:-}" ] || echo "default_user = $RABBITMQ_DEFAULT_USER"
        [ -z "${RABBITMQ_DEFAULT_PASS:-}" ] || echo "default_pass = $RABBITMQ_DEFAULT_PASS"
        [ -z "${RABBITMQ_DEFAULT_VHOST:-}" ] || echo "default_vhost = $RABBITMQ_DEFAULT_VHOST"
    } >"$conf"
    chown -R rabbitmq:rabbitmq /var/lib/rabbitmq /var/log/rabbitmq
    export HOME=/var/lib/rabbitmq RABBITMQ_CONFIG_FILE="$conf" RABBITMQ_LOGS=-
    exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups /usr/lib/rabbitmq/bin/rabbitmq-server
fi
exec "$@"
