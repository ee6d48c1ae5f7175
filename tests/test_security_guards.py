"""The vault path guard and the URL (SSRF) guard, alone: examples, properties, and the fetcher that
relies on the URL guard, against a real HTTP server on loopback."""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from obsidian_ai_agent.notes.web import FetchError, extract, fetch, fetch_page
from obsidian_ai_agent.security.paths import (
    PDF_SUFFIXES,
    PathRefused,
    check_relative,
    vault_path,
)
from obsidian_ai_agent.security.ssrf import UrlRefused, check_url, literal_address, refusal

# -- the vault path guard ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rel", "reason"),
    [
        ("", "empty"),
        ("../../x.md", "'..' segment"),
        ("Notes/../../x.md", "'..' segment"),
        ("Notes/./x.md", "'.' segment"),
        ("Notes//x.md", "empty segment"),
        ("/etc/passwd", "absolute"),
        ("/x.md", "absolute"),
        ("C:\\x.md", "backslash"),
        ("C:/x.md", "drive letter"),
        ("c:x.md", "drive letter"),
        ("Notes\\x.md", "backslash"),
        ("a\x00b.md", "NUL"),
        ("a\nb.md", "control"),
        (".obsidian/x.md", ".obsidian/"),
        (".OBSIDIAN/workspace.md", ".OBSIDIAN/"),
        ("Sub/.git/x.md", ".git/"),
        (".trash/x.md", ".trash/"),
        ("Notes/x.txt", "must end with .md"),
        ("Notes/x.md.exe", "must end with .md"),
        ("Notes/.md", "no name"),
        ("Notes/x.md/", "empty segment"),
        (" Notes/x.md", "space"),
        ("x" * 300 + ".md", "longer than 255 bytes"),
    ],
)
def test_unsafe_relative_paths_are_refused_with_the_reason(rel: str, reason: str) -> None:
    with pytest.raises(PathRefused) as e:
        check_relative(rel)
    assert reason in str(e.value)


@pytest.mark.parametrize("rel", ["Note.md", "Folder/Sub/Note.markdown", "Ünïcödé/日本語.md", "a b/c (1).md"])
def test_plain_vault_paths_pass_the_guard_unchanged(rel: str) -> None:
    assert check_relative(rel) == rel


def test_a_path_through_a_symlink_out_of_the_vault_is_refused(tmp_path: Path) -> None:
    vault, outside = tmp_path / "vault", tmp_path / "outside"
    vault.mkdir()
    outside.mkdir()
    (vault / "escape").symlink_to(outside, target_is_directory=True)
    (vault / "inner").mkdir()
    (vault / "alias").symlink_to(vault / "inner", target_is_directory=True)
    with pytest.raises(PathRefused, match="resolves outside the vault"):
        vault_path(vault, "escape/x.md")
    (vault / "file.md").symlink_to(outside / "secret.md")
    with pytest.raises(PathRefused, match="resolves outside the vault"):
        vault_path(vault, "file.md")
    assert vault_path(vault, "alias/x.md").path == vault / "alias" / "x.md"


def test_the_index_globs_and_suffixes_are_honoured(tmp_path: Path) -> None:
    with pytest.raises(PathRefused, match="excluded"):
        vault_path(tmp_path, "Private/x.md", exclude=["Private/**"])
    with pytest.raises(PathRefused, match="include"):
        vault_path(tmp_path, "x.md", include=["Notes/**"])
    with pytest.raises(PathRefused, match=r"\.pdf"):
        vault_path(tmp_path, "x.md", PDF_SUFFIXES)
    assert vault_path(tmp_path, "Papers/x.PDF", PDF_SUFFIXES).rel == "Papers/x.PDF"


@pytest.fixture(scope="module")
def guard_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("guard-vault").resolve()


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab./\\:%\x00C .mdtxgio")), max_size=24))
def test_whatever_the_guard_accepts_stays_inside_the_vault(guard_root: Path, rel: str) -> None:
    try:
        found = vault_path(guard_root, rel)
    except PathRefused:
        return
    parts = found.rel.split("/")
    assert ".." not in parts and "." not in parts and "" not in parts
    assert "\\" not in found.rel and "\x00" not in found.rel and not found.rel.startswith("/")
    assert found.path.resolve().is_relative_to(guard_root)
    assert found.rel.lower().endswith((".md", ".markdown"))


# -- the URL guard -----------------------------------------------------------------------------------


