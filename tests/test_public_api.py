"""The public surface is pinned: applications are written against these names."""

import bridgeq


def test_exported_names():
    assert set(bridgeq.__all__) == {
        "BridgeqError",
        "Broker",
        "BrokerURL",
        "Capabilities",
        "ClosedError",
        "ConfigError",
        "ConnectionLost",
        "Delivery",
        "DeliveryStateError",
        "Message",
        "MessageTooLarge",
        "MigrationReport",
        "PublishError",
        "QueueModel",
        "Settlement",
        "Subscription",
        "UnsupportedFeature",
        "VerifyReport",
        "__version__",
        "connect",
        "migrate",
    }
    for name in bridgeq.__all__:
        assert hasattr(bridgeq, name)


def test_error_tree():
    for error in (
        bridgeq.ConfigError,
        bridgeq.ConnectionLost,
        bridgeq.PublishError,
        bridgeq.MessageTooLarge,
        bridgeq.UnsupportedFeature,
        bridgeq.ClosedError,
        bridgeq.DeliveryStateError,
    ):
        assert issubclass(error, bridgeq.BridgeqError)
    assert issubclass(bridgeq.MessageTooLarge, bridgeq.ConfigError)
    assert repr(bridgeq.ConfigError("bad")) == "ConfigError('bad')"


def test_broker_methods_are_the_pinned_ones():
    for name in ("declare", "publish", "publish_batch", "begin_batch", "subscribe", "depth", "capabilities", "close"):
        assert hasattr(bridgeq.Broker, name)
    for name in ("receive", "receive_batch", "__iter__", "run", "close", "ack", "nack"):
        assert hasattr(bridgeq.Subscription, name)
    for name in ("id", "body", "headers", "key", "topic", "group", "attempt", "ack", "nack"):
        assert name in bridgeq.Delivery.__slots__ or hasattr(bridgeq.Delivery, name)


def test_readme_example_runs():
    import doctest

    assert doctest.testmod(bridgeq).failed == 0
