"""wss://: the hub serves TLS with a certificate and key from the config, and the compiled
fan-out's TLS write path delivers every message in order."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from pathlib import Path

import orjson
import websockets
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert_file, key_file


async def test_wss_delivers_trades_in_order(make_hub, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    hub = await make_hub(listen_url="wss://127.0.0.1:0", tls_cert_file=str(cert), tls_key_file=str(key))
    ctx = ssl.create_default_context(cafile=str(cert))
    url = f"wss://127.0.0.1:{hub.port}"
    async with websockets.connect(f"{url}/ws/btcusdt@trade", ssl=ctx) as a, \
            websockets.connect(f"{url}/stream?streams=btcusdt@trade", ssl=ctx) as b:
        raw = [orjson.loads(await asyncio.wait_for(a.recv(), 5)) for _ in range(20)]
        comb = [orjson.loads(await asyncio.wait_for(b.recv(), 5)) for _ in range(5)]
    ids = [m["t"] for m in raw]
    assert ids == list(range(ids[0], ids[0] + 20))
    assert all(m["stream"] == "btcusdt@trade" and m["data"]["e"] == "trade" for m in comb)


async def test_plain_client_on_a_tls_port_is_refused_and_others_keep_serving(make_hub, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    hub = await make_hub(listen_url="wss://127.0.0.1:0", tls_cert_file=str(cert), tls_key_file=str(key))
    ctx = ssl.create_default_context(cafile=str(cert))
    async with websockets.connect(f"wss://127.0.0.1:{hub.port}/ws/btcusdt@trade", ssl=ctx) as good:
        await asyncio.wait_for(good.recv(), 5)
        try:
            # A plaintext upgrade is not a TLS ClientHello: the hub never answers it.
            await websockets.connect(f"ws://127.0.0.1:{hub.port}/ws/btcusdt@trade", open_timeout=1)
            raise AssertionError("plain ws:// on a TLS port must not connect")
        except (websockets.InvalidHandshake, ConnectionError, EOFError, OSError, TimeoutError):
            pass
        await asyncio.wait_for(good.recv(), 5)