def _offline(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    raise OSError(-2, "Name or service not known")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1/", "loopback"),
        ("http://127.8.9.10:8080/x", "loopback"),
        ("http://10.0.0.5/", "private"),
        ("http://172.16.3.4/", "private"),
        ("http://192.168.1.1/", "private"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://100.64.0.1/", "not a public address"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://224.0.0.251/", "multicast"),
        ("http://[::1]/", "loopback"),
        ("http://[::]/", "unspecified"),
        ("http://[fe80::1%25eth0]/", "link-local"),
        ("http://[fd00::1]/", "private"),
        ("http://[ff02::1]/", "multicast"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://[::ffff:169.254.169.254]/", "link-local"),
        ("http://[64:ff9b::a00:1]/", "private"),
        ("http://[2002:c0a8:101::]/", "private"),
        ("http://2130706433/", "loopback"),
        ("http://0x7f000001/", "loopback"),
        ("http://0x7f.1/", "loopback"),
        ("http://0177.0.0.1/", "loopback"),
        ("http://127.1/", "loopback"),
        ("http://0/", "unspecified"),
        ("file:///etc/passwd", "only http:// and https://"),
        ("gopher://example.org/", "only http:// and https://"),
        ("javascript:alert(1)", "only http:// and https://"),
        ("//example.org/x", "no scheme"),
        ("http://user:secret@example.org/", "user name or password"),
        ("http://@example.org/", "user name or password"),
        ("http:///path", "no host"),
        ("http://exa mple.org/", "spaces"),
        ("http://127.0.0.1:0/", "port is 0"),
        ("http://127.0.0.1:99999/", "cannot be read"),
        ("http://%31%32%37.0.0.1/", "not a valid domain name"),
        ("http://nowhere.invalid/", "cannot be resolved"),
    ],
)
def test_the_url_guard_refuses_non_public_and_unusual_urls(url: str, reason: str) -> None:
    with pytest.raises(UrlRefused) as e:
        check_url(url, resolver=_offline)
    assert reason in str(e.value)


def test_a_host_name_is_judged_by_every_address_it_resolves_to() -> None:
    def resolver(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        return [ipaddress.ip_address("93.184.215.14"), ipaddress.ip_address("10.1.1.1")]

    with pytest.raises(UrlRefused, match=r"'rebind\.example' resolves to 10\.1\.1\.1"):
        check_url("https://rebind.example/a", resolver=resolver)
    ok = check_url("https://Public.Example./a?q=1#part", resolver=lambda h, p: [resolver(h, p)[0]])
    assert ok.url == "https://public.example/a?q=1" and ok.port == 443
    assert ok.host_header == "public.example"


def test_allowing_private_urls_lifts_only_the_address_checks() -> None:
    assert check_url("http://127.0.0.1:8123/x", allow_private=True).host_header == "127.0.0.1:8123"
    assert check_url("http://[::1]/", allow_private=True).host_header == "[::1]"
    for url in ("file:///etc/passwd", "http://u:p@127.0.0.1/"):
        with pytest.raises(UrlRefused):
            check_url(url, allow_private=True)


_NON_PUBLIC_V4 = st.one_of(
    st.ip_addresses(v=4, network="127.0.0.0/8"),
    st.ip_addresses(v=4, network="10.0.0.0/8"),
    st.ip_addresses(v=4, network="172.16.0.0/12"),
    st.ip_addresses(v=4, network="192.168.0.0/16"),
    st.ip_addresses(v=4, network="169.254.0.0/16"),
    st.ip_addresses(v=4, network="0.0.0.0/8"),
    st.ip_addresses(v=4, network="224.0.0.0/4"),
)


@settings(max_examples=300, deadline=None)
@given(_NON_PUBLIC_V4)
def test_a_non_public_ipv4_address_is_refused_in_every_spelling(ip: ipaddress.IPv4Address) -> None:
    spellings = [
        f"http://{ip}/",
        f"http://{int(ip)}/",  # decimal
        "http://" + ".".join(f"0{int(b):o}" for b in ip.packed) + "/",  # octal
        f"http://{hex(int(ip))}/",  # hex
        f"http://[::ffff:{ip}]/",  # IPv4-mapped IPv6
        f"http://[64:ff9b::{ip}]/",  # NAT64
    ]
    for url in spellings:
        with pytest.raises(UrlRefused):
            check_url(url, resolver=_offline)


@settings(max_examples=300, deadline=None)
@given(st.ip_addresses(v=4))
def test_the_mapped_and_decimal_forms_get_the_same_verdict_as_the_address(ip: ipaddress.IPv4Address) -> None:
    assert literal_address(str(int(ip))) == ip
    verdicts = set()
    for url in (f"http://{ip}/", f"http://{int(ip)}/", f"http://[::ffff:{ip}]/"):
        try:
            check_url(url, resolver=_offline)
            verdicts.add(True)
        except UrlRefused:
            verdicts.add(False)
    assert verdicts == {refusal(ip) is None}


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.ip_addresses(v=6, network="fc00::/7"),
        st.ip_addresses(v=6, network="fe80::/10"),
        st.ip_addresses(v=6, network="ff00::/8"),
        st.ip_addresses(v=6, network="::/127"),
    )
)
def test_a_non_public_ipv6_address_is_refused(ip: ipaddress.IPv6Address) -> None:
    with pytest.raises(UrlRefused):
        check_url(f"http://[{ip}]/", resolver=_offline)


