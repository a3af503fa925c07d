"""handler.github_errors: GitHub's error message, on one bounded line, whatever the body."""

from handler.github_errors import github_message


def test_the_json_message_is_taken():
    body = b'{"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"}'
    assert github_message(body) == "Bad credentials"


def test_a_body_that_is_not_github_json_is_quoted_folded():
    assert github_message(b"<html>\n  502 Bad Gateway\n</html>") == "<html> 502 Bad Gateway </html>"


def test_json_without_a_message_falls_back_to_the_text():
    assert github_message(b'{"errors": []}') == '{"errors": []}'


def test_an_empty_body_says_so():
    assert github_message(b"") == "(empty body)"


def test_the_reason_is_bounded():
    assert len(github_message(b'{"message": "' + b"x" * 5000 + b'"}', 160)) == 160
