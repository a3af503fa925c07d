"""GitHub App key pairs for tests, generated at test time by the ``openssl`` CLI (never committed).

GitHub hands an App's private key out as PKCS#1 PEM (``BEGIN RSA PRIVATE KEY``); ``openssl
genrsa -traditional`` writes that form. The public half (SubjectPublicKeyInfo PEM) is what the
GitHub stand-in verifies JWTs with.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path


@dataclass(frozen=True)
class AppKey:
    private_pem: bytes  # PKCS#1, as GitHub gives it
    public_pem: bytes

    def body_lines(self) -> list[str]:
        """The base64 lines of the private key: none may appear in any output."""
        return [line for line in self.private_pem.decode().splitlines() if "-----" not in line]


@cache
def app_key(name: str = "app") -> AppKey:
    """A fresh 2048-bit RSA key pair per ``name``, the same one for the whole test session."""
    del name  # only the cache key: each name gets its own pair
    with tempfile.TemporaryDirectory() as scratch:
        private = Path(scratch, "key.pem")
        subprocess.run(
            ["openssl", "genrsa", "-traditional", "-out", str(private), "2048"],
            check=True,
            capture_output=True,
        )
        public = subprocess.run(
            ["openssl", "rsa", "-in", str(private), "-pubout"],
            check=True,
            capture_output=True,
        ).stdout
        return AppKey(private.read_bytes(), public)
