"""An error at the broker names it once: the transport's errors say whether they name it.

A command that wraps a transport error ("cannot read the cluster's state from the broker at
...") adds the broker's address only when the error has not named it; the transport says so
in `TransportError.broker` rather than leaving the wrapper to search its text.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from broker.launch import free_port
from gates import transport
from gates.errors import ConnectionLost, NotAuthorised, SubscriptionRefused, TransportError
from gates.mqtt311 import Session
from gates.transport import BrokerAddress
from orchestrator.errors import broker_failed

REFUSED = "nothing is listening there (connection refused); is a broker running at that address?"


async def _refused_by_session(broker: BrokerAddress) -> TransportError:
    with pytest.raises(TransportError) as caught:
        await Session.open(broker, lambda topic, payload: None, timeout=5)
    return caught.value


async def _refused_by_aiomqtt(broker: BrokerAddress) -> TransportError:
    with pytest.raises(TransportError) as caught:
        async with transport.connect(broker, timeout=5):
            pass
    return caught.value


@pytest.mark.parametrize("connect", [_refused_by_session, _refused_by_aiomqtt], ids=["session", "aiomqtt"])
async def test_a_refused_connection_names_its_broker_once(
    connect: Callable[[BrokerAddress], Awaitable[TransportError]],
) -> None:
    broker = BrokerAddress(host="127.0.0.1", port=free_port())  # nothing listens there
    error = await connect(broker)
    assert isinstance(error, ConnectionLost)
    assert error.broker == str(broker)
    assert str(broker_failed(broker, error)) == f"cannot connect to the broker at {broker}: {REFUSED}"
    assert str(broker_failed(broker, error, "cannot read the cluster's state")) == (
        f"cannot read the cluster's state: cannot connect to the broker at {broker}: {REFUSED}"
    )


def test_an_error_that_does_not_name_its_broker_gets_it_added() -> None:
    broker = BrokerAddress(host="broker.example", port=1883)
    refused = SubscriptionRefused("the broker refused the subscription(s) gatemesh/#", ("gatemesh/#",))
    assert refused.broker is None
    assert str(broker_failed(broker, refused, "cannot read the cluster's state")) == (
        "cannot read the cluster's state from the broker at mqtt://broker.example:1883:"
        " the broker refused the subscription(s) gatemesh/#"
    )
    # an address in the text is not the error naming its broker (a topic may hold anything)
    ended = ConnectionLost("mqtt://broker.example:1883 was the message stream's topic")
    assert str(broker_failed(broker, ended)).startswith("cannot connect to the broker at mqtt://broker.example:1883: ")


def test_a_timeout_without_words_is_not_an_empty_reason() -> None:
    broker = BrokerAddress(host="broker.example", port=1883)
    said = str(broker_failed(broker, TimeoutError(), "cannot read the cluster's state"))
    assert (
        said
        == "cannot read the cluster's state from the broker at mqtt://broker.example:1883: it did not answer in time"
    )


def test_a_refusal_of_credentials_says_what_to_give() -> None:
    """A broker that wants an account: without one, how to give it (in the scheme used); with a
    user it refused, what to check."""
    said = "the broker at {0} refused the connection: not authorised"
    anonymous = BrokerAddress.parse("mqtts://broker.example:8883")
    refused = NotAuthorised(said.format(anonymous), broker=str(anonymous))
    assert str(broker_failed(anonymous, refused)) == (
        f"{said.format(anonymous)}; this broker wants an account: give --secure DIR (the accounts "
        "`gatemesh secure init` made for it) or mqtts://user:password@host:port"
    )
    named = BrokerAddress.parse("mqtt://h7:guess@broker.example:1883")
    refused = NotAuthorised(said.format(named), broker=str(named))
    assert str(broker_failed(named, refused, "cannot read the cluster's state")).endswith(
        "not authorised; it refused user 'h7': check the password, and that the broker's password file has this account"
    )
