"""What can go wrong between gatemesh and its broker, as gatemesh's own exceptions.

TransportError          the broker cannot be used; catch this to catch them all
├── ConnectionLost      no connection could be made, it broke, or the broker stopped answering
│                       (every timeout waiting for the broker is one of these)
├── Refused             the broker answered no: a CONNACK refusal, a SUBACK failure code
│   ├── NotAuthorised   a CONNACK refusing the client's credentials: asking again will not help
│   └── SubscriptionRefused   a SUBACK's failure codes, naming the filters refused
├── ProtocolViolation   the bytes from the broker are not MQTT 3.1.1 as the session speaks it:
│                       a malformed or oversized packet, QoS 2 or 3, a short acknowledgement
└── UnsupportedBroker   a working broker that lacks something gatemesh's control plane needs
                        (retained messages delivered to a wildcard subscription, in order)

The data plane's session (gates/mqtt311.py) raises these itself; everything spoken through
aiomqtt is mapped to them at one boundary, `gates.transport.map_exceptions`, so no other
module sees, or catches, an aiomqtt error. The orchestrator maps them to its own errors
(orchestrator/errors.py).
"""

from __future__ import annotations

import socket
import ssl

__all__ = [
    "ConnectionLost",
    "NotAuthorised",
    "ProtocolViolation",
    "Refused",
    "SubscriptionRefused",
    "TransportError",
    "UnsupportedBroker",
]


class TransportError(Exception):
    """The broker cannot be used; the message says why, and which broker where it knows.

    `broker`: the broker's address if the message names it (a wrapper that adds what it was
    doing names the broker only when this is None: orchestrator.errors.broker_failed)."""

    def __init__(self, message: str, *, broker: str | None = None) -> None:
        super().__init__(message)
        self.broker = broker


class ConnectionLost(TransportError):
    """No connection, a broken one, or a broker that did not answer in time."""


class Refused(TransportError):
    """The broker refused a connection or a subscription (credentials, an ACL)."""


class NotAuthorised(Refused):
    """The broker refused the client's user name and password (CONNACK 4 or 5). A broker that
    is not up yet is worth waiting for; one that said no to these credentials is not."""


CREDENTIALS_REFUSED = frozenset({4, 5, 134, 135})
"""CONNACK codes that refuse the credentials: MQTT 3.1.1's 4 and 5, and paho's reason codes for
them ("bad user name or password", "not authorized")."""


def connack_refusal(message: str, code: int | None, broker: str | None) -> Refused:
    """The error for a CONNACK that said no with `code` (`broker`: as TransportError's):
    NotAuthorised for the credentials."""
    refusal = NotAuthorised if code in CREDENTIALS_REFUSED else Refused
    return refusal(message, broker=broker)


class SubscriptionRefused(Refused):
    """A SUBACK refused some of a SUBSCRIBE's filters (`filters`); the others were granted."""

    def __init__(self, message: str, filters: tuple[str, ...]) -> None:
        super().__init__(message)
        self.filters = filters


class ProtocolViolation(TransportError):
    """The broker sent bytes that break MQTT 3.1.1; the session drops the connection."""


class UnsupportedBroker(TransportError):
    """The broker speaks MQTT but lacks a behaviour gatemesh relies on; the message names it."""


def unreachable(exc: OSError) -> str:
    """Why a broker could not be reached, in words a user can act on."""
    if isinstance(exc, ConnectionRefusedError):
        return "nothing is listening there (connection refused); is a broker running at that address?"
    if isinstance(exc, socket.gaierror):
        return f"no such host ({exc.strerror})"
    plain_port = "an mqtts:// address on a port without TLS does this: is the scheme the port's?"
    if isinstance(exc, ssl.SSLEOFError):  # the broker hung up on the TLS hello
        return f"the broker closed the connection during the TLS handshake; {plain_port}"
    if isinstance(exc, ssl.SSLError):
        return f"the TLS handshake failed ({exc})"
    if isinstance(exc, ConnectionResetError):  # what mosquitto does to a TLS hello on a plain port
        return f"the connection was reset (Connection reset by peer); {plain_port}"
    return exc.strerror or str(exc) or type(exc).__name__
