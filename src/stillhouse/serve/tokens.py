"""Bearer tokens, stored only as SHA-256 hashes (what a Kubernetes Secret or a mounted file holds).

A token table has one entry per line, ``TOKEN_ID sha256:HEX`` (``#`` starts a comment); in an environment
variable, entries may also be separated by commas. The token id is the *principal* the audit log records;
the token itself is never stored or logged. Tokens are 32 random bytes, so a plain SHA-256 (no slow KDF) is
enough: nobody can guess one to invert the hash.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from stillhouse.errors import ServeConfigError

PREFIX = "sha256:"
_ENTRY = re.compile(r"^([A-Za-z0-9_.@-]+)\s+sha256:([0-9a-f]{64})$")


def new_token() -> str:
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return PREFIX + hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class TokenTable:
    entries: tuple[tuple[str, bytes], ...]  # (token id, SHA-256 digest)

    @classmethod
    def parse(cls, text: str, source: str) -> TokenTable:
        entries = []
        for number, line in enumerate(re.split(r"[\n,]", text), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            match = _ENTRY.match(line)
            if not match:
                raise ServeConfigError(f"{source}: entry {number} is not `TOKEN_ID sha256:HEX` (64 hex digits)",
                                       "create entries with `stillhouse token new TOKEN_ID`")
            entries.append((match.group(1), bytes.fromhex(match.group(2))))
        if not entries:
            raise ServeConfigError(f"{source} holds no token hashes",
                                   "add one with `stillhouse token new TOKEN_ID`, or turn auth off for local use")
        return cls(tuple(entries))

    def principal(self, token: str) -> str | None:
        """The id of the token, or None. Compares against every entry in constant time (no early exit)."""
        digest = hashlib.sha256(token.encode()).digest()
        found = None
        for token_id, expected in self.entries:
            if hmac.compare_digest(digest, expected):
                found = token_id
        return found
