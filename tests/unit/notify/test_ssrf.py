"""The SSRF guard refuses internal destinations before any connection, at save and at connect."""

from __future__ import annotations

import ipaddress

import httpx
import pytest

from services.notify.ssrf import (
    AllowList,
    DestinationRefused,
    GuardedTransport,
    IPAddress,
    SsrfGuard,
    address_problem,
    guarded_client,
)

pytestmark = pytest.mark.unit


class FakeDns:
    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.asked.append(host)
        if host not in self.answers:
            raise OSError("NXDOMAIN")
        return [ipaddress.ip_address(a) for a in self.answers[host]]


class Recorder:
    """An inner transport that records every connection it is asked to make."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(204)


def client(guard: SsrfGuard, recorder: Recorder) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=GuardedTransport(guard, httpx.MockTransport(recorder)))


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("169.254.169.254", "cloud metadata"),
        ("100.100.100.200", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("240.0.0.1", "private"),  # reserved; Python also counts it private
        ("100.64.0.1", "not global"),  # carrier-grade NAT
        ("::ffff:10.0.0.1", "private"),  # IPv4-mapped IPv6 is judged as the IPv4 address
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_address_classification(address: str, problem: str | None) -> None:
    assert address_problem(ipaddress.ip_address(address)) == problem


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "https://internal.example/hook",
    ],
)
async def test_refused_without_allow_list_before_any_connection(url: str) -> None:
    dns = FakeDns({"internal.example": ["127.0.0.1"]})
    guard = SsrfGuard(AllowList.parse([]), dns)
    with pytest.raises(DestinationRefused):
        await guard.check_url(url)  # when the endpoint is saved
    recorder = Recorder()
    async with client(guard, recorder) as http:
        with pytest.raises(DestinationRefused):
            await http.post(url, content=b"{}")  # and at connect time
    assert recorder.requests == []


async def test_the_real_resolver_sees_localhost_as_loopback() -> None:
    guard = SsrfGuard(AllowList.parse([]))
    with pytest.raises(DestinationRefused, match="loopback"):
        await guard.check_url("http://localhost:9/hook")


async def test_a_name_with_one_internal_address_among_public_ones_is_refused() -> None:
    guard = SsrfGuard(
        AllowList.parse([]), FakeDns({"mixed.example": ["93.184.216.34", "10.1.2.3"]})
    )
    with pytest.raises(DestinationRefused, match=r"10\.1\.2\.3"):
        await guard.check_url("https://mixed.example/")


async def test_dns_rebinding_connects_to_the_checked_address_only() -> None:
    # Public at save time, internal at connect time: the second answer is what gets checked
    # and refused; a public answer is what the connection is pinned to.
    dns = FakeDns({"rebind.example": ["93.184.216.34"]})
    guard = SsrfGuard(AllowList.parse([]), dns)
    await guard.check_url("https://rebind.example/hook")
    recorder = Recorder()
    async with client(guard, recorder) as http:
        response = await http.post("https://rebind.example/hook", content=b"{}")
        assert response.status_code == 204
        sent = recorder.requests[-1]
        assert sent.url.host == "93.184.216.34"
        assert sent.headers["host"] == "rebind.example"
        assert sent.extensions["sni_hostname"] == "rebind.example"
        dns.answers["rebind.example"] = ["127.0.0.1"]
        with pytest.raises(DestinationRefused, match="loopback"):
            await http.post("https://rebind.example/hook", content=b"{}")
    assert len(recorder.requests) == 1


@pytest.mark.parametrize(
    ("entries", "url"),
    [
        (["127.0.0.1"], "http://127.0.0.1:8080/hook"),
        (["10.0.0.0/8"], "http://10.0.0.1/hook"),
        (["hooks.internal"], "http://hooks.internal/hook"),
        (["HOOKS.internal."], "http://hooks.internal/hook"),
    ],
)
async def test_the_allow_list_admits_what_it_names(entries: list[str], url: str) -> None:
    guard = SsrfGuard(AllowList.parse(entries), FakeDns({"hooks.internal": ["10.9.9.9"]}))
    await guard.check_url(url)
    recorder = Recorder()
    async with client(guard, recorder) as http:
        assert (await http.post(url, content=b"{}")).status_code == 204
    assert len(recorder.requests) == 1


async def test_the_allow_list_admits_nothing_else() -> None:
    guard = SsrfGuard(AllowList.parse(["127.0.0.1"]), FakeDns({}))
    with pytest.raises(DestinationRefused, match="cloud metadata"):
        await guard.check_url("http://169.254.169.254/")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/x", "invalid_url"),
        ("http://user:pw@example.com/x", "invalid_url"),
        ("http://nowhere.invalid/x", "unresolvable"),
    ],
)
async def test_bad_urls_are_refused_with_a_reason(url: str, reason: str) -> None:
    guard = SsrfGuard(AllowList.parse([]), FakeDns({}))
    with pytest.raises(DestinationRefused) as caught:
        await guard.check_url(url)
    assert caught.value.reason == reason


def test_allow_list_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="not a host"):
        AllowList.parse(["10.0.0.0/33x"])


async def test_redirects_are_not_followed() -> None:
    seen: list[str] = []

    def redirecting(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(302, headers={"location": "http://169.254.169.254/"})

    guard = SsrfGuard(AllowList.parse(["127.0.0.1"]), FakeDns({}))
    async with guarded_client(guard, 5.0, httpx.MockTransport(redirecting)) as http:
        response = await http.post("http://127.0.0.1:1/hook", content=b"{}")
    assert response.status_code == 302
    assert seen == ["http://127.0.0.1:1/hook"]
