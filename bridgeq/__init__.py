"""bridgeq: one producer/consumer interface over real message brokers.

>>> import bridgeq
>>> with bridgeq.connect("memory://") as broker:
...     broker.declare("orders", group="billing")
...     _ = broker.publish("orders", b"hello", key="cust-7")
...     with broker.subscribe("orders", group="billing") as sub:
...         delivery = sub.receive(timeout=1.0)
...         _ = delivery.ack()
...     delivery.body
b'hello'
"""

from bridgeq.api import Broker, connect
from bridgeq.capabilities import Capabilities
from bridgeq.errors import (
    BridgeqError,
    ClosedError,
    ConfigError,
    ConnectionLost,
    DeliveryStateError,
    MessageTooLarge,
    PublishError,
    UnsupportedFeature,
)
from bridgeq.message import Delivery, Message, Settlement
from bridgeq.metrics import QueueModel
from bridgeq.migration import MigrationReport, VerifyReport, migrate
from bridgeq.subscription import Subscription
from bridgeq.url import BrokerURL

__version__ = "0.1.0"

__all__ = [
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
]
