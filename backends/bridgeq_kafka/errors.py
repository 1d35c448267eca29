"""kafka-python exceptions -> bridgeq errors: one table, used through ``translate_errors``."""

from __future__ import annotations

import kafka.errors as kx

from bridgeq.errors import BridgeqError, ConfigError, ConnectionLost, MessageTooLarge
from bridgeq.spi import ErrorTable

ERRORS: ErrorTable = (
    ((kx.MessageSizeTooLargeError, kx.RecordListTooLargeError), MessageTooLarge),
    # Wrong credentials, rights or settings: retrying cannot help.
    (
        (
            kx.AuthorizationError,
            kx.SaslAuthenticationFailedError,
            kx.UnsupportedSaslMechanismError,
            kx.IllegalSaslStateError,
            kx.KafkaConfigurationError,
            kx.IllegalArgumentError,
            kx.InvalidTopicError,
            kx.InvalidGroupIdError,
            kx.InvalidPartitionsError,
            kx.InvalidReplicationFactorError,
            kx.InvalidConfigurationError,
            kx.PolicyViolationError,
            kx.InvalidSessionTimeoutError,
            kx.UnsupportedVersionError,
        ),
        ConfigError,
    ),
    # RetriableError covers KafkaConnectionError, KafkaTimeoutError, NodeNotReadyError and the
    # coordinator/leader-moved family; OSError covers sockets and TLS.
    ((kx.RetriableError, kx.BrokerNotAvailableError, kx.KafkaProtocolError, OSError), ConnectionLost),
    (kx.KafkaError, BridgeqError),
)

REBALANCING = (
    kx.CommitFailedError,
    kx.RebalanceInProgressError,
    kx.IllegalGenerationError,
    kx.UnknownMemberIdError,
    kx.FencedInstanceIdError,
)
"""A commit refused because the group moved on: what it covered is redelivered, never lost."""
