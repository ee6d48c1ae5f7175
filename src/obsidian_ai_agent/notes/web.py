"""Web pages as sources: fetch one (SSRF-guarded, size-capped, time-bounded) and extract its main text.

A page becomes a `web` source named by its URL (see `ParsedSource.path`). The fetch connects only to the
addresses the URL guard checked, follows redirects itself so that every hop is checked again, and reads
at most `max_bytes` of (decoded) body.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from email.message import Message
from urllib.parse import urljoin

import httpx

from .. import __version__
from ..security.ssrf import CheckedUrl, Resolver, UrlRefused, check_url, resolve
from .model import SourceError

MAX_REDIRECTS = 5
USER_AGENT = f"obsidian-ai-agent/{__version__} (indexing a page a user asked for)"
HTML_TYPES = ("text/html", "application/xhtml+xml")
TEXT_TYPES = ("text/plain", "text/markdown", "text/x-markdown")
_REDIRECTS = (301, 302, 303, 307, 308)
_TRANSIENT_STATUS = (408, 425, 429, 500, 502, 503, 504)


class FetchError(SourceError):
    """A page that could not be fetched or read; `transient` errors (timeouts, 5xx) may be retried."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class Fetched:
    url: str
    """The URL asked for (normalized): the name of the source."""
    final_url: str
    """Where the page was found after redirects."""
    status: int
    content_type: str
    charset: str | None
    body: bytes


@dataclass(frozen=True)
class WebPage:
    url: str
    final_url: str
    title: str
    text: str
    nbytes: int


def fetch(
    url: str,
    *,
    timeout: float,
    max_bytes: int,
    allow_private: bool = False,
    max_redirects: int = MAX_REDIRECTS,
    resolver: Resolver = resolve,
) -> Fetched:
    """GET `url` and read its body; every hop checked by the URL guard. Raises `FetchError`."""
    deadline = time.monotonic() + timeout
    first: CheckedUrl | None = None
    current = url
    headers = {"User-Agent": USER_AGENT, "Accept": "text/html,application/xhtml+xml,text/plain;q=0.9"}
    with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False, headers=headers) as client:
        for _hop in range(max_redirects + 1):
            try:
                checked = check_url(current, allow_private=allow_private, resolver=resolver)
            except UrlRefused as e:
                where = "" if first is None else f" (redirected from {first.url})"
                raise FetchError(f"{e}{where}") from None
            first = first or checked
            response = _send(client, checked, deadline)
            try:
                if response.status_code in _REDIRECTS:
                    location = response.headers.get("location")
                    if not location:
                        raise FetchError(f"{checked.url} answered {response.status_code} without a Location")
                    current = urljoin(checked.url, location)
                    continue
                if response.status_code >= 400:
                    transient = response.status_code in _TRANSIENT_STATUS
                    raise FetchError(
                        f"{checked.url} answered HTTP {response.status_code}"
                        + ("; will retry" if transient else "; check the address"),
                        transient=transient,
                    )
                body = _read(response, checked.url, max_bytes, deadline)
                ctype, charset = _content_type(response.headers.get("content-type", ""))
                return Fetched(first.url, checked.url, response.status_code, ctype, charset, body)
            finally:
                response.close()
    raise FetchError(f"{url} redirected more than {max_redirects} times; give the page's final address")


def _send(client: httpx.Client, checked: CheckedUrl, deadline: float) -> httpx.Response:
    """Connect to the checked addresses in turn (never to a fresh DNS answer) and send the request."""
    target = httpx.URL(checked.url)
    last: Exception | None = None
    for ip in checked.addresses:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        request = client.build_request(
            "GET",
            target.copy_with(host=str(ip)),
            headers={"Host": checked.host_header},
            extensions={"sni_hostname": checked.host, "timeout": httpx.Timeout(remaining).as_dict()},
        )
        try:
            return client.send(request, stream=True)
        except httpx.ConnectError as e:
            last = e
        except httpx.TimeoutException:
            raise FetchError(f"{checked.url} did not answer in time; will retry", transient=True) from None
        except httpx.HTTPError as e:
            raise FetchError(f"{checked.url} could not be fetched: {_short(e)}", transient=True) from None
    why = _short(last) if last is not None else "no time left"
    raise FetchError(f"cannot connect to {checked.url}: {why}", transient=True)


