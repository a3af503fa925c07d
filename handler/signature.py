"""GitHub webhook signature verification over the raw request body.

``verify_signature(secret, body, header)`` returns quietly when ``header`` is
``sha256=<hex HMAC-SHA256(secret, body)>`` and raises a :class:`SignatureError` subclass
otherwise. It compares in constant time and never looks at the body's content: the bytes GitHub
signed are the bytes we check, before any parsing. Standard library only, no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Final

SIGNATURE_HEADER: Final = "x-hub-signature-256"
_PREFIX: Final = "sha256="
_HEX_DIGEST: Final = re.compile(r"^[0-9a-f]{64}$")


class SignatureError(Exception):
    """The delivery is not authentic; the message says why without echoing secrets."""


class MissingSignature(SignatureError):
    """No X-Hub-Signature-256 header (GitHub sends one whenever the hook has a secret)."""


class UnsupportedAlgorithm(SignatureError):
    """The header names another algorithm than sha256 (e.g. the legacy sha1 header value)."""


class MalformedSignature(SignatureError):
    """The header is not ``sha256=`` followed by 64 lower-case hex digits."""


class SignatureMismatch(SignatureError):
    """Well-formed, but not made with this repository's secret over these bytes."""


class MissingSecret(SignatureError):
    """We have no secret to check against: never treat that as 'no check needed'."""


def sign(secret: str, body: bytes) -> str:
    """The header value GitHub sends for ``body`` under ``secret`` (used by tests and benches)."""
    return _PREFIX + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(secret: str, body: bytes, header: str | None) -> None:
    """Raise unless ``header`` is the sha256 HMAC of exactly ``body`` under ``secret``."""
    if not secret:
        raise MissingSecret("no webhook secret configured")
    if header is None or not header.strip():
        raise MissingSignature("missing X-Hub-Signature-256 header")
    algorithm, separator, digest = header.strip().partition("=")
    if not separator:
        raise MalformedSignature("X-Hub-Signature-256 is not 'sha256=<hex>'")
    if algorithm.lower() != "sha256":
        raise UnsupportedAlgorithm("X-Hub-Signature-256 must use sha256")
    digest = digest.lower()
    if not _HEX_DIGEST.match(digest):
        raise MalformedSignature("X-Hub-Signature-256 digest is not 64 hex digits")
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, digest):
        raise SignatureMismatch("X-Hub-Signature-256 does not match the body")
