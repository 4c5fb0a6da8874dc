"""TLS (mutual) and auth headers against a real server that demands both."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from client import AuthenticationError, EmbeddingClient, ServerUnavailableError
from client.retry import RetryPolicy
from serve.server import LocalTritonServer, Ports

KEY, SECRET = "x-api-key", "s3cret"
# Triton checks a restricted gRPC protocol's header under this prefix; HTTP uses the key as is.
GRPC_HEADER = f"triton-grpc-protocol-{KEY}"

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")


def make_certificates(folder: Path) -> dict[str, str]:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate."""
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", "2", "-subj", "/CN=test-ca")
    (folder / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, extra in (("server", ["-extfile", "san.cnf"]), ("client", [])):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={name}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", *extra)
    return {name: str(folder / name) for name in
            ("ca.crt", "server.crt", "server.key", "client.crt", "client.key")}


@pytest.fixture(scope="module")
def secure_server(exported_repo: Path, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[tuple[LocalTritonServer, dict[str, str]]]:
    certs = make_certificates(tmp_path_factory.mktemp("certs"))
    srv = LocalTritonServer(exported_repo, ports=Ports.free(), models=["pnasnet_large"],
                            work_dir=tmp_path_factory.mktemp("secure"), extra_args=[
                                "--grpc-use-ssl-mutual=true",
                                f"--grpc-server-cert={certs['server.crt']}",
                                f"--grpc-server-key={certs['server.key']}",
                                f"--grpc-root-cert={certs['ca.crt']}",
                                f"--grpc-restricted-protocol=inference:{KEY}={SECRET}",
                                f"--http-restricted-api=inference:{KEY}={SECRET}"])
    srv.start(timeout=300)
    yield srv, certs
    srv.stop()


def _client(url: str, **kwargs: object) -> EmbeddingClient:
    return EmbeddingClient(url, timeout=20, retry=RetryPolicy.none(), **kwargs)


def test_mutual_tls_and_auth_header(secure_server: tuple[LocalTritonServer, dict[str, str]],
                                    sample_images: list[Path]) -> None:
    srv, certs = secure_server
    tls = dict(root_certificates=certs["ca.crt"], private_key=certs["client.key"],
               certificate_chain=certs["client.crt"])
    with _client(srv.grpc_url, headers={GRPC_HEADER: SECRET}, **tls) as c:
        assert c.connection.ssl and c.is_ready()
        assert c.embed(sample_images[0]).shape == (4320,)
        assert c.embed_many(sample_images).failures == []  # the asyncio channel uses TLS too
    with _client(srv.grpc_url, headers={GRPC_HEADER: "wrong"}, **tls) as c:
        with pytest.raises(AuthenticationError, match="restricted"):
            c.embed(sample_images[0])
    with _client(srv.grpc_url, **tls) as c:  # no header
        with pytest.raises(AuthenticationError):
            c.embed(sample_images[0])


def test_without_tls_the_server_is_unreachable(secure_server: tuple[LocalTritonServer,
                                                                    dict[str, str]],
                                               sample_images: list[Path]) -> None:
    srv, certs = secure_server
    for kwargs in ({}, {"root_certificates": certs["ca.crt"]}):  # plain, and TLS without client cert
        with _client(srv.grpc_url, headers={GRPC_HEADER: SECRET}, **kwargs) as c:
            with pytest.raises(ServerUnavailableError):
                c.embed(sample_images[0])
            assert not c.is_ready()


def test_http_auth_header(secure_server: tuple[LocalTritonServer, dict[str, str]],
                          sample_images: list[Path]) -> None:
    srv, _ = secure_server
    with _client(srv.http_url, protocol="http", headers={KEY: SECRET}) as c:
        assert c.embed(sample_images[0]).shape == (4320,)
    with _client(srv.http_url, protocol="http") as c:
        with pytest.raises(AuthenticationError, match="restricted"):
            c.embed(sample_images[0])


def test_tls_options_are_checked() -> None:
    with pytest.raises(ValueError, match="both private_key and certificate_chain"):
        EmbeddingClient("127.0.0.1:1", private_key="client.key")
    with EmbeddingClient("grpcs://127.0.0.1:1") as secure, EmbeddingClient("127.0.0.1:1") as plain:
        assert secure.connection.ssl and secure.url == "127.0.0.1:1"
        assert not plain.connection.ssl
