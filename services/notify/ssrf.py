"""The SSRF guard: webhook destinations must be public addresses unless the allow-list names them.

Checked when an endpoint is saved (`SsrfGuard.check_url`) and again on every connection by
`GuardedTransport`, which resolves the host itself, checks every address and connects to the
address it checked (the Host header and TLS server name stay the original host), so a DNS answer
that changes between the check and the connection (DNS rebinding) cannot slip through.
Redirects are never followed (the client is built with follow_redirects=False).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]

# Cloud instance-metadata endpoints (AWS/GCP/Azure/OpenStack, AWS IPv6, Alibaba Cloud, Tencent).
METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", "169.254.0.23")
)


class DestinationRefused(Exception):
    """The destination may not be called. `reason` is short and bounded, `detail` explains."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def address_problem(address: IPAddress) -> str | None:
    """Why an address is not a public destination, or None when it is."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address_problem(address.ipv4_mapped)
    if address in METADATA:
        return "cloud metadata"
    for name, flag in (
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("unspecified", address.is_unspecified),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
    ):
        if flag:
            return name
    if not address.is_global:
        return "not global"  # shared address space (100.64/10), documentation ranges, ...
    return None


@dataclass(frozen=True)
class AllowList:
    """Host names (exact, any case) and networks a destination may use although not public."""

    hosts: frozenset[str]
    networks: tuple[IPNetwork, ...]

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowList:
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in entries:
            text = entry.strip()
            try:
                networks.append(ipaddress.ip_network(text, strict=False))
            except ValueError:
                if not text or "/" in text or " " in text:
                    raise ValueError(
                        f"allow-list entry {entry!r} is not a host, address or CIDR"
                    ) from None
                hosts.add(text.lower().rstrip("."))
        return cls(frozenset(hosts), tuple(networks))

    def allows(self, host: str, address: IPAddress) -> bool:
        if host.lower().rstrip(".") in self.hosts:
            return True
        return any(address.version == n.version and address in n for n in self.networks)


async def system_resolver(host: str, port: int) -> list[IPAddress]:
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    seen: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in seen:
            seen.append(address)
    return seen


class SsrfGuard:
    def __init__(self, allow_list: AllowList, resolver: Resolver = system_resolver) -> None:
        self.allow_list = allow_list
        self._resolve = resolver

    async def check(self, host: str, port: int) -> list[IPAddress]:
        """The addresses `host` resolves to, when every one of them may be called; otherwise
        DestinationRefused. (All, not any: a name that also resolves to an internal address is
        refused, whichever address a connection would pick.)"""
        try:
            literal: IPAddress | None = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        if literal is not None:
            addresses = [literal]
        else:
            try:
                addresses = await self._resolve(host, port)
            except OSError as exc:
                raise DestinationRefused("unresolvable", f"cannot resolve {host!r}: {exc}") from exc
            if not addresses:
                raise DestinationRefused("unresolvable", f"{host!r} resolves to no address")
        for address in addresses:
            problem = address_problem(address)
            if problem is not None and not self.allow_list.allows(host, address):
                raise DestinationRefused(
                    problem.replace(" ", "_").replace("-", "_"),
                    f"{host} resolves to {address} ({problem}); not in the allow-list "
                    "(SKIPWATCH_NOTIFY__ALLOW_LIST)",
                )
        return addresses

    async def check_url(self, url: str) -> list[IPAddress]:
        """Validate a destination URL (scheme, host) and its addresses; for saving an endpoint."""
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise DestinationRefused("invalid_url", f"invalid URL: {exc}") from exc
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise DestinationRefused("invalid_url", "the URL must be http(s)://host/...")
        if parsed.userinfo:
            raise DestinationRefused("invalid_url", "credentials in the URL are not allowed")
        return await self.check(
            parsed.host, parsed.port or (443 if parsed.scheme == "https" else 80)
        )


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that checks the destination's addresses on every request and connects
    to the first address it checked; DestinationRefused is raised before any connection."""

    def __init__(self, guard: SsrfGuard, inner: httpx.AsyncBaseTransport | None = None) -> None:
        self._guard = guard
        self._inner = inner or httpx.AsyncHTTPTransport(retries=0)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        host = url.host
        port = url.port or (443 if url.scheme == "https" else 80)
        addresses = await self._guard.check(host, port)
        pinned = str(addresses[0])
        # The Host header was set from the original URL when the request was built; TLS must
        # still present and verify the original name.
        request.url = url.copy_with(host=pinned)
        if url.scheme == "https":
            request.extensions = {**request.extensions, "sni_hostname": host}
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def guarded_client(
    guard: SsrfGuard,
    timeout_s: float,
    inner: httpx.AsyncBaseTransport | None = None,
    limits: httpx.Limits | None = None,
) -> httpx.AsyncClient:
    """The client every receiver uses. `inner` is the transport under the guard (tests)."""
    if inner is None:
        inner = httpx.AsyncHTTPTransport(retries=0, limits=limits or httpx.Limits())
    return httpx.AsyncClient(
        transport=GuardedTransport(guard, inner),
        timeout=httpx.Timeout(timeout_s),
        follow_redirects=False,
        trust_env=False,  # never route through a proxy from the environment around the guard
    )