def _read(response: httpx.Response, url: str, max_bytes: int, deadline: float) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise FetchError(f"{url} is larger ({declared} bytes) than the fetch limit of {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in response.iter_bytes():  # decoded: a compressed bomb meets the same cap
            size += len(chunk)
            if size > max_bytes:
                raise FetchError(f"{url} is larger than the fetch limit of {max_bytes} bytes")
            if time.monotonic() > deadline:
                raise FetchError(f"{url} took too long to download; will retry", transient=True)
            chunks.append(chunk)
    except httpx.TimeoutException:
        raise FetchError(f"{url} stopped sending in time; will retry", transient=True) from None
    except httpx.HTTPError as e:
        raise FetchError(f"{url} could not be read: {_short(e)}", transient=True) from None
    return b"".join(chunks)


def _content_type(header: str) -> tuple[str, str | None]:
    msg = Message()
    msg["content-type"] = header or "application/octet-stream"
    charset = msg.get_param("charset")
    return msg.get_content_type(), str(charset) if isinstance(charset, str) else None


def _short(e: BaseException | None) -> str:
    text = str(e).strip().splitlines()[0] if e is not None and str(e).strip() else type(e).__name__
    return text[:160]


def decode_text(body: bytes, charset: str | None) -> str:
    """The page's text in the charset it declares; a charset Python does not know (a typo, a made-up
    name) is detected from the bytes instead, and UTF-8 with replacement is the last resort."""
    import codecs

    if charset:
        try:
            codecs.lookup(charset)
        except LookupError:
            charset = None
    if charset is None:
        try:  # installed with requests and trafilatura's dependencies, not by us
            from charset_normalizer import from_bytes
        except ImportError:
            return body.decode("utf-8", errors="replace")
        best = from_bytes(body[:1_048_576]).best()
        charset = best.encoding if best is not None else "utf-8"
    return body.decode(charset, errors="replace")


def extract(fetched: Fetched) -> tuple[str, str]:
    """`(title, main text)` of a fetched page; paragraphs are separated by blank lines."""
    ctype = fetched.content_type
    sniffed_html = fetched.body.lstrip()[:1] == b"<"
    if ctype in TEXT_TYPES or (ctype == "application/octet-stream" and not sniffed_html):
        return fetched.final_url, decode_text(fetched.body, fetched.charset)
    if ctype not in HTML_TYPES and not (ctype == "application/octet-stream" and sniffed_html):
        raise FetchError(
            f"{fetched.final_url} is {ctype}, not a web page; index PDFs with /api/index_pdf"
            if ctype == "application/pdf"
            else f"{fetched.final_url} is {ctype}, not a web page (HTML or plain text)"
        )
    import trafilatura

    found = trafilatura.extract(
        fetched.body,
        url=fetched.final_url,
        output_format="json",
        with_metadata=True,
        include_comments=False,
        include_tables=True,
        deduplicate=False,
    )
    data = json.loads(found) if found else {}
    lines = [line.strip() for line in str(data.get("text") or "").splitlines()]
    text = "\n\n".join(line for line in lines if line)
    if not text:
        raise FetchError(
            f"no main text found on {fetched.final_url} (an empty page, or one built by scripts)"
        )
    title = str(data.get("title") or "").strip() or fetched.final_url
    return title, text


def fetch_page(
    url: str,
    *,
    timeout: float,
    max_bytes: int,
    allow_private: bool = False,
    resolver: Resolver = resolve,
) -> WebPage:
    """Fetch a page and extract its title and main text (`FetchError` says why not)."""
    fetched = fetch(url, timeout=timeout, max_bytes=max_bytes, allow_private=allow_private, resolver=resolver)
    title, text = extract(fetched)
    return WebPage(fetched.url, fetched.final_url, title, text, len(fetched.body))
