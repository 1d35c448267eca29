#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine: installs bridgeq with its dev
# extras into .venv, brings Redis, RabbitMQ and Kafka up natively (compose/native),
# and runs pytest: core tests plus the conformance suite against every backend.
# A missing broker is a failure here (BRIDGEQ_TEST_REQUIRE=all) unless you say otherwise.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev]'

eval "$(bash compose/native/up.sh)"
export BRIDGEQ_TEST_REQUIRE="${BRIDGEQ_TEST_REQUIRE:-all}"
# The suite's brokers: Redis claims a crashed consumer's entries after 2 s instead of 30.
export BRIDGEQ_TEST_REDIS_URL="${BRIDGEQ_TEST_REDIS_URL%%\?*}?claim_idle_ms=2000"

.venv/bin/python -m pytest "$@"
