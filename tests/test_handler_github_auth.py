"""handler.github_auth under CPython: the Worker's App JWT, installation token, cache, quota.

The core signs through a port; here the port is the ``openssl`` CLI fed the PKCS#8 DER the core
built (the Worker's port is WebCrypto: tests/test_handler_github_auth_runtime.py). Requests go
over HTTP to the GitHub stand-in, which verifies each JWT with the App's public key.
"""

from __future__ import annotations

import asyncio
import base64
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from handler.github_auth import (
    JWT_BACKDATE_SECONDS,
    REFRESH_MARGIN_SECONDS,
    AppCredentials,
    GitHubAuthError,
    GitHubCredential,
    KeyFormatError,
    app_credentials_from_bindings,
    pkcs8_from_pem,
    rate_limit_status,
)
from handler.local_server import MemoryLedger, UrllibTransport
from handler.reconcile import github_settings_from_bindings
from handler.service import IncomingRequest, Ports, handle, settings_from_bindings
from tests.app_keys import AppKey, app_key
from tests.standins.github import (
    ACTIONS_READ_TOKEN,
    INSTALLATION_RATE_LIMIT,
    JWT_MAX_SECONDS,
    RATE_LIMIT,
    GitHubStandIn,
    Installation,
)
from tests.standins.nomad import NomadStandIn
from tests.standins.webhooks import REPOSITORY, bindings, register_pools, status_headers

APP_ID = 424242
INSTALLATION_ID = 777


class OpensslSigner:
    """RS256 by the openssl CLI over the PKCS#8 DER the core hands the port."""

    def __init__(self) -> None:
        self.calls = 0

    async def sign_rs256(self, pkcs8_der: bytes, message: bytes) -> bytes:
        self.calls += 1
        with tempfile.TemporaryDirectory() as scratch:
            key = Path(scratch, "key.der")
            key.write_bytes(pkcs8_der)
            done = subprocess.run(
                ["openssl", "dgst", "-sha256", "-sign", str(key), "-keyform", "DER"],
                input=message,
                capture_output=True,
                check=True,
            )
        return done.stdout


def openssl_pkcs8(key: AppKey) -> bytes:
    return subprocess.run(
        ["openssl", "pkcs8", "-topk8", "-nocrypt", "-outform", "DER"],
        input=key.private_pem,
        capture_output=True,
        check=True,
    ).stdout


@pytest.fixture
def github() -> Iterator[GitHubStandIn]:
    with GitHubStandIn(
        tokens={ACTIONS_READ_TOKEN: {REPOSITORY.lower(): "actions_read"}},
        apps={APP_ID: app_key().public_pem},
        installations={INSTALLATION_ID: Installation(APP_ID, {REPOSITORY.lower(): "actions_read"})},
    ) as standin:
        yield standin


def app_credential(github: GitHubStandIn, key: AppKey | None = None) -> GitHubCredential:
    pem = (key or app_key()).private_pem.decode()
    app = AppCredentials(str(APP_ID), str(INSTALLATION_ID), pkcs8_from_pem(pem))
    return GitHubCredential(api_url=github.url, app=app, signer=OpensslSigner())


def bearer(credential: GitHubCredential, now: float | None = None) -> str:
    return asyncio.run(credential.bearer(UrllibTransport(), time.time() if now is None else now))


class TestKeyFormat:
    def test_a_pkcs1_key_is_wrapped_exactly_as_openssl_writes_pkcs8(self):
        key = app_key()
        assert key.private_pem.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
        assert pkcs8_from_pem(key.private_pem.decode()) == openssl_pkcs8(key)

    def test_a_pkcs8_key_is_taken_as_it_is(self):
        der = openssl_pkcs8(app_key())
        body = base64.encodebytes(der).decode()
        pem = f"-----BEGIN PRIVATE KEY-----\n{body}-----END PRIVATE KEY-----\n"
        assert pkcs8_from_pem(pem) == der

    def test_escaped_newlines_as_some_secret_stores_keep_them(self):
        pem = app_key().private_pem.decode()
        assert pkcs8_from_pem(pem.replace("\n", "\\n")) == pkcs8_from_pem(pem)

    @pytest.mark.parametrize(
        "text",
        [
            "",
            "ghp_not_a_key",
            "-----BEGIN RSA PRIVATE KEY-----\n!!!!\n-----END RSA PRIVATE KEY-----",
            "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----",
        ],
    )
    def test_anything_else_is_refused(self, text):
        with pytest.raises(KeyFormatError):
            pkcs8_from_pem(text)

    def test_bindings_name_what_is_wrong_and_never_quote_the_key(self):
        pem = app_key().private_pem.decode()
        good = {
            "GITHUB_APP_ID": str(APP_ID),
            "GITHUB_APP_INSTALLATION_ID": str(INSTALLATION_ID),
            "GITHUB_APP_PRIVATE_KEY": pem,
        }
        assert app_credentials_from_bindings({}.get) is None  # auth = "token"
        app = app_credentials_from_bindings(good.get)
        assert app is not None and pem[40:80] not in repr(app)
        for name, value, problem in (
            ("GITHUB_APP_INSTALLATION_ID", "", "missing or empty"),
            ("GITHUB_APP_ID", "Iv1.abc", "expected a number"),
            ("GITHUB_APP_PRIVATE_KEY", "not a key", "expected a PEM private key"),
        ):
            with pytest.raises(ValueError, match=f"binding {name}: {problem}") as error:
                app_credentials_from_bindings((good | {name: value}).get)
            assert pem[40:80] not in str(error.value)


