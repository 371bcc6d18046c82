"""Outside clients that call a vendor's fixed host (``2captcha.com``, ``api.2captcha.com``, ...), pointed at
capgate unmodified: a capgate process over TLS whose certificate (from a throwaway trustme CA) names the
vendor hosts, a plain-HTTP one for clients that use ``http://``, and, for clients in this process, a
host mapping as a hosts-file line would make it (:func:`mapped_hosts`)."""

from __future__ import annotations

import contextlib
import socket
import ssl
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.serverproc import ServerProcess, start_server

VENDOR_HOSTS = ("2captcha.com", "rucaptcha.com", "api.2captcha.com", "api.rucaptcha.com")


@dataclass(frozen=True)
class VendorServers:
    tls: ServerProcess  # answers https://<vendor host>/
    plain: ServerProcess  # answers http://<vendor host>/ (a database of its own)
    ca_path: Path  # the CA the clients must trust


@contextlib.contextmanager
def vendor_servers(folder: Path) -> Iterator[VendorServers]:
    ca = trustme.CA()
    issued = ca.issue_cert(*VENDOR_HOSTS, "127.0.0.1", "localhost")
    ca_path, cert_path, key_path = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    issued.cert_chain_pems[0].write_to_path(str(cert_path))
    issued.private_key_pem.write_to_path(str(key_path))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SSL_CERT_FILE", str(ca_path))  # the readiness check of the TLS server
        with start_server(folder / "tls", args=["--ssl-certfile", str(cert_path), "--ssl-keyfile", str(key_path)],
                          scheme="https") as tls, start_server(folder / "plain") as plain:
            yield VendorServers(tls, plain, ca_path)


@contextlib.contextmanager
def mapped_hosts(servers: VendorServers) -> Iterator[None]:
    """In this process, the vendor hosts resolve to the capgate processes: port 443 to the TLS one, 80 to
    the plain one (the address and port both come from ``getaddrinfo``, for requests and aiohttp alike);
    ``requests``, ``ssl`` and aiohttp trust the test's CA."""
    real = socket.getaddrinfo
    ports = {443: servers.tls.port, 80: servers.plain.port}

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name.lower() in VENDOR_HOSTS and int(port or 0) in ports:
            return real("127.0.0.1", ports[int(port)], *args, **kwargs)
        return real(host, port, *args, **kwargs)

    # aiohttp made its verifying SSL context when imported, before this CA existed: the CA is added to
    # it (a throwaway CA, trusted by this test process only).
    aiohttp_connector = sys.modules.get("aiohttp.connector")
    context = getattr(aiohttp_connector, "_SSL_CONTEXT_VERIFIED", None)
    if isinstance(context, ssl.SSLContext):
        context.load_verify_locations(cafile=str(servers.ca_path))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket, "getaddrinfo", getaddrinfo)
        patch.setenv("REQUESTS_CA_BUNDLE", str(servers.ca_path))
        patch.setenv("SSL_CERT_FILE", str(servers.ca_path))
        yield
