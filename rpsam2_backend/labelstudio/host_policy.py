"""Which hosts the backend may download task images from (RPSAM2_ALLOWED_IMAGE_HOSTS).

A task's image URL is data an annotator or an import controls; fetched blindly it lets a task
make the backend call internal services (SSRF).  The policy:
- the Label Studio host (LABEL_STUDIO_URL, or the one /setup announced) is always allowed;
- with RPSAM2_ALLOWED_IMAGE_HOSTS empty, any host whose every address is public; loopback,
  private, link-local (cloud metadata), multicast, reserved and IPv6 transition prefixes that
  embed such addresses are refused;
- with it set (``host``, ``host:port`` or a CIDR, comma-separated), only those.

The check runs where connections are opened (a urllib3 connection class), on the address the
socket really connects to: the name is resolved once, every address checked, the socket pinned
to a checked address and its peer checked again.  So every redirect hop is covered and a DNS
answer that changes between check and connect cannot slip through; TLS still verifies the host
name.  Proxies from the environment are not used for images (a proxy would hide the address).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util.connection import create_connection

from rpsam2_backend.core.errors import ConfigError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Global by ipaddress's tables, yet they reach internal addresses: carrier-grade NAT, and IPv6
# prefixes that embed an IPv4 address (NAT64, 6to4, Teredo).
_NOT_PUBLIC = [ipaddress.ip_network(n) for n in (
    "100.64.0.0/10", "64:ff9b::/96", "64:ff9b:1::/48", "2002::/16", "2001::/32",
)]


class BlockedDestination(Exception):
    """Raised while opening a connection the policy refuses.

    Not an OSError on purpose: urllib3 would turn that into a retryable connection error."""


def public_address(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip.version == net.version and ip in net for net in _NOT_PUBLIC):
        return False
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_unspecified or ip.is_loopback
                                 or ip.is_link_local or ip.is_private)


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


@dataclass(frozen=True)
class HostPolicy:
    trusted: frozenset[tuple[str, int]]  # the Label Studio host: always allowed
    hosts: frozenset[tuple[str, int | None]]  # listed names (port None = any port)
    networks: tuple[IPNetwork, ...]  # listed CIDRs and addresses

    @property
    def restricted(self) -> bool:
        return bool(self.hosts or self.networks)

    @classmethod
    def parse(cls, allowed: str, label_studio_url: str = "") -> HostPolicy:
        hosts: set[tuple[str, int | None]] = set()
        networks: list[IPNetwork] = []
        for raw in (part.strip() for part in allowed.split(",")):
            if not raw:
                continue
            try:
                networks.append(ipaddress.ip_network(raw.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            parts = urlsplit(f"//{raw}")
            try:
                port = parts.port
            except ValueError:
                port = -1
            if not parts.hostname or port == -1 or parts.path or "@" in raw:
                raise ConfigError(
                    f"RPSAM2_ALLOWED_IMAGE_HOSTS: {raw!r} is not a host, host:port or CIDR (e.g. "
                    f"images.example.org, minio:9000, 10.2.0.0/16)"
                )
            hosts.add((parts.hostname.lower(), port))
        trusted: set[tuple[str, int]] = set()
        if label_studio_url:
            ls = urlsplit(label_studio_url)
            if ls.hostname:
                trusted.add((ls.hostname.lower(), ls.port or _default_port(ls.scheme.lower())))
        return cls(frozenset(trusted), frozenset(hosts), tuple(networks))

    def by_name(self, host: str, port: int) -> bool:
        """Allowed whatever it resolves to: the Label Studio host, or a host listed by name."""
        host = host.lower().strip("[]")
        return (host, port) in self.trusted or (host, port) in self.hosts or (host, None) in self.hosts

    def by_address(self, ip: IPAddress) -> bool:
        if self.restricted:
            return any(ip.version == net.version and ip in net for net in self.networks)
        return public_address(ip)

    def refusal(self, host: str, port: int, address: str | None = None) -> str:
        where = f"{host}:{port}" + (f" ({address})" if address and address != host else "")
        if self.restricted:
            return (f"image host {where} is not in RPSAM2_ALLOWED_IMAGE_HOSTS; add it there if the backend "
                    f"may download task images from it")
        return (f"image host {where} is not a public address; the backend only downloads task images "
                f"from public hosts and Label Studio unless RPSAM2_ALLOWED_IMAGE_HOSTS lists it")


class _GuardedConnection:
    """Mixed into urllib3's connection classes: the policy decides before the socket connects."""

    policy: HostPolicy

    def _new_conn(self) -> socket.socket:
        host, port = self._dns_host, self.port  # type: ignore[attr-defined]
        named = self.policy.by_name(host, port)
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise NameResolutionError(host, self, exc) from exc  # type: ignore[arg-type]
        addresses = [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos]
        if not named:
            refused = next((a for a in addresses if not self.policy.by_address(a)), None)
            if refused is not None or not addresses:
                raise BlockedDestination(self.policy.refusal(host, port, str(refused) if refused else None))
        try:
            sock = create_connection(
                (str(addresses[0]), port), self.timeout,  # type: ignore[attr-defined]
                source_address=self.source_address, socket_options=self.socket_options,  # type: ignore[attr-defined]
            )
        except TimeoutError as exc:
            raise ConnectTimeoutError(self, f"connecting to {host}:{port} timed out") from exc
        except OSError as exc:
            raise NewConnectionError(self, f"cannot connect to {host}:{port}: {exc}") from exc  # type: ignore[arg-type]
        peer = ipaddress.ip_address(sock.getpeername()[0].split("%", 1)[0])
        if not named and not self.policy.by_address(peer):
            sock.close()
            raise BlockedDestination(self.policy.refusal(host, port, str(peer)))
        return sock


class GuardedAdapter(HTTPAdapter):
    def __init__(self, policy: HostPolicy) -> None:
        http = type("GuardedHTTPConnection", (_GuardedConnection, HTTPConnection), {"policy": policy})
        https = type("GuardedHTTPSConnection", (_GuardedConnection, HTTPSConnection), {"policy": policy})
        self._pools = {
            "http": type("GuardedHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http}),
            "https": type("GuardedHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": https}),
        }
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = self._pools

    def proxy_manager_for(self, proxy, **proxy_kwargs):  # noqa: ANN001, ANN201 (requests' signature)
        raise BlockedDestination("image downloads never go through a proxy (the policy checks the real host)")


def guarded_session(policy: HostPolicy, max_redirects: int = 5) -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # no proxies and no .netrc credentials from the environment
    session.max_redirects = max_redirects
    adapter = GuardedAdapter(policy)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
