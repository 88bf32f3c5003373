"""TLS and mutual TLS, with certificates made here: the library, the tenant policy, the CLI.

A test CA signs a server certificate for ``localhost`` and ``127.0.0.1`` (subject
alternative names) and client certificates whose common names are tenants. A second,
unrelated CA signs a rogue client certificate that must be refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import ipaddress
import json
import signal
import ssl
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import cast

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import wrappers_pb2

import lro_async
from lro_async.cli.serve import running_server, server_ssl_context
from lro_async.demo import demo_pb2, demo_pb2_grpc
from lro_async.testing import serve

pytestmark = pytest.mark.timeout(60)

CLI = (sys.executable, "-m", "lro_async")
DENIED = grpc.StatusCode.PERMISSION_DENIED


# -- certificates ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Identity:
    """A PEM certificate chain and its private key."""

    cert: bytes
    key: bytes


@dataclasses.dataclass(frozen=True)
class Authority:
    """A certificate authority that issues certificates for tests."""

    name: str
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @classmethod
    def create(cls, name: str) -> Authority:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return cls(name, key, certificate)

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def issue(
        self,
        common_name: str,
        *,
        hosts: Sequence[str] = (),
        addresses: Sequence[str] = (),
        client: bool = False,
    ) -> Identity:
        """A leaf certificate: for a server (*hosts*, *addresses*) or a client."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]
                ),
                critical=False,
            )
            # Python 3.13's default verification (VERIFY_X509_STRICT) requires these.
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        )
        names: list[x509.GeneralName] = [x509.DNSName(host) for host in hosts]
        names += [x509.IPAddress(ipaddress.ip_address(address)) for address in addresses]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        certificate = builder.sign(self.key, hashes.SHA256())
        return Identity(
            certificate.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )


@dataclasses.dataclass(frozen=True)
class Pki:
    ca: Authority
    server: Identity
    acme: Identity  # a client whose common name is the tenant "acme"
    other: Identity  # tenant "other"
    rogue: Identity  # common name "acme", but issued by an authority the server does not trust
    rogue_ca: Authority


@pytest.fixture(scope="module")
def pki() -> Pki:
    ca, rogue_ca = Authority.create("lro_async test CA"), Authority.create("rogue CA")
    return Pki(
        ca=ca,
        server=ca.issue("localhost", hosts=["localhost"], addresses=["127.0.0.1", "::1"]),
        acme=ca.issue("acme", client=True),
        other=ca.issue("other", client=True),
        rogue=rogue_ca.issue("acme", client=True),
        rogue_ca=rogue_ca,
    )


def server_tls(pki: Pki, *, mutual: bool) -> grpc.ServerCredentials:
    return grpc.ssl_server_credentials(
        [(pki.server.key, pki.server.cert)],
        root_certificates=pki.ca.pem if mutual else None,
        require_client_auth=mutual,
    )


def client_tls(trust: Authority, identity: Identity | None = None) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=trust.pem,
        private_key=identity.key if identity else None,
        certificate_chain=identity.cert if identity else None,
    )


