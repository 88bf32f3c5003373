"""TLS files for the command's tests: a CA, a server and a client certificate, and bad files."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.interop.test_tls import Authority


@dataclasses.dataclass(frozen=True)
class Files:
    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    other_ca: str  # an authority that signed nothing here
    not_pem: str
    key_only: str  # a PEM key where certificates belong
    encrypted_key: str
    missing: str

    def paths(self) -> dict[str, str]:
        return dataclasses.asdict(self)


def write_files(folder: Path) -> Files:
    ca, other = Authority.create("lro_async cli test CA"), Authority.create("other CA")
    server = ca.issue("localhost", hosts=["localhost"], addresses=["127.0.0.1"])
    client = ca.issue("cli", client=True)
    encrypted = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    contents = {
        "ca": ca.pem,
        "server_cert": server.cert,
        "server_key": server.key,
        "client_cert": client.cert,
        "client_key": client.key,
        "other_ca": other.pem,
        "not_pem": b"hello\n",
        "key_only": client.key,
        "encrypted_key": encrypted,
    }
    for name, data in contents.items():
        (folder / f"{name}.pem").write_bytes(data)
    return Files(
        **{name: str(folder / f"{name}.pem") for name in contents},
        missing=str(folder / "missing.pem"),
    )
