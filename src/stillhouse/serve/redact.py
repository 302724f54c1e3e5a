"""PII redaction for everything a service logs.

Over-redaction is the safe side of this trade-off: a date such as ``2024-10-08`` can read as a phone number and
is masked too, while a missed card number in a log is a reportable incident. Patterns run in order (e-mail and
IBAN before the digit runs that would otherwise swallow parts of them).

Text is normalised first, because the patterns see only what is written plainly: NFKC folds full-width and other
compatibility forms (``＠``, ``．``, ``４``, a no-break space) into their ASCII equivalents, and invisible format
characters (zero-width spaces and joiners, the word joiner, soft hyphens, bidi marks: Unicode category Cf) are
removed, and so is every other default-ignorable code point (combining grapheme joiner, variation selectors, Hangul
fillers, tags...), so an address cannot be split by characters a reader never sees. E-mail addresses are also recognised
with the usual spelled-out separators: ``(at)``, ``[at]``, ``{at}``, ``<at>``, `` at `` and the same for ``dot``
(a bare word ``at`` counts only in an address whose domain has a separator, so "meet me at noon" stays).
"""

from __future__ import annotations

import re
import unicodedata

# Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt) that are not format characters (Cf).
_IGNORABLE = re.compile("[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
                        "\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8\U0001bca0-\U0001bca3"
                        "\U0001d173-\U0001d17a\U000e0000-\U000e0fff]")
_AT = r"(?:\s*@\s*|\s*[(\[{<]\s*at\s*[)\]}>]\s*|\s+at\s+)"
_DOT = r"(?:\.|\s*[(\[{<]\s*dot\s*[)\]}>]\s*|\s+dot\s+)"
# Bounded as addresses are (RFC 5321: local part <= 64, labels <= 63): each start position costs a bounded scan, so
# a 4,000-character text of near-misses ("a.a.a.…") stays linear.
_LOCAL = rf"[A-Za-z0-9_%+-]{{1,64}}(?:{_DOT}[A-Za-z0-9_%+-]{{1,64}}){{0,32}}"
_DOMAIN = rf"[A-Za-z0-9-]{{1,63}}(?:{_DOT}[A-Za-z0-9-]{{1,63}}){{0,16}}{_DOT}[A-Za-z]{{2,63}}\b"

PATTERNS: list[tuple[str, re.Pattern]] = [
    ("EMAIL", re.compile(rf"{_LOCAL}{_AT}{_DOMAIN}", re.IGNORECASE)),
    # Country code, 2 check digits, then 11-30 alphanumerics: compact, or printed in groups of four.
    ("IBAN", re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b", re.IGNORECASE)),
    # 13-19 digits, optionally grouped by spaces, dashes or dots (no Luhn check: a near-miss is still masked).
    ("CARD", re.compile(r"\b(?:\d[ .-]?){12,18}\d\b")),
    # 7-15 digits with an optional + / 00 prefix and the usual separators.
    ("PHONE", re.compile(r"(?:\+\d|\(\d|\b\d)(?:[\s().-]{0,2}\d){6,14}\b")),
]


def normalise(text: str) -> str:
    """``text`` in NFKC without invisible characters (format characters, Unicode category Cf, and the other
    default-ignorable code points)."""
    folded = _IGNORABLE.sub("", unicodedata.normalize("NFKC", text))
    return "".join(ch for ch in folded if unicodedata.category(ch) != "Cf")


def redact(text: str) -> str:
    """``text``, normalised (see the module), with e-mail addresses, IBANs, card numbers and phone numbers replaced
    by ``[EMAIL]`` etc."""
    text = normalise(text)
    for name, pattern in PATTERNS:
        text = pattern.sub(f"[{name}]", text)
    return text
