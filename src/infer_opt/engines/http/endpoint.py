"""What a served endpoint setting may be: the base URL of someone else's server and the name of
the environment variable holding its API key. Checked where they are given (a variant's
options, a suite's header) so a typo is one line before anything runs.

The URL is written into every row's notes, so it may not carry credentials (`user:pass@`):
those go in the API key variable, whose value is read only when the engine loads and is never
written anywhere.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def endpoint_problem(url: str) -> str | None:
    """Why `url` is not http(s)://host[:port]/path, or None."""
    shape = "must be http(s)://host[:port]/path (e.g. http://127.0.0.1:8000/v1)"
    try:
        parts = urlsplit(url)
        port = parts.port  # ValueError when it is not a number in 0-65535
    except ValueError:
        return f"{shape}, got {url!r}"
    if parts.scheme not in ("http", "https") or not parts.hostname or any(
            c.isspace() for c in url):
        return f"{shape}, got {url!r}"
    if parts.username is not None or parts.password is not None:
        return ("must not carry credentials (the URL is written into every row's notes); give "
                "the API key's environment variable in api_key_env")
    if port == 0:
        return f"{shape}: port 0 is not a port, got {url!r}"
    if not parts.path.startswith("/") or parts.query or parts.fragment:
        return f"{shape} (a base path, no query or fragment), got {url!r}"
    return None


def env_name_problem(name: str) -> str | None:
    """Why `name` is not an environment variable name (letters, digits, _; not a digit
    first), or None. What was given is not echoed: a user who pasted the key itself here must
    not find it in a terminal log."""
    if ENV_NAME.match(name):
        return None
    return ("must be the name of the environment variable holding the key (letters, digits "
            "and _, not starting with a digit), not the key itself")
