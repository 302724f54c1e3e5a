"""PII redaction for everything a service logs.

Over-redaction is the safe side of this trade-off: a date such as ``2024-10-08`` can read as a phone number and
is masked too, while a missed card number in a log is a reportable incident. Patterns run in order (e-mail and
IBAN before the digit runs that would otherwise swallow parts of them).
"""

from __future__ import annotations

import re

PATTERNS: list[tuple[str, re.Pattern]] = [
    ("EMAIL", re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")),
    # Country code, 2 check digits, then 11-30 alphanumerics: compact, or printed in groups of four.
    ("IBAN", re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b", re.IGNORECASE)),
    # 13-19 digits, optionally grouped by spaces or dashes (no Luhn check: a near-miss is still masked).
    ("CARD", re.compile(r"\b(?:\d[ -]?){12,18}\d\b")),
    # 7-15 digits with an optional + / 00 prefix and the usual separators.
    ("PHONE", re.compile(r"(?:\+\d|\(\d|\b\d)(?:[\s().-]{0,2}\d){6,14}\b")),
]


def redact(text: str) -> str:
    """``text`` with e-mail addresses, IBANs, card numbers and phone numbers replaced by ``[EMAIL]`` etc."""
    for name, pattern in PATTERNS:
        text = pattern.sub(f"[{name}]", text)
    return text
