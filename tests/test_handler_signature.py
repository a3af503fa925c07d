"""handler.signature: HMAC-SHA256 over the raw body, constant time, typed failures."""

import hashlib
import hmac

import pytest

from handler.signature import (
    MalformedSignature,
    MissingSecret,
    MissingSignature,
    SignatureMismatch,
    UnsupportedAlgorithm,
    sign,
    verify_signature,
)
from tests.standins.webhooks import FIXTURES

BODY = (FIXTURES / "workflow_job" / "queued.payload.json").read_bytes()
SECRET = "It's a Secret to Everybody"


class TestVerifySignature:
    def test_accepts_githubs_own_documented_example(self):
        """GitHub's docs: secret "It's a Secret to Everybody", body "Hello, World!"."""
        expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        verify_signature(SECRET, b"Hello, World!", expected)

    def test_accepts_the_signature_of_the_raw_bytes(self):
        verify_signature(SECRET, BODY, sign(SECRET, BODY))

    def test_accepts_upper_case_hex_and_surrounding_blanks(self):
        verify_signature(
            SECRET, BODY, "  " + sign(SECRET, BODY).upper().replace("SHA256", "sha256")
        )

    def test_rejects_reserialised_json(self):
        """Re-serialising the JSON changes the bytes: only the raw body verifies."""
        import json

        reserialised = json.dumps(json.loads(BODY)).encode()
        assert reserialised != BODY
        with pytest.raises(SignatureMismatch):
            verify_signature(SECRET, reserialised, sign(SECRET, BODY))

    def test_rejects_a_one_byte_change(self):
        with pytest.raises(SignatureMismatch):
            verify_signature(SECRET, BODY + b" ", sign(SECRET, BODY))

    def test_rejects_another_secret(self):
        with pytest.raises(SignatureMismatch):
            verify_signature(SECRET, BODY, sign("another", BODY))

    @pytest.mark.parametrize("header", [None, "", "   "])
    def test_rejects_a_missing_header(self, header):
        with pytest.raises(MissingSignature):
            verify_signature(SECRET, BODY, header)

    def test_rejects_sha1(self):
        digest = hmac.new(SECRET.encode(), BODY, hashlib.sha1).hexdigest()
        with pytest.raises(UnsupportedAlgorithm):
            verify_signature(SECRET, BODY, f"sha1={digest}")

    @pytest.mark.parametrize(
        "header", ["sha256", "sha256=", "sha256=zz", "sha256=" + "a" * 63, "sha256=" + "g" * 64]
    )
    def test_rejects_malformed_digests(self, header):
        with pytest.raises(MalformedSignature):
            verify_signature(SECRET, BODY, header)

    def test_a_signature_without_a_secret_fails(self):
        with pytest.raises(MissingSecret):
            verify_signature("", BODY, sign("", BODY))

    def test_compares_in_constant_time(self, monkeypatch):
        """The final comparison goes through hmac.compare_digest."""
        calls = []
        real = hmac.compare_digest

        def spy(a, b):
            calls.append((a, b))
            return real(a, b)

        monkeypatch.setattr(hmac, "compare_digest", spy)
        verify_signature(SECRET, BODY, sign(SECRET, BODY))
        assert len(calls) == 1
