"""Settings every kafka-python client of one broker shares: servers, timeouts, TLS, SASL, and the
password kept out of reprs and logs."""

from __future__ import annotations

import logging
import socket
import ssl
from typing import Any, TypeVar

from bridgeq.errors import ConfigError
from bridgeq.spi import BrokerURL
from bridgeq_kafka.options import KafkaOptions

DEFAULT_PORT = 9092
Client = TypeVar("Client")


def raise_if_certificate_refused(config: dict[str, Any]) -> None:
    """One TLS handshake with the first bootstrap server, as the client makes it; ConfigError if refused."""
    host, _, port = config["bootstrap_servers"][0].rpartition(":")
    context = ssl.create_default_context(cafile=config["ssl_cafile"])
    context.check_hostname = bool(config["ssl_check_hostname"])
    if config["ssl_certfile"]:
        context.load_cert_chain(config["ssl_certfile"], config["ssl_keyfile"])
    try:
        with (
            socket.create_connection((host.strip("[]"), int(port)), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname=host.strip("[]")),
        ):
            return
    except ssl.SSLCertVerificationError as exc:
        raise ConfigError(f"TLS: the certificate of {host}:{port} is not trusted: {exc.verify_message}") from None
    except OSError:
        return  # not a certificate problem: the original ConnectionLost stands


def honour_retry_backoff(client: Client, config: dict[str, Any]) -> Client:
    """``client`` (a producer, consumer or admin client of ``config``), its metadata made to keep
    ``retry_backoff_ms``. kafka-python 3.0 builds a client's ClusterMetadata without it, so the 100 ms
    default applies: a topic's first metadata request (the first publish to it, a consumer's first
    join) waited out 100 ms from the bootstrap's request, whatever the setting."""
    cluster = getattr(getattr(client, "_manager", None), "cluster", None) or getattr(client, "_metadata", None)
    settings = getattr(cluster, "config", None)
    if isinstance(settings, dict) and "retry_backoff_ms" in settings:
        settings["retry_backoff_ms"] = config["retry_backoff_ms"]
    return client


def client_config(url: BrokerURL, options: KafkaOptions) -> dict[str, Any]:
    """Settings every client shares: brokers, timeouts and security (with the password)."""
    if not url.hosts:
        raise ConfigError("kafka:// URLs need at least one host[:port], e.g. kafka://localhost:9092")
    if url.path:
        raise ConfigError("kafka:// URLs take no path; topics are named in calls")
    servers = [
        f"[{h.name}]:{h.port or DEFAULT_PORT}" if ":" in h.name else f"{h.name}:{h.port or DEFAULT_PORT}"
        for h in url.hosts
    ]
    has_credentials = url.username is not None or url.password is not None
    protocol = options.security_protocol or ("SASL_SSL" if has_credentials else "PLAINTEXT")
    if protocol.startswith("SASL_") != has_credentials:
        raise ConfigError(
            f"security_protocol {protocol} needs user:password in the URL"
            if not has_credentials
            else f"credentials in the URL need security_protocol SASL_SSL or SASL_PLAINTEXT, not {protocol}"
        )
    config: dict[str, Any] = {
        "bootstrap_servers": servers,
        "client_id": options.client_id,
        "request_timeout_ms": options.timeout_ms,
        "retry_backoff_ms": options.retry_backoff_ms,
        "bootstrap_timeout_ms": options.timeout_ms,
        "security_protocol": protocol,
        "ssl_check_hostname": options.ssl_check_hostname,
        "ssl_cafile": options.ssl_cafile,
        "ssl_certfile": options.ssl_certfile,
        "ssl_keyfile": options.ssl_keyfile,
    }
    if has_credentials:
        config["sasl_mechanism"] = options.sasl_mechanism or "PLAIN"
        config["sasl_plain_username"] = url.username or ""
        config["sasl_plain_password"] = Secret(url.password or "")
        if url.password:
            _redact.add(url.password)
    return config


class _Redactor(logging.Filter):
    """kafka-python logs its requests at DEBUG, SASL/PLAIN's ``auth_bytes`` (the password) included."""

    LOGGERS = ("kafka.protocol.parser", "kafka.net.connection", "kafka.net.transport", "kafka.conn")

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def add(self, password: str) -> None:
        if not self.secrets:
            for name in self.LOGGERS:
                logging.getLogger(name).addFilter(self)
        self.secrets.update({password, repr(password.encode())[2:-1]})

    def filter(self, record: logging.LogRecord) -> bool:  # runs only for records a logger emits
        text = record.getMessage()
        if any(secret in text for secret in self.secrets):
            for secret in self.secrets:
                text = text.replace(secret, "***")
            record.msg, record.args = text, None
        return True


_redact = _Redactor()


class Secret(str):
    """The password as kafka-python needs it (a str), shown as ``***``: its clients log their settings."""

    def __repr__(self) -> str:
        return "'***'"

    def __str__(self) -> str:
        return "***"