# -- the fetcher, against a real HTTP server on loopback ---------------------------------------------

PAGE = (
    "<html><head><title>Knots of the rope</title></head><body>"
    "<nav><a href='/'>Home</a> <a href='/about'>About</a></nav><article><h1>Knots of the rope</h1>"
    + "".join(
        f"<p>Paragraph {i}: there are grades of knots, called granthis in mystical psychology; "
        "they are knots of the rope itself, constituted of the very stuff of the rope.</p>"
        for i in range(8)
    )
    + "</article><footer>Copyright footer</footer></body></html>"
).encode()


class _Handler(BaseHTTPRequestHandler):
    routes: ClassVar[dict[str, tuple[int, dict[str, str], bytes]]] = {}
    hosts: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).hosts.append(self.headers.get("Host", ""))
        status, headers, body = self.routes.get(self.path, (404, {}, b"not here"))
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        if "/stream" not in self.path:  # else the body ends when the connection closes
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    html = {"Content-Type": "text/html; charset=utf-8"}
    _Handler.routes = {
        "/page": (200, html, PAGE),
        "/hop": (302, {"Location": "/page"}, b""),
        "/to-file": (302, {"Location": "file:///etc/passwd"}, b""),
        "/to-creds": (301, {"Location": "http://user:pw@127.0.0.1/page"}, b""),
        "/loop": (302, {"Location": "/loop"}, b""),
        "/big": (200, html, b"<html><body><p>" + b"x" * 50_000 + b"</p></body></html>"),
        "/big/stream": (200, html, b"<html><body><p>" + b"x" * 50_000 + b"</p></body></html>"),
        "/pdf": (200, {"Content-Type": "application/pdf"}, b"%PDF-1.4"),
        "/gone": (410, html, b"gone"),
        "/busy": (503, html, b"busy"),
    }
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_page_is_fetched_through_redirects_and_its_main_text_extracted(site: str) -> None:
    page = fetch_page(f"{site}/hop", timeout=10, max_bytes=1_000_000, allow_private=True)
    assert page.url == f"{site}/hop" and page.final_url == f"{site}/page"
    assert page.title == "Knots of the rope"
    assert "granthis in mystical psychology" in page.text
    assert "Copyright footer" not in page.text


def test_the_fetch_time_check_refuses_loopback_even_after_submission(site: str) -> None:
    with pytest.raises(FetchError, match="loopback"):
        fetch(f"{site}/page", timeout=10, max_bytes=1_000_000)


def test_a_changed_dns_answer_is_checked_again_at_fetch_time() -> None:
    def rebound(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        return [ipaddress.ip_address("169.254.169.254")]

    with pytest.raises(FetchError, match=r"'metadata\.example' resolves to 169\.254\.169\.254"):
        fetch("http://metadata.example/latest", timeout=5, max_bytes=1000, resolver=rebound)


def test_the_fetcher_connects_to_the_checked_address_not_a_fresh_lookup(site: str) -> None:
    port = site.rsplit(":", 1)[1]
    _Handler.hosts.clear()
    fetched = fetch(
        f"http://pinned.test:{port}/page",
        timeout=10,
        max_bytes=1_000_000,
        allow_private=True,
        resolver=lambda h, p: [ipaddress.ip_address("127.0.0.1")],
    )
    assert fetched.status == 200 and fetched.final_url == f"http://pinned.test:{port}/page"
    assert _Handler.hosts == [f"pinned.test:{port}"]


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/to-file", "only http:// and https://"),
        ("/to-creds", "user name or password"),
        ("/loop", "redirected more than"),
        ("/big", "than the fetch limit of 20000 bytes"),
        ("/big/stream", "larger than the fetch limit"),
        ("/gone", "HTTP 410"),
    ],
)
def test_every_redirect_hop_and_the_size_cap_are_enforced(site: str, path: str, reason: str) -> None:
    with pytest.raises(FetchError) as e:
        fetch(f"{site}{path}", timeout=10, max_bytes=20_000, allow_private=True)
    assert reason in str(e.value) and not e.value.transient


def test_server_errors_are_transient_and_non_pages_are_refused(site: str) -> None:
    with pytest.raises(FetchError) as e:
        fetch(f"{site}/busy", timeout=10, max_bytes=20_000, allow_private=True)
    assert e.value.transient
    pdf = fetch(f"{site}/pdf", timeout=10, max_bytes=20_000, allow_private=True)
    with pytest.raises(FetchError, match="index PDFs with /api/index_pdf"):
        extract(pdf)
