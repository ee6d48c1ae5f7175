"""The URL guard (SSRF): a URL the service is asked to fetch must be http(s), carry no credentials, and
resolve only to public addresses.

Refused addresses: loopback, private, link-local (cloud metadata at 169.254.169.254), multicast,
reserved, unspecified and every other non-global range, in IPv4 and IPv6, including IPv4 inside IPv6
(`::ffff:127.0.0.1`, NAT64, 6to4) and the numeric host forms C libraries accept (`2130706433`,
`0x7f.1`, `0177.0.0.1`). `allow_private` lifts the address checks (a vault on a home network); the
scheme and credential checks always hold.

The fetcher connects to the addresses checked here (see `notes/web.py`), so a DNS answer that changes
between the check and the connection cannot redirect it; each redirect is checked again.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[IPAddress]]

SCHEMES = {"http": 80, "https": 443}
MAX_URL_CHARS = 2048
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_NUMERIC_HOST = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]+)){0,3}\.?$", re.I)
_HOST_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$", re.I)


class UrlRefused(ValueError):
    """A URL the service will not fetch; the message says why."""


@dataclass(frozen=True)
class CheckedUrl:
    url: str
    """The URL as it will be fetched and named: scheme and host lower-cased, no fragment."""
    scheme: str
    host: str
    """The host name (IDNA-encoded), or the address for an IP literal (IPv6 without brackets)."""
    port: int
    addresses: tuple[IPAddress, ...]
    """Every address the host resolved to; all passed the guard. Connect to these, not to the name."""

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == SCHEMES[self.scheme] else f"{host}:{self.port}"


def refusal(address: IPAddress) -> str | None:
    """Why an address may not be fetched from, or None when it is a public address."""
    ip: IPAddress = address
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and any(ip in net for net in _NAT64):
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            inner = refusal(embedded)
            return f"{inner} (inside the IPv6 address {address})" if inner else None
    checks = (
        (ip.is_unspecified, "an unspecified address"),
        (ip.is_loopback, "a loopback address"),
        (ip.is_link_local, "a link-local address (cloud metadata lives there)"),
        (ip.is_multicast, "a multicast address"),
        (ip.is_private, "a private-network address"),
        (ip.is_reserved, "a reserved address"),
        (not ip.is_global, "not a public address"),
    )
    for hit, why in checks:
        if hit:
            return f"{address} is {why}"
    return None


def literal_address(host: str) -> IPAddress | None:
    """The address a host written as a number stands for (`127.0.0.1`, `::1`, `2130706433`, `0x7f.1`,
    `0177.0.0.1`), as C resolvers read it; None for a host name."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if not _NUMERIC_HOST.match(host):
        return None
    try:  # inet_aton reads the decimal, octal, hex and short forms that getaddrinfo would
        return ipaddress.IPv4Address(socket.inet_aton(host.rstrip(".")))
    except OSError:
        return None


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (TCP), in the resolver's order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if ip not in seen:
            seen.append(ip)
    return seen


def parse_url(url: str) -> tuple[str, str, int, str]:
    """`(scheme, host, port, normalized url)`, or `UrlRefused` for a URL that is not plain http(s)."""
    if not isinstance(url, str) or not url.strip():
        raise UrlRefused("the URL is empty; send an http:// or https:// address")
    url = url.strip()
    if len(url) > MAX_URL_CHARS:
        raise UrlRefused(f"the URL is longer than {MAX_URL_CHARS} characters")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise UrlRefused("the URL contains spaces or control characters; percent-encode them")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise UrlRefused(f"the URL cannot be read ({e}); send an http:// or https:// address") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        shown = f"'{scheme}:'" if scheme else "no scheme"
        raise UrlRefused(f"the URL has {shown}; only http:// and https:// pages can be indexed")
    if "@" in parts.netloc:
        raise UrlRefused("the URL carries a user name or password ('user@host'); send it without credentials")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise UrlRefused("the URL has no host; send an address like https://example.org/page")
    if port == 0:
        raise UrlRefused("the URL's port is 0; give a real port or none")
    literal = literal_address(host.split("%", 1)[0])
    if literal is not None:
        host = str(literal)
    else:
        try:
            host = host.encode("idna").decode("ascii").lower()
        except UnicodeError:
            raise UrlRefused(f"the host '{host}' is not a valid domain name") from None
        if not all(_HOST_LABEL.match(label) for label in host.split(".")):
            raise UrlRefused(f"the host '{host}' is not a valid domain name")
    port = port or SCHEMES[scheme]
    shown = f"[{host}]" if ":" in host else host
    netloc = shown if port == SCHEMES[scheme] else f"{shown}:{port}"
    normalized = urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))
    return scheme, host, port, normalized


def check_url(url: str, *, allow_private: bool = False, resolver: Resolver = resolve) -> CheckedUrl:
    """The URL checked and resolved, or `UrlRefused` with the reason. Resolves the host (blocking)."""
    scheme, host, port, normalized = parse_url(url)
    literal = literal_address(host)
    if literal is not None:
        addresses = [literal]
    else:
        try:
            addresses = resolver(host, port)
        except (OSError, UnicodeError) as e:
            reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
            raise UrlRefused(f"the host '{host}' cannot be resolved ({reason})") from None
        if not addresses:
            raise UrlRefused(f"the host '{host}' resolves to no address")
    if not allow_private:
        for ip in addresses:
            why = refusal(ip)
            if why is not None:
                named = "" if literal is not None else f"'{host}' resolves to {ip}: "
                raise UrlRefused(
                    f"refusing to fetch {url.strip()}: {named}{why}. Only public addresses are fetched "
                    "unless the server sets server.allow_private_urls"
                )
    return CheckedUrl(normalized, scheme, host, port, tuple(addresses))
