"""bridgeq backend for redis (in progress)."""
