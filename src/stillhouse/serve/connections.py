"""Which connections a worker keeps when it is at its connection limits: the policy, without sockets.

Every open connection counts against ``connections.max_concurrency``, whether it carries a request or not, so a
client that opens connections and sends nothing (or half a head) could fill the limit and lock every other client
out. Here a connection that is *waiting* (for its first byte, for the rest of a head, or idle between keep-alive
requests) can always be closed to make room; one that carries a request in flight cannot. When a new connection
takes a worker past a limit, the waiting connection that costs least to lose goes first:

1. one that has sent nothing yet, oldest first (an idle flood's, and nothing is lost);
2. one with a head begun and not finished, the longest waiting first (a slow loris; its client is told 503);
3. one idle between keep-alive requests, the longest idle first (its client just opens a new one).

A legitimate client's connection is waiting only for moments, so a flood's connections are always older. Limits:

- **per client** (``connections.max_per_client``): connections from one source address. At the cap the client's
  own longest-waiting connection makes room, so a flood from an address that a legitimate client shares (NAT,
  loopback) still lets that client in; with all of them busy, the new one is refused;
- **per worker** (``connections.max_concurrency``): all connections. Past it, the longest-waiting connection of
  any client is closed; with none waiting, the new one is refused.

Connections over a Unix socket (the worker's own services talking to each other) have no address and count only
against the worker's limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

FRESH, PARTIAL_HEAD, IDLE = 0, 1, 2  # waiting kinds, in the order they are closed


class Waiting(Protocol):
    def waiting(self) -> tuple[int, float] | None:
        """``(kind, since)`` while the connection carries no request (kind: FRESH/PARTIAL_HEAD/IDLE; since: loop
        time the wait began), ``None`` while a request is in flight."""


@dataclass
class Admission:
    """What admitting a connection takes: connections to close first, and whether to refuse it (a reason code)."""

    evict: list = field(default_factory=list)
    refuse: str | None = None


class ConnectionTable:
    """The open connections of one worker, by client address; decides admissions (see the module)."""

    def __init__(self, max_connections: int, max_per_client: int):
        self.max_connections, self.max_per_client = max_connections, max_per_client
        self._client: dict[Waiting, str | None] = {}
        self._by_client: dict[str, set[Waiting]] = {}

    def __len__(self) -> int:
        return len(self._client)

    def count(self, client: str) -> int:
        return len(self._by_client.get(client, ()))

    def admit(self, connection: Waiting, client: str | None) -> Admission:
        """Add ``connection`` (from ``client``, None for a Unix socket) and say what making room for it takes.

        Connections to evict are removed from the table at once (their slots are free from now on); a refused one
        is removed too. The caller closes them.
        """
        self._client[connection] = client
        if client is not None:
            self._by_client.setdefault(client, set()).add(connection)
        admission = Admission()
        if client is not None and self.count(client) > self.max_per_client:
            victim = _longest_waiting(self._by_client[client], connection)
            if victim is None:
                self.remove(connection)
                return Admission(refuse="client_connection_limit")
            self.remove(victim)
            admission.evict.append(victim)
        if len(self._client) > self.max_connections:
            victim = _longest_waiting(self._client, connection)
            if victim is None:
                self.remove(connection)
                return Admission(evict=admission.evict, refuse="server_busy")
            self.remove(victim)
            admission.evict.append(victim)
        return admission

    def remove(self, connection: Waiting) -> None:
        """Forget ``connection`` (closed, evicted or refused); idempotent."""
        client = self._client.pop(connection, None)
        if client is not None:
            peers = self._by_client.get(client)
            if peers is not None:
                peers.discard(connection)
                if not peers:
                    del self._by_client[client]


def _longest_waiting(connections, newcomer: Waiting) -> Waiting | None:
    """The waiting connection to close first (module docstring's order), never ``newcomer``; None if all are busy."""
    best, best_key = None, None
    for connection in connections:
        if connection is newcomer:
            continue
        key = connection.waiting()
        if key is not None and (best_key is None or key < best_key):
            best, best_key = connection, key
    return best