async def _refused(channel: grpc.aio.Channel) -> grpc.aio.AioRpcError:
    """A GetOperation on *channel* must fail before reaching the servicer (no handshake)."""
    stub = operations_pb2_grpc.OperationsStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetOperation(operations_pb2.GetOperationRequest(name="operations/x"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value
    return caught.value


# -- the library over TLS --------------------------------------------------------------


async def _answer(ctx: lro_async.OperationContext) -> wrappers_pb2.StringValue:
    await asyncio.sleep(0.05)
    return wrappers_pb2.StringValue(value=f"done over TLS: {ctx.name}")


async def test_the_client_awaits_an_operation_over_tls(pki: Pki) -> None:
    tls = (server_tls(pki, mutual=False), client_tls(pki.ca))
    async with serve(tls=tls) as served:
        op = await served.manager.start(_answer, parent="projects/tls")
        async with lro_async.AsyncOperationsClient(served.channel) as client:
            result = await client.operation(op.name, result_type=wrappers_pb2.StringValue)
        assert result.value == f"done over TLS: {op.name}"

        # Plaintext, or TLS that trusts another authority, never reaches the servicer.
        async with grpc.aio.insecure_channel(served.target) as plaintext:
            await _refused(plaintext)
        async with grpc.aio.secure_channel(served.target, client_tls(pki.rogue_ca)) as wrong:
            await _refused(wrong)
        # The certificate names localhost too, so that name verifies as well.
        port = served.target.rsplit(":", 1)[1]
        async with grpc.aio.secure_channel(f"localhost:{port}", client_tls(pki.ca)) as by_name:
            stub = operations_pb2_grpc.OperationsStub(by_name)
            got = await stub.GetOperation(operations_pb2.GetOperationRequest(name=op.name))
            assert got.done


async def test_mutual_tls_refuses_a_client_without_a_trusted_certificate(pki: Pki) -> None:
    tls = (server_tls(pki, mutual=True), client_tls(pki.ca, pki.acme))
    async with serve(tls=tls) as served:
        op = await served.manager.create(parent="tenants/acme")
        stub = operations_pb2_grpc.OperationsStub(served.channel)
        got = await stub.GetOperation(operations_pb2.GetOperationRequest(name=op.name), timeout=5)
        assert got.name == op.name

        async with grpc.aio.secure_channel(served.target, client_tls(pki.ca)) as anonymous:
            await _refused(anonymous)
        rogue = client_tls(pki.ca, pki.rogue)  # says "acme", signed by someone else
        async with grpc.aio.secure_channel(served.target, rogue) as impostor:
            await _refused(impostor)
        async with grpc.aio.insecure_channel(served.target) as plaintext:
            await _refused(plaintext)
        assert served.servicer.waiting == 0
        assert not (await served.manager.get(op.name)).done


def _common_name(caller: lro_async.Caller) -> str | None:
    names = caller.auth_context.get("x509_common_name", ())
    return names[0].decode() if len(names) == 1 else None


async def test_a_tenant_policy_on_certificate_names_isolates_two_clients(pki: Pki) -> None:
    policy = lro_async.TenantPolicy(_common_name)
    tls = (server_tls(pki, mutual=True), client_tls(pki.ca, pki.acme))
    async with (
        serve(tls=tls, authorize=policy) as served,
        grpc.aio.secure_channel(served.target, client_tls(pki.ca, pki.other)) as other_channel,
    ):
        manager = served.manager
        acme_op = await manager.start(_answer, parent="tenants/acme/projects/p")
        other_op = await manager.create(parent="tenants/other")
        acme = operations_pb2_grpc.OperationsStub(served.channel)
        other = operations_pb2_grpc.OperationsStub(other_channel)

        # Each reaches its own operations, through the lro_async client too.
        async with lro_async.AsyncOperationsClient(served.channel) as client:
            result = await client.operation(acme_op.name, result_type=wrappers_pb2.StringValue)
            assert result.value.endswith(acme_op.name)
        got = await other.GetOperation(operations_pb2.GetOperationRequest(name=other_op.name))
        assert got.name == other_op.name
        page = await other.ListOperations(
            operations_pb2.ListOperationsRequest(name="tenants/other")
        )
        assert [o.name for o in page.operations] == [other_op.name]

        # Neither reaches the other's, not even by claiming the other's tenant in a header.
        spoof = (("x-tenant", "acme"),)
        for stub, name in ((other, acme_op.name), (acme, other_op.name)):
            for call in (
                stub.GetOperation(operations_pb2.GetOperationRequest(name=name), metadata=spoof),
                stub.CancelOperation(
                    operations_pb2.CancelOperationRequest(name=name), metadata=spoof
                ),
                stub.DeleteOperation(operations_pb2.DeleteOperationRequest(name=name)),
                stub.WaitOperation(operations_pb2.WaitOperationRequest(name=name)),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await call
                assert caught.value.code() == DENIED
        for parent in ("tenants/acme", "tenants/acme/projects/p", "", "operations"):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await other.ListOperations(operations_pb2.ListOperationsRequest(name=parent))
            assert caught.value.code() == DENIED
        assert not (await manager.get(other_op.name)).done, "a denied cancel changed nothing"


# -- the command line over TLS ---------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Files:
    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    rogue_cert: str
    rogue_key: str

    def client(self, *, ca: bool = True, identity: bool = True) -> list[str]:
        flags = ["--tls-ca", self.ca] if ca else []
        if identity:
            flags += ["--tls-cert", self.client_cert, "--tls-key", self.client_key]
        return flags


@pytest.fixture(scope="module")
def files(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Files:
    folder = tmp_path_factory.mktemp("pki")
    written: dict[str, str] = {}
    for name, data in {
        "ca": pki.ca.pem,
        "server_cert": pki.server.cert,
        "server_key": pki.server.key,
        "client_cert": pki.acme.cert,
        "client_key": pki.acme.key,
        "rogue_cert": pki.rogue.cert,
        "rogue_key": pki.rogue.key,
    }.items():
        path = folder / f"{name}.pem"
        path.write_bytes(data)
        written[name] = str(path)
    return Files(**written)


@dataclasses.dataclass(frozen=True)
class Cli:
    returncode: int
    stdout: str
    stderr: str


async def _cli(*args: str, timeout: float = 30) -> Cli:
    process = await asyncio.create_subprocess_exec(
        *CLI, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return Cli(process.returncode, out.decode(), err.decode())


@contextlib.asynccontextmanager
async def _serve_cli(store: str, *flags: str) -> AsyncIterator[tuple[str, str]]:
    """``lro-async serve --port 0 FLAGS``; yield its port and the line it printed."""
    process = await asyncio.create_subprocess_exec(
        *CLI,
        "serve",
        "--port",
        "0",
        "--store",
        store,
        "--grace",
        "1",
        *flags,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None and process.stderr is not None
        async with asyncio.timeout(30):
            line = (await process.stdout.readline()).decode()
        assert "serving on" in line, line + (await process.stderr.read()).decode()
        yield line.split("serving on ")[1].split()[0].rsplit(":", 1)[1], line
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def test_the_cli_serves_and_answers_over_mutual_tls(files: Files, tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'ops.db'}"
    tls = ["--tls-cert", files.server_cert, "--tls-key", files.server_key, "--tls-ca", files.ca]
    async with _serve_cli(store, *tls) as (port, line):
        assert "TLS" in line
        target = f"localhost:{port}"
        listed = await _cli("list", "--target", target, "--json", *files.client())
        assert listed.returncode == 0, listed.stderr
        assert json.loads(listed.stdout) == {"operations": []}
        missing = await _cli("get", "operations/nope", "--target", target, *files.client())
        assert missing.returncode == 3, missing.stderr  # reached the servicer: NOT_FOUND

        for refused in (
            [],  # plaintext
            files.client(identity=False),  # TLS without a client certificate
            [  # a client certificate from an authority the server does not trust
                "--tls-ca",
                files.ca,
                "--tls-cert",
                files.rogue_cert,
                "--tls-key",
                files.rogue_key,
            ],
        ):
            result = await _cli(
                "get", "operations/nope", "--target", target, "--rpc-timeout", "3", *refused
            )
            assert result.returncode == 4, (refused, result.stderr)
            assert "Traceback" not in result.stderr


async def test_the_cli_waits_on_an_operation_over_server_tls(
    files: Files, pki: Pki, tmp_path: Path
) -> None:
    store = f"sqlite:///{tmp_path / 'ops.db'}"
    async with _serve_cli(
        store, "--tls-cert", files.server_cert, "--tls-key", files.server_key
    ) as (port, _):
        target = f"127.0.0.1:{port}"
        async with grpc.aio.secure_channel(target, client_tls(pki.ca)) as channel:
            demo = cast("demo_pb2_grpc.DemoAsyncStub", demo_pb2_grpc.DemoStub(channel))
            request = demo_pb2.SleepRequest(parent="projects/tls", steps=2)
            request.duration.FromMilliseconds(300)
            op = await demo.Sleep(request, timeout=10)
        waited = await _cli(
            "wait", op.name, "--target", target, "--json", *files.client(identity=False)
        )
        assert waited.returncode == 0, waited.stderr
        assert json.loads(waited.stdout)["done"] is True
        untrusted = await _cli("get", op.name, "--target", target, "--rpc-timeout", "3")
        assert untrusted.returncode == 4


@pytest.mark.parametrize(
    ("command", "flags", "message"),
    [
        ("serve", ["--tls-cert", "{server_cert}"], "--tls-cert and --tls-key"),
        ("serve", ["--tls-ca", "{ca}"], "--tls-cert and --tls-key"),
        (
            "serve",
            ["--tls-cert", "{missing}", "--tls-key", "{server_key}"],
            "No such file",
        ),
        ("serve", ["--tls-cert", "{not_pem}", "--tls-key", "{server_key}"], "not a PEM file"),
        (
            "serve",
            ["--http-port", "0", "--tls-cert", "{server_cert}", "--tls-key", "{client_key}"],
            "is not the private key of --tls-cert",
        ),
        ("get", ["--tls-cert", "{client_cert}"], "--tls-cert and --tls-key"),
        ("get", ["--tls-ca", "{missing}"], "No such file"),
    ],
)
async def test_tls_flags_that_do_not_go_together_are_usage_errors(
    files: Files, tmp_path: Path, command: str, flags: list[str], message: str
) -> None:
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    paths = {
        **dataclasses.asdict(files),
        "missing": str(tmp_path / "missing.pem"),
        "not_pem": str(not_pem),
    }
    args = [flag.format(**paths) for flag in flags]
    if command == "serve":
        args = ["serve", "--port", "0", "--store", "memory", *args]
    else:
        args = ["get", "operations/x", "--target", "127.0.0.1:1", *args]
    result = await _cli(*args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr


# -- HTTPS: the HTTP/JSON server with the same files -------------------------------------


def _https_client(files: Files, *, identity: bool = True) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=files.ca)
    if identity:
        context.load_cert_chain(files.client_cert, files.client_key)
    return context


async def test_the_http_server_serves_https_with_the_tls_files(files: Files, pki: Pki) -> None:
    http_ssl = server_ssl_context(files.server_cert, files.server_key, files.ca)
    credentials = server_tls(pki, mutual=True)
    async with running_server(
        "127.0.0.1", 0, "memory", grace=1.0, credentials=credentials, http_port=0, http_ssl=http_ssl
    ) as running:
        assert running.http_target is not None
        url = f"https://{running.http_target}"
        op = await running.manager.start(_answer, parent="projects/tls")
        async with lro_async.AsyncOperationsClient.from_url(
            url, ssl_context=_https_client(files)
        ) as client:
            result = await client.operation(op.name, result_type=wrappers_pb2.StringValue)
            assert result.value == f"done over TLS: {op.name}"

        # Without a client certificate, or in plain HTTP, nothing reaches the app.
        for refused in (
            lro_async.AsyncOperationsClient.from_url(
                url, ssl_context=_https_client(files, identity=False)
            ),
            lro_async.AsyncOperationsClient.from_url(f"http://{running.http_target}"),
        ):
            async with refused:
                with pytest.raises(lro_async.RpcError) as caught:
                    await refused.get_operation(op.name, timeout=5)
                assert caught.value.code is grpc.StatusCode.UNAVAILABLE, caught.value


def test_an_ssl_context_needs_an_https_url(files: Files) -> None:
    with pytest.raises(ValueError, match="needs an https:// URL"):
        lro_async.AsyncOperationsClient.from_url(
            "http://127.0.0.1:1", ssl_context=_https_client(files)
        )
