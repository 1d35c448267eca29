"""URL scheme -> backend class, through the ``bridgeq.backends`` entry-point group.

Built-in backends register exactly as a third party's would. ``register`` and
``unregister`` let tests add a backend in process.
"""

from __future__ import annotations

import difflib
from importlib.metadata import entry_points

from bridgeq.errors import ConfigError
from bridgeq.spi import Backend

GROUP = "bridgeq.backends"
EXTRAS = {"redis": "redis", "rediss": "redis", "amqp": "rabbitmq", "amqps": "rabbitmq", "kafka": "kafka"}

_registered: dict[str, type[Backend]] = {}


def register(scheme: str, backend: type[Backend]) -> None:
    """Serve ``scheme://`` URLs with ``backend`` in this process (before entry points)."""
    _registered[scheme.lower()] = backend


def unregister(scheme: str) -> None:
    """Forget a backend added with :func:`register`."""
    _registered.pop(scheme.lower(), None)


def schemes() -> list[str]:
    """Every scheme a backend is known for."""
    return sorted(set(_registered) | {ep.name for ep in entry_points(group=GROUP)})


def load(scheme: str) -> type[Backend]:
    """The backend class for ``scheme``; ConfigError naming the known ones otherwise."""
    if scheme in _registered:
        return _registered[scheme]
    found = [ep for ep in entry_points(group=GROUP) if ep.name == scheme]
    if not found:
        known = schemes()
        near = difflib.get_close_matches(scheme, known, n=1)
        hint = f" (did you mean {near[0]}://?)" if near else ""
        raise ConfigError(f"no backend for {scheme}:// URLs{hint}; known schemes: {', '.join(known)}")
    try:
        backend = found[0].load()
    except ModuleNotFoundError as exc:
        extra = EXTRAS.get(scheme, scheme)
        raise ConfigError(f"{scheme}:// needs the {exc.name!r} client library: pip install 'bridgeq[{extra}]'") from exc
    if not (isinstance(backend, type) and issubclass(backend, Backend)):
        raise ConfigError(f"entry point {found[0].value!r} for {scheme}:// is not a bridgeq Backend")
    return backend
