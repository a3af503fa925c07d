"""What GitHub says when a REST call fails: the ``message`` of its error body, on one line.

GitHub's REST errors are JSON objects with a ``message`` (``{"message": "Bad credentials", ...}``);
a proxy in between may answer with HTML or plain text instead. ``github_message`` gives the message,
else the body's text, whitespace folded and cut to a bound, so a reason can go into a log line or an
exception without flooding it. Error bodies carry no credential. Standard library only, no I/O.
"""

from __future__ import annotations

import json
from typing import Any, Final

DEFAULT_LIMIT: Final = 200


def github_message(body: bytes, limit: int = DEFAULT_LIMIT) -> str:
    """The error body's ``message`` (or its text), on one line, at most ``limit`` characters."""
    try:
        document: Any = json.loads(body)
        text = document.get("message") if isinstance(document, dict) else None
    except ValueError:
        text = None
    if not isinstance(text, str) or not text:
        text = body.decode("utf-8", errors="replace")
    return " ".join(text.split())[:limit] or "(empty body)"
