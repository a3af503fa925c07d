"""GET requests for doctor's probes, and the one POST that mints a GitHub App installation token.

Doctor changes nothing: ``get`` is every probe, and ``mint_installation_token`` sends the only
other request, ``POST /app/installations/{id}/access_tokens`` with no body, which creates a
one-hour token and changes nothing in GitHub (it refuses any other URL). Both return an
:class:`Answer`.

``UrllibHttp().get(url, headers)`` returns an :class:`Answer` (status, lower-cased headers,
body) for any HTTP status, follows no redirect (a redirect to an Access login page is an answer
worth seeing, not a page to fetch), and raises :class:`Unreachable` when no answer came (DNS,
refused connection, TLS, timeout). Tests hand the checks any object with the same ``get``.
Standard library only.
"""

from __future__ import annotations

import json
import re
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

TIMEOUT_SECONDS: Final = 10.0
MAX_BODY_BYTES: Final = 4 * 1024 * 1024
USER_AGENT: Final = "nomad-github-runners-doctor"
_ACCESS_TOKENS_PATH: Final = re.compile(r"/app/installations/[0-9]+/access_tokens\Z")


class Unreachable(Exception):
    """No HTTP answer at all; the message says why (without any header or credential)."""


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-cased names
    body: bytes = b""

    def json(self) -> Any:
        """The body as JSON; ``ValueError`` when it is not."""
        return json.loads(self.body)

    def text(self, limit: int = 120) -> str:
        """The start of the body on one line, for messages (never used for secret answers)."""
        text = self.body[: limit * 4].decode("utf-8", "replace")
        text = " ".join(text.split())
        return text if len(text) <= limit else f"{text[: limit - 3]}..."


class Http(Protocol):
    def get(self, url: str, headers: Mapping[str, str]) -> Answer: ...

    def mint_installation_token(self, url: str, headers: Mapping[str, str]) -> Answer: ...


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 3xx reaches the caller as an answer


class UrllibHttp:
    """:class:`Http` over urllib, with the system's CAs plus ``ca_file`` (``NOMAD_CACERT``) and
    a client certificate (``NOMAD_CLIENT_CERT``/``_KEY``), as the Nomad provider takes them; a
    client certificate is only sent to a server that asks for one (a Nomad with
    ``verify_https_client``)."""

    def __init__(
        self,
        *,
        timeout: float = TIMEOUT_SECONDS,
        ca_file: str | None = None,
        client_cert: str | None = None,
        client_key: str | None = None,
    ) -> None:
        self._timeout = timeout
        self.context = ssl.create_default_context()  # the system's CAs, which ca_file adds to
        if ca_file:
            self.context.load_verify_locations(cafile=ca_file)
        if client_cert:
            self.context.load_cert_chain(client_cert, client_key or None)
        self._opener = urllib.request.build_opener(
            _NoRedirect(), urllib.request.HTTPSHandler(context=self.context)
        )

    def get(self, url: str, headers: Mapping[str, str]) -> Answer:
        return self._send(url, headers, "GET", None)

    def mint_installation_token(self, url: str, headers: Mapping[str, str]) -> Answer:
        """``POST`` with an empty body to an ``/app/installations/{id}/access_tokens`` URL only."""
        path = "/" + url.partition("://")[2].partition("/")[2].partition("?")[0]
        if not _ACCESS_TOKENS_PATH.search(path):
            raise ValueError(f"doctor only POSTs to /app/installations/{{id}}/access_tokens: {url}")
        return self._send(url, headers, "POST", b"")

    def _send(
        self, url: str, headers: Mapping[str, str], method: str, data: bytes | None
    ) -> Answer:
        request = urllib.request.Request(  # noqa: S310 (http(s) URLs from the validated config)
            url, data=data, headers={"User-Agent": USER_AGENT, **headers}, method=method
        )
        try:
            with self._opener.open(request, timeout=self._timeout) as response:
                return _answer(response.status, response.headers, response.read(MAX_BODY_BYTES))
        except urllib.error.HTTPError as error:
            with error:
                return _answer(error.code, error.headers, error.read(MAX_BODY_BYTES))
        except (urllib.error.URLError, OSError, ssl.SSLError) as error:
            reason = getattr(error, "reason", error)
            raise Unreachable(f"no answer from {_origin(url)} ({reason})") from None


def _answer(status: int, headers: Any, body: bytes) -> Answer:
    return Answer(status, {name.lower(): value for name, value in headers.items()}, body)


def _origin(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"
