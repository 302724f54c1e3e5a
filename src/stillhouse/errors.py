"""Errors a user can cause. Each names the problem and the fix in one message."""

from __future__ import annotations

# Prefixes a user error on a pipeline step's output; `stillhouse run` collects the lines that carry it.
ERROR_MARKER = "[stillhouse] error:"


class StillhouseError(Exception):
    """A problem the user can fix (bad spec, bad data, bad request), as opposed to a bug.

    ``str(err)`` is the whole message shown to the user: what is wrong, then how to fix it.
    """

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(problem if not fix else f"{problem}\n  fix: {fix}")


class SpecError(StillhouseError):
    """The YAML spec is invalid; raised before anything runs."""


class DataError(StillhouseError):
    """A data file is missing, unreadable, or does not match the spec."""


class ModelError(StillhouseError):
    """A model cannot be found or loaded."""


class ServeConfigError(StillhouseError):
    """The serving configuration (tokens, limits, paths, chain) is invalid; raised before serving starts."""


class RequestError(StillhouseError):
    """A request to a service is invalid (answered 422 with this message; the input itself is never echoed)."""


class Unavailable(StillhouseError):
    """A service's own dependency (the feedback database) cannot be reached: answered 503 with Retry-After; the
    request was fine and may be sent again."""
