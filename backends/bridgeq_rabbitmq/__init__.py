"""bridgeq backend for rabbitmq (in progress)."""
