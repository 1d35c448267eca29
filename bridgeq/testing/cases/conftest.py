"""The cases run with the bridgeq plugin's fixtures: broker, names, size."""
