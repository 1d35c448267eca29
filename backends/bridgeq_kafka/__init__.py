"""bridgeq backend for kafka (in progress)."""
