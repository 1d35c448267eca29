"""Broker URLs: parsed once into an immutable value that never shows its password."""

from __future__ import annotations

import os
from typing import NamedTuple
from urllib.parse import parse_qsl, quote, unquote

from bridgeq.errors import ConfigError

ENV_URL = "BRIDGEQ_URL"
DEFAULT_URL = "memory://"
REDACTED = "***"


class Host(NamedTuple):
    """One ``host[:port]`` of a URL; ``port`` is None when not given."""

    name: str
    port: int | None


class BrokerURL(NamedTuple):
    """A parsed broker URL. ``repr`` and ``str`` hide the password."""

    scheme: str
    username: str | None = None
    password: str | None = None
    hosts: tuple[Host, ...] = ()
    path: str = ""
    query: tuple[tuple[str, str], ...] = ()

    @property
    def options(self) -> dict[str, str]:
        """The query string as a dict (the last value of a repeated name wins)."""
        return dict(self.query)

    def render(self, hide_password: bool = True) -> str:
        """The URL as text, with the password as ``***`` unless asked otherwise."""
        auth = ""
        if self.username is not None or self.password is not None:
            auth = quote(self.username or "", safe="")
            if self.password is not None:
                auth += ":" + (REDACTED if hide_password else quote(self.password, safe=""))
            auth += "@"
        hosts = ",".join(_render_host(h) for h in self.hosts)
        query = "&".join(f"{quote(k, safe='')}={quote(v, safe='/,')}" for k, v in self.query)
        path = "/" + quote(self.path, safe="") if self.path else ""
        return f"{self.scheme}://{auth}{hosts}{path}" + (f"?{query}" if query else "")

    def __str__(self) -> str:
        return self.render()

    def __repr__(self) -> str:
        return f"BrokerURL({self.render()!r})"


def _render_host(host: Host) -> str:
    name = f"[{host.name}]" if ":" in host.name else host.name
    return name if host.port is None else f"{name}:{host.port}"


def resolve(url: str | BrokerURL | None) -> BrokerURL:
    """``url`` parsed; None means ``$BRIDGEQ_URL``, then ``memory://``."""
    if isinstance(url, BrokerURL):
        return url
    if url is None:
        url = os.environ.get(ENV_URL) or DEFAULT_URL
    return parse(url)


def parse(text: str) -> BrokerURL:
    """Parse ``scheme://[user[:password]@]host[:port][,host[:port]...][/path][?k=v&...]``.

    Errors are :class:`ConfigError` and never echo the password.
    """
    if not isinstance(text, str):
        raise ConfigError(f"broker URL must be a str, not {type(text).__name__}")
    if "://" not in text:
        raise ConfigError("broker URL must look like scheme://host, e.g. redis://localhost:6379/0")
    scheme, _, rest = text.partition("://")
    scheme = scheme.lower()
    if not scheme or not scheme.replace("+", "").replace("-", "").replace(".", "").isalnum() or not scheme[0].isalpha():
        raise ConfigError(f"broker URL has an invalid scheme {scheme[:30]!r}")
    if any(ch in rest for ch in "\r\n\t\x00 "):
        raise ConfigError("broker URL must not contain whitespace or control characters")
    rest, _, fragment = rest.partition("#")
    if fragment:
        raise ConfigError("broker URL must not have a #fragment")
    netloc_path, _, query_text = rest.partition("?")
    netloc, slash, path = netloc_path.partition("/")
    userinfo, at, hostlist = netloc.rpartition("@")
    username = password = None
    if at:
        user_text, colon, password_text = userinfo.partition(":")
        username = unquote(user_text) if user_text else None
        password = unquote(password_text) if colon else None
    # Echo host text in errors only when no userinfo could have spilled into it.
    echo = "@" not in text
    hosts = tuple(_parse_host(part, echo) for part in hostlist.split(",")) if hostlist else ()
    try:
        query = tuple(parse_qsl(query_text, keep_blank_values=True, strict_parsing=bool(query_text)))
    except ValueError:
        raise ConfigError("broker URL has a malformed query string; use ?name=value&name=value") from None
    return BrokerURL(scheme, username, password, hosts, unquote(path) if slash else "", query)


def _parse_host(part: str, echo: bool) -> Host:
    shown = f" {part[:60]!r}" if echo else ""
    if not part:
        raise ConfigError("broker URL has an empty host in its host list")
    if part.startswith("["):
        name, bracket, port_text = part[1:].partition("]")
        if not bracket or (port_text and not port_text.startswith(":")):
            raise ConfigError(f"broker URL has a malformed IPv6 host{shown}")
        port_text = port_text[1:]
        has_port = bool(port_text) or part.endswith(":")
    else:
        name, colon, port_text = part.partition(":")
        has_port = bool(colon)
        if ":" in port_text:
            raise ConfigError(f"broker URL host{shown} has more than one ':'; write IPv6 addresses in [brackets]")
    if not name or not all(ch.isalnum() or ch in "-._:%" for ch in name):
        raise ConfigError(f"broker URL has an invalid host name{shown}")
    if not has_port:
        return Host(name, None)
    if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:  # not '²' nor '٣'
        raise ConfigError(f"broker URL host{shown} has an invalid port (must be 1-65535)")
    return Host(name, int(port_text))
