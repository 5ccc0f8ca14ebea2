"""mqtts:// against Mosquitto with a certificate authority and server certificate the test makes."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from broker.launch import TlsFiles, free_port, mosquitto
from gates.errors import ConnectionLost
from gates.transport import BrokerAddress, client, read_retained
from orchestrator.api import run_circuit
from tests.processes import clean_env, gatemesh

pytestmark = pytest.mark.integration


def _certificate(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name | None, signer: ec.EllipticCurvePrivateKey
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if issuer is None:  # the CA
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    else:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(signer, hashes.SHA256())


@pytest.fixture
def tls_files() -> Iterator[TlsFiles]:
    """A CA, and a server certificate for 127.0.0.1 signed by it, readable by the broker's user."""
    with tempfile.TemporaryDirectory(prefix="gatemesh-tls-") as path:
        folder = Path(path)
        folder.chmod(0o755)
        ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
        ca = _certificate("gatemesh test CA", ca_key, None, ca_key)
        server = _certificate("127.0.0.1", server_key, ca.subject, ca_key)
        files = TlsFiles(ca=folder / "ca.pem", cert=folder / "server.pem", key=folder / "server.key")
        files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        files.cert.write_bytes(server.public_bytes(serialization.Encoding.PEM))
        files.key.write_bytes(
            server_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        for file in (files.ca, files.cert, files.key):
            file.chmod(0o644)
        yield files


async def test_a_run_over_tls(tls_files: TlsFiles) -> None:
    with mosquitto(tls=tls_files) as url:
        assert url.startswith("mqtts://127.0.0.1:")
        assert f"?ca={tls_files.ca}" in url
        result = await run_circuit("(x+y)*z", {"x": -2, "y": 5, "z": -4}, broker=url)
        assert (result.value, result.grads) == (-12.0, {"x": -4.0, "y": -4.0, "z": 3.0})

        secure = BrokerAddress.parse(url)
        untrusted = secure.model_copy(update={"ca_file": None})  # the system's CAs do not know ours
        with pytest.raises(aiomqtt.MqttError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            async with client(untrusted):
                pass
        plain = secure.model_copy(update={"tls": False, "ca_file": None})  # no TLS on a TLS port
        with pytest.raises(aiomqtt.MqttError):
            async with client(plain, timeout=3):
                pass
        # as the commands say it: it waited, then said only "Operation timed out"
        with pytest.raises(
            ConnectionLost, match=r"or the port speaks TLS, which never answers mqtt:// \(is the scheme the port's\?\)$"
        ):
            await read_retained(plain, ["gatemesh-sys/#"], timeout=2)


def test_broker_urls_carry_tls_settings() -> None:
    address = BrokerAddress.parse("mqtts://user:p%40ss@broker.example:8884?ca=/etc/gatemesh/ca.pem")
    assert (address.tls, address.host, address.port) == (True, "broker.example", 8884)
    assert (address.username, address.password, address.ca_file) == ("user", "p@ss", "/etc/gatemesh/ca.pem")
    assert BrokerAddress.parse("mqtts://b").port == 8883
    with pytest.raises(ValueError, match="ca= applies to mqtts:// only"):
        BrokerAddress.parse("mqtt://b?ca=/x.pem")
    with pytest.raises(ValueError, match="unknown parameter"):
        BrokerAddress.parse("mqtts://b?cert=/x.pem")


def test_a_ca_file_that_cannot_be_read_is_one_line_before_connecting(tmp_path: Path) -> None:
    broken = tmp_path / "ca.pem"
    broken.write_text("not a certificate\n")
    cases = (
        ("/nonexistent/ca.pem", "No such file or directory"),
        (str(broken), "not a PEM certificate file (NO_CERTIFICATE_OR_CRL_FOUND)"),
    )
    for ca, why in cases:
        url = f"mqtts://127.0.0.1:1?ca={ca}"
        host = subprocess.run(
            [sys.executable, "-m", "gates", "--broker", url, "--name", "h1"],
            capture_output=True,
            text=True,
            timeout=30,
            env=clean_env(),
            check=False,
        )
        assert (host.returncode, host.stderr) == (1, f"error: broker mqtts://127.0.0.1:1: ca={ca}: {why}\n")
        run = gatemesh("run", "x", "x=1", "--broker", url)
        assert run.returncode == 1
        assert f"ca={ca}: {why}" in run.stderr
        assert "Traceback" not in run.stderr


def test_the_broker_command_serves_tls(tls_files: TlsFiles) -> None:
    """`python -m broker mosquitto` had no way to speak TLS: only the client side was documented."""
    port = free_port()
    files = [str(tls_files.ca), str(tls_files.cert), str(tls_files.key)]
    command = [sys.executable, "-m", "broker", "mosquitto", "--port", str(port), "--tls", *files]
    broker = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=clean_env())
    try:
        assert broker.stdout is not None
        url = broker.stdout.readline().strip()
        assert url == f"mqtts://127.0.0.1:{port}?ca={tls_files.ca}"
        result = asyncio.run(run_circuit("(x+y)*z", {"x": -2, "y": 5, "z": -4}, broker=url))
        assert (result.value, result.grads) == (-12.0, {"x": -4.0, "y": -4.0, "z": 3.0})
    finally:
        broker.terminate()
        broker.wait(timeout=10)
    missing = subprocess.run([*command[:-1], "/nonexistent.key"], capture_output=True, text=True, env=clean_env())
    assert missing.returncode == 2
    assert missing.stderr.splitlines()[-1] == "python -m broker: error: --tls: no such file: /nonexistent.key"
