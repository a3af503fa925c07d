"""``doctor``: one read-only command that checks a live installation end to end.

``python -m doctor --config my.toml`` (or ``make doctor CONFIG=my.toml``) runs every check in
:data:`doctor.checks.CHECKS` against the real GitHub, Cloudflare and Nomad endpoints with the
credentials the deploy already uses, prints one PASS/FAIL line per part (and, on a failure, the
one thing to change), and exits 0 only when every part passed.

Read-only by construction: the HTTP client (:mod:`doctor.web`) can only send GET requests (and,
with a GitHub App, the one POST that mints an installation token, which changes nothing), and
the values that exist only in Terraform state are read with ``terraform output -json``
(:mod:`doctor.state`). No secret is ever printed: every line goes through a redactor that knows
each credential doctor holds. Standard library only, and nothing here imports cdktf, so it starts
in well under a second; it is not part of the Worker bundle.
"""