class TestInstallationToken:
    def test_mints_with_a_jwt_that_github_accepts(self, github):
        before = time.time()
        token = bearer(credential := app_credential(github))
        assert token in github.issued and credential.minted == 1
        [exchange] = github.calls("POST")
        assert exchange.path == f"/app/installations/{INSTALLATION_ID}/access_tokens"
        [jwt] = github.jwts
        assert jwt["header"] == {"alg": "RS256", "typ": "JWT"}
        claims = jwt["claims"]
        assert claims["iss"] == str(APP_ID)
        assert int(before) - JWT_BACKDATE_SECONDS - 1 <= claims["iat"] <= time.time() - 59
        assert claims["exp"] - time.time() <= JWT_MAX_SECONDS

    def test_the_token_is_reused_until_shortly_before_it_expires(self, github):
        credential = app_credential(github)
        now = time.time()
        first = bearer(credential, now)
        expires = github.issued[first].expires_at
        assert bearer(credential, now + 60) == first
        assert bearer(credential, expires - REFRESH_MARGIN_SECONDS - 1) == first
        assert len(github.calls("POST")) == 1 and credential.minted == 1
        # Inside the margin: a new one (GitHub's clock is the stand-in's; the JWT is dated now).
        credential._expires_at = time.time() + REFRESH_MARGIN_SECONDS - 1
        second = bearer(credential)
        assert second != first and credential.minted == 2

    def test_a_token_that_expires_within_the_margin_is_never_reused(self):
        with GitHubStandIn(
            apps={APP_ID: app_key().public_pem},
            installations={INSTALLATION_ID: Installation(APP_ID, {})},
            installation_token_seconds=60.0,  # shorter than the refresh margin
        ) as github:
            credential = app_credential(github)
            tokens = {bearer(credential) for _ in range(3)}
            assert len(tokens) == 3 and credential.minted == 3

    def test_a_token_github_refuses_is_forgotten(self, github):
        credential = app_credential(github)
        bearer(credential)
        github.revoke_installation(INSTALLATION_ID)  # its tokens stop working at once
        quota = asyncio.run(rate_limit_status(credential, UrllibTransport(), time.time()))
        assert quota["error"].startswith("GitHub answered 401 (Bad credentials)")
        # Forgotten: the next reading asks for a new token, and learns why there is none.
        quota = asyncio.run(rate_limit_status(credential, UrllibTransport(), time.time()))
        assert "answered 404" in quota["error"] and "uninstalled or suspended" in quota["error"]

    def test_a_revoked_installation_is_named(self, github):
        github.revoke_installation(INSTALLATION_ID)
        with pytest.raises(GitHubAuthError, match=r"answered 404.*uninstalled or suspended"):
            bearer(app_credential(github))

    def test_a_key_that_is_not_the_apps_is_a_401(self, github):
        credential = app_credential(github, app_key("another app"))
        with pytest.raises(GitHubAuthError) as error:
            bearer(credential)
        assert "answered 401 (A JSON web token could not be decoded)" in error.value.reason
        assert "is not this App's key" in error.value.reason
        assert github.issued == {}


class TestRateLimit:
    def test_a_token_reports_its_own_quota(self, github):
        credential = GitHubCredential(api_url=github.url, token=ACTIONS_READ_TOKEN)
        quota = asyncio.run(rate_limit_status(credential, UrllibTransport(), time.time()))
        assert quota["credential"] == "token"
        assert quota["limit"] == RATE_LIMIT and 0 < quota["remaining"] <= RATE_LIMIT
        assert quota["used"] == RATE_LIMIT - quota["remaining"]
        assert quota["reset_at"].endswith("Z")

    def test_an_app_reports_its_installations_quota(self, github):
        github.rate_limit_remaining = 12_000
        quota = asyncio.run(
            rate_limit_status(app_credential(github), UrllibTransport(), time.time())
        )
        assert quota == quota | {
            "credential": "app",
            "limit": INSTALLATION_RATE_LIMIT,
            "remaining": 12_000,
            "used": 500,
        }

    def test_status_shows_the_reading_beside_the_counts_and_reuses_it(self, github):
        with NomadStandIn() as nomad:
            register_pools(nomad)
            settings = settings_from_bindings(bindings(nomad.url).get)
            credential = app_credential(github)
            transport = UrllibTransport()
            ports = Ports(
                transport,
                MemoryLedger(),
                time.monotonic,
                github_rate_limit=lambda: credential.rate_limit(
                    transport, time.time(), time.monotonic()
                ),
            )
            request = IncomingRequest("GET", "/status", status_headers(), b"")
            for _ in range(2):
                reply = asyncio.run(handle(request, settings, ports, datetime.now(UTC)))
                assert reply.status == 200
                assert reply.document["github_rate_limit"]["limit"] == INSTALLATION_RATE_LIMIT
            assert [c.path for c in github.calls("GET")] == ["/rate_limit"]  # reused within 30 s
            assert "pools" in reply.document
            for token in github.issued:
                assert token not in str(reply.document) + str(reply.log)


def test_the_reconciler_needs_no_read_token_with_an_apps_bindings():
    values = {"GITHUB_API_URL": "https://api.github.com", "GITHUB_APP_ID": "1"}
    assert github_settings_from_bindings(values.get).token == ""
    with pytest.raises(ValueError, match="binding GITHUB_READ_TOKEN: missing or empty"):
        github_settings_from_bindings({"GITHUB_API_URL": "https://api.github.com"}.get)
