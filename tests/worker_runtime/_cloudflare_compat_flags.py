"""Test-only stand-in for a module the production Python Workers runtime injects.

The vendored ``workers`` SDK reads compatibility flags from it; the local runtime
(workerd 2024-11-06) predates it. Every flag the SDK asks about is off, as in production for
this Worker's flags.
"""

python_workflows_implicit_dependencies = False
python_request_headers_preserve_commas = False
