"""Log hygiene for every serving process: no client input in a log line, one line per record.

Installed as the process's log record factory (it survives the ``dictConfig`` calls BentoML makes when it sets
up its handlers), so it covers BentoML's, uvicorn's and Stillhouse's loggers alike:

- **Exception messages are withheld.** Framework errors quote what they failed on: pydantic's ValidationError
  prints ``input_value=b'...'`` (the request body), JSON errors a slice of the document. A record's traceback
  keeps each exception's type and frames (enough to find the bug) and drops its message; so do exception objects
  passed as ``%s`` arguments. Stillhouse's own errors (:class:`~stillhouse.errors.StillhouseError`) keep theirs:
  their messages are written never to quote input.
- **Control characters are escaped** in the message and its string arguments, so a client-chosen path such as
  ``/x%0d%0a2026-01-01 [INFO] forged`` cannot start a line of its own; string arguments are cut at
  ``MAX_ARG_CHARS``, so long URLs cannot flood the log.
"""

from __future__ import annotations

import logging
import re
import traceback

from stillhouse.errors import StillhouseError

WITHHELD = "[message withheld: may quote client input]"
MAX_ARG_CHARS = 512
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u2028\u2029\r\n]")
_installed = False


def escape_controls(text: str) -> str:
    """``text`` with CR, LF and other control characters written as ``\\xNN`` escapes."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _describe(exc: BaseException) -> str:
    name = f"{type(exc).__module__}.{type(exc).__qualname__}".removeprefix("builtins.")
    return f"{name}: {exc}" if isinstance(exc, StillhouseError) else f"{name}: {WITHHELD}"


def format_exception_withheld(exc: BaseException) -> str:
    """A traceback of ``exc`` and its causes (frames and types, as Python prints them) without their messages."""
    chain, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        chain.append(exc)
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    parts = []
    for i, item in enumerate(reversed(chain)):
        if i:
            parts.append("\nThe above exception led to the following one:\n\n")
        parts.append("Traceback (most recent call last):\n")
        parts.extend(traceback.format_tb(item.__traceback__))
        parts.append(_describe(item) + "\n")
    return "".join(parts).rstrip("\n")


def _clean(value):
    if isinstance(value, BaseException):
        return _describe(value)
    if isinstance(value, str):
        # a long argument is a client's (a URL, a header) more often than ours: bounded, so it cannot flood
        cut = value if len(value) <= MAX_ARG_CHARS else f"{value[:MAX_ARG_CHARS]}…[{len(value):,} chars]"
        return escape_controls(cut)
    return value


def sanitize_record(record: logging.LogRecord) -> logging.LogRecord:
    """Apply the rules above to ``record`` in place (also usable as a ``logging.Filter``)."""
    record.msg = escape_controls(record.msg) if isinstance(record.msg, str) else _clean(record.msg)
    if isinstance(record.args, tuple):
        record.args = tuple(_clean(arg) for arg in record.args)
    elif isinstance(record.args, dict):
        record.args = {key: _clean(value) for key, value in record.args.items()}
    if record.exc_info and record.exc_info[1] is not None:
        record.exc_text = format_exception_withheld(record.exc_info[1])
        record.exc_info = None
    return record


def install_log_hygiene() -> None:
    """Make every log record of this process go through :func:`sanitize_record` (idempotent)."""
    global _installed
    if _installed:
        return
    make_record = logging.getLogRecordFactory()

    def factory(*args, **kwargs):
        return sanitize_record(make_record(*args, **kwargs))

    logging.setLogRecordFactory(factory)
    _installed = True


def settle_server_logging() -> None:
    """Run after BentoML's server logging set-up, which (1) disables every logger that exists at that moment
    (``disable_existing_loggers``), Stillhouse's own among them when they were imported first, and (2) gives
    ``uvicorn.error`` a handler of its own beside the root's, both writing to the server log, so that every uvicorn
    warning appeared twice. Here Stillhouse's loggers are enabled again, and a logger with a handler of its own
    no longer also hands its records to an ancestor's handlers: one line per record.
    """
    for logger in [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)]:
        if logger.name.split(".")[0] == "stillhouse":
            logger.disabled = False
        if not _writes(logger) or not logger.propagate:
            continue
        parent = logger.parent
        while parent is not None:
            if _writes(parent):
                logger.propagate = False
                break
            if not parent.propagate:
                break
            parent = parent.parent


def _writes(logger: logging.Logger) -> bool:
    """Whether ``logger`` has a handler that writes somewhere (libraries add a NullHandler only to stay silent
    when nothing is configured: theirs must keep propagating to the server log)."""
    return any(not isinstance(handler, logging.NullHandler) for handler in logger.handlers)
