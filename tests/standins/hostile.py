"""A deterministic corpus of hostile deliveries: what a careless or malicious sender might POST.

``corpus()`` returns well over 100 cases, each with the statuses it may get. Categories: garbled
JSON, wrong types in every field the Worker reads (rejected where the decision needs the field,
ignored on a job no pool takes where it does not), oversized bodies, missing or wrong headers,
wrong methods and paths, and unicode or shell metacharacters in repository names, paths and
labels. Most are correctly signed, so they reach the parser and the decision rather than stopping
at the signature check. None of them may dispatch or get a 5xx.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

from tests.standins.webhooks import REPOSITORY, Delivery, delivery, workflow_job

MIB = 1024 * 1024
REJECTED = frozenset({400})
IGNORED = frozenset({200})
UNAUTHENTIC = frozenset({401})

METACHARACTERS = (
    "$(reboot)",
    "`id`",
    "a;rm -rf /",
    "a|b",
    "a&&b",
    "../../etc/passwd",
    "a\nb",
    "a\x00b",
    "' OR '1'='1",
    "${{ secrets.TOKEN }}",
    "%{x}",
    "${var.x}",
    "<script>",
)
UNICODE = ("ówner", "ラベル", "self\u2010hosted", "self-hosted\u200b", "LİNUX", "🙂", "ß")


@dataclass(frozen=True)
class HostileCase:
    name: str
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    expect: frozenset[int] = field(default=REJECTED)


# A job only a pool nobody has would take: whatever else is wrong with it, it is ignored.
_NOT_OURS = workflow_job(labels=["self-hosted", "windows"])


def _case(
    name: str, sent: Delivery, expect: frozenset[int] = REJECTED, **overrides: Any
) -> HostileCase:
    return HostileCase(
        name=name,
        method=overrides.get("method", "POST"),
        path=overrides.get("path", sent.path),
        headers=overrides.get("headers", dict(sent.headers)),
        body=overrides.get("body", sent.body),
        expect=expect,
    )


def _with(path: tuple[str, ...], value: Any, base: dict[str, Any] | None = None) -> dict[str, Any]:
    payload = copy.deepcopy(base or workflow_job())
    target = payload
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        target.pop(path[-1], None)
    else:
        target[path[-1]] = value
    return payload


def garbled_bodies() -> list[HostileCase]:
    valid = json.dumps(workflow_job()).encode()
    bodies = {
        "empty": b"",
        "truncated": valid[: len(valid) // 2],
        "trailing-garbage": valid + b"}}",
        "two-documents": valid + valid,
        "null": b"null",
        "array": b"[1,2,3]",
        "number": b"42",
        "string": b'"queued"',
        "nan": b'{"action": NaN}',
        "infinity": b'{"action": Infinity}',
        "latin-1": '{"action": "qu\u00e9ued"}'.encode("latin-1"),
        "utf-16": json.dumps({"action": "queued"}).encode("utf-16"),
        "bom": b"\xef\xbb\xbf" + valid,
        "deep-nesting": b"[" * 50000 + b"]" * 50000,
        "deep-objects": b'{"a":' * 20000 + b"1" + b"}" * 20000,
        "single-quotes": b"{'action': 'queued'}",
        "comments": b'{"action": "queued" /* x */}',
        "form-encoded": b"payload=" + valid,
        "binary": bytes(range(256)),
        "nul-bytes": b"\x00" * 100,
        "huge-string": json.dumps({"action": "x" * 500000}).encode(),
        "duplicate-keys": b'{"action": "queued", "action": 7}',
    }
    return [_case(f"garbled:{name}", delivery(body)) for name, body in bodies.items()]


def wrong_types() -> list[HostileCase]:
    cases = []
    wrong_values: dict[tuple[str, ...], list[Any]] = {
        ("action",): [None, 7, [], {}, True, "", "q" * 2000],
        ("repository",): [None, "Codertocat/Hello-World", [], 1],
        ("repository", "full_name"): [None, 1, ["a/b"], "", "noslash", "a/b/c", "a" * 200 + "/b"],
        ("workflow_job",): [None, "job", [], 1],
        ("workflow_job", "id"): [None, "289782451", 1.5, True, 0, -5, 2**63, 10**30, [1]],
        ("workflow_job", "run_id"): [None, "1", 2.0, False, -1],
        ("workflow_job", "labels"): [
            None,
            "self-hosted",
            {"0": "self-hosted"},
            [1, 2],
            [["self-hosted"]],
            [None],
            ["self-hosted", ""],
            ["x" * 300],
            ["self-hosted"] * 101,
            [True],
        ],
    }
    # Fields a decision can do without are recorded as missing, never rejected: on a job whose
    # labels match no pool they are ignored (200), so they too cannot dispatch.
    optional_values: dict[tuple[str, ...], list[Any]] = {
        ("workflow_job", "run_attempt"): [None, "1", 0, -1, 1.0],
        ("workflow_job", "status"): [None, 1, "", ["queued"]],
        ("workflow_job", "created_at"): [
            None,
            1631499673,
            "yesterday",
            "2021-13-45T99:99:99Z",
            "2021-09-13T02:21:13",
            "",
        ],
        ("workflow_job", "runner_id"): ["5", -1, 1.5, [5]],
        ("workflow_job", "conclusion"): [1, ["cancelled"], {}],
        ("workflow_job", "runner_name"): [5, ["r"]],
    }
    for path, values in wrong_values.items():
        for index, value in enumerate(values):
            name = f"type:{'.'.join(path)}:{index}"
            cases.append(_case(name, delivery(_with(path, value))))
    for path, values in optional_values.items():
        for index, value in enumerate(values):
            name = f"type:{'.'.join(path)}:{index}"
            payload = _with(path, value, _NOT_OURS)
            cases.append(_case(name, delivery(payload), IGNORED))
    for path in [
        ("action",),
        ("repository",),
        ("workflow_job",),
        ("workflow_job", "id"),
        ("workflow_job", "labels"),
        ("repository", "full_name"),
    ]:
        cases.append(_case(f"missing:{'.'.join(path)}", delivery(_with(path, KeyError))))
    for path in [("workflow_job", "created_at"), ("workflow_job", "status")]:
        payload = _with(path, KeyError, _NOT_OURS)
        cases.append(_case(f"missing:{'.'.join(path)}", delivery(payload), IGNORED))
    ping = delivery(b"not json", event="ping")
    cases.append(_case("ping:garbled", ping))
    cases.append(_case("ping:array", delivery(b"[]", event="ping")))
    return cases


def sizes() -> list[HostileCase]:
    over = b" " * (MIB + 1)
    padded = json.dumps(workflow_job() | {"pad": "x" * (MIB - 1000)}).encode()[:MIB]
    return [
        _case("size:over-1-mib", delivery(over), frozenset({413})),
        _case("size:8-mib", delivery(b"{" * (8 * MIB)), frozenset({413})),
        _case("size:exactly-1-mib-garbled", delivery(padded)),
    ]


def headers() -> list[HostileCase]:
    sent = delivery(workflow_job())
    without = {
        name: {k: v for k, v in sent.headers.items() if k != name}
        for name in ("x-hub-signature-256", "x-github-event", "x-github-delivery")
    }
    sha1 = dict(sent.headers) | {"x-hub-signature-256": "sha1=" + "0" * 40}
    cases = [
        _case("headers:no-signature", sent, UNAUTHENTIC, headers=without["x-hub-signature-256"]),
        _case("headers:no-event", sent, headers=without["x-github-event"]),
        _case("headers:no-delivery", sent, headers=without["x-github-delivery"]),
        _case("headers:sha1", sent, UNAUTHENTIC, headers=sha1),
        _case("headers:wrong-key", delivery(workflow_job(), key="guessed"), UNAUTHENTIC),
        _case(
            "headers:signature-of-other-body",
            sent,
            UNAUTHENTIC,
            body=sent.body.replace(b"queued", b"QUEUED", 1),
        ),
        _case(
            "headers:other-repositorys-signature",
            delivery(workflow_job(), repository="octo-org/octo-repo"),
            UNAUTHENTIC,
            path=sent.path,
        ),
    ]
    for index, value in enumerate(
        [
            "",
            "sha256",
            "sha256=",
            "sha256=xyz",
            "SHA256 " + "0" * 64,
            "sha256=" + "0" * 65,
            "sha512=" + "0" * 128,
            "sha256=" + "é" * 64,
            "sha256=" + "0" * 64,
        ]
    ):
        forged = dict(sent.headers) | {"x-hub-signature-256": value}
        cases.append(_case(f"headers:bad-signature:{index}", sent, UNAUTHENTIC, headers=forged))
    for index, event in enumerate(["push", "$(reboot)", "workflow_run", "WORKFLOW_JOB", "🙂"]):
        cases.append(
            _case(f"headers:event:{index}", delivery(workflow_job(), event=event), IGNORED)
        )
    return cases


def methods_and_paths() -> list[HostileCase]:
    # Labels no pool has: even where a runtime normalises "/x/../webhook/..." into the real
    # webhook path, the delivery is then only ignored.
    sent = delivery(workflow_job(labels=["self-hosted", "windows"]))
    cases = [
        _case(f"method:{method}", sent, frozenset({405}), method=method)
        for method in ("GET", "PUT", "DELETE", "PATCH", "OPTIONS")
    ]
    for index, path in enumerate(
        [
            "/",
            "/webhook",
            "/webhook/",
            "/webhook/codertocat",
            "/webhook/a/b/c",
            "/webhook/%24(reboot)/x",
            "/webhook/%C3%B3wner/repo",
            "/webhook/a%2Fb/c",
            "/webhook/../../etc/passwd",
            "/webhook/a;b/c",
            "/WEBHOOK/codertocat/hello-world",
            "/webhook/codertocat/hello-world/",
            "/healthz/../webhook/codertocat/hello-world",
        ]
    ):
        expect = frozenset({404, 200}) if "/../" in path else frozenset({404})
        cases.append(_case(f"path:{index}", sent, expect, path=path))
    return cases


def metacharacters_and_unicode() -> list[HostileCase]:
    cases = []
    for index, text in enumerate(METACHARACTERS + UNICODE):
        # In the repository name: not an owner/repo name, so malformed.
        payload = _with(("repository", "full_name"), f"{text}/repo")
        cases.append(_case(f"repo-name:{index}", delivery(payload)))
        payload = _with(("repository", "full_name"), f"owner/{text}")
        cases.append(_case(f"repo-name-tail:{index}", delivery(payload)))
        # In the labels, next to self-hosted: no pool has that label, so ignored.
        labels = ["self-hosted", "linux", text]
        cases.append(_case(f"label:{index}", delivery(workflow_job(labels=labels)), IGNORED))
    # A served repository with a different payload repository: the path decides, mismatch.
    mismatch = workflow_job(repository="octo-org/octo-repo", labels=["self-hosted", "arm64"])
    cases.append(_case("repo:mismatch", delivery(mismatch, repository=REPOSITORY)))
    # Labels that look like ours but are not, and GitHub-hosted labels.
    for index, labels in enumerate(
        [
            ["SELF-HOSTED ", "linux"],
            ["self hosted"],
            ["ubuntu-latest"],
            [],
            ["self-hosted", "linux", "x64", "gpu", "large"],
        ]
    ):
        cases.append(
            _case(f"labels:near-miss:{index}", delivery(workflow_job(labels=labels)), IGNORED)
        )
    return cases


def corpus() -> list[HostileCase]:
    return [
        *garbled_bodies(),
        *wrong_types(),
        *sizes(),
        *headers(),
        *methods_and_paths(),
        *metacharacters_and_unicode(),
    ]
