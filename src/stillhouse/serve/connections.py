"""Which connections a worker keeps when it is at its connection limits: the policy, without sockets.

Every open connection counts against ``connections.max_concurrency``, whether it carries a request or not, so a
client that opens connections and sends nothing (or half a head) could fill the limit and lock every other client
out. Here a connection that is *waiting* (for its first byte, for the rest of a head, or idle between keep-alive
requests) can always be closed to make room; one that carries a request in flight cannot. Limits:

- **per client** (``connections.max_per_client``): connections from one source address (an IPv6 address counts
  by its /64, which one host or customer usually holds whole). At the cap the client's *own* waiting connection
  that costs least to lose makes room, so a flood from an address that a legitimate client shares (NAT,
  loopback) still lets that client in; with all of the client's connections busy, the new one is refused;
- **per worker** (``connections.max_concurrency``): all connections. Past it, a waiting connection of the client
  holding the most connections makes room (a flood's, not the newcomer's: a legitimate client holds few); with
  none waiting anywhere, the new one is refused.

Within one client, the waiting connection that costs least to lose goes first:

1. one that has sent nothing for ``FRESH_GRACE_S`` since it was accepted, oldest first (nothing is lost);
2. one with a head begun and not finished, the longest waiting first (a slow loris; its client is told 503);
3. one idle between keep-alive requests, the longest idle first (its client just opens a new one);
4. only then one accepted less than ``FRESH_GRACE_S`` ago, oldest first: its request is most likely on its way
   (a legitimate client sends its head at once), and a flood that opens connections ever faster would otherwise
   have each new one close the legitimate newcomer that arrived just before it.

Every decision is O(1) in the number of connections (ordered dicts per client and kind, clients bucketed by
their connection count), so a connection flood cannot make admission itself the bottleneck. Connections over a
Unix socket (a worker's own services talking to each other) have no address: they count against the worker's
limit and are never closed to make room.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

FRESH, PARTIAL_HEAD, IDLE = 0, 1, 2  # waiting kinds
KINDS = (FRESH, PARTIAL_HEAD, IDLE)
FRESH_GRACE_S = 1.0  # a newly accepted connection's head is on its way: it is closed last for room
_TIE_SCAN = 64  # clients holding as many connections looked at for one outside the grace (bounds the work)


def client_key(host: str | None) -> str | None:
    """The address a per-client cap counts: IPv4 as is, IPv6 by its /64 (IPv4-mapped ones as IPv4); None stays."""
    if host is None:
        return None
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if address.version == 6:
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


@dataclass
class Admission:
    """What admitting a connection takes: connections to close first, and whether to refuse it (a reason code)."""

    evict: list = field(default_factory=list)
    refuse: str | None = None


class _Client:
    __slots__ = ("count", "waiting")

    def __init__(self) -> None:
        self.count = 0
        # kind -> {connection: since}; insertion order is the order of entering the kind, so the first is oldest
        self.waiting: dict[int, dict] = {kind: {} for kind in KINDS}

    def cheapest(self, exclude, now: float) -> object | None:
        """The waiting connection to close first (module docstring's order), never ``exclude``; None if none."""
        fresh = _first(self.waiting[FRESH], exclude)
        if fresh is not None and self.waiting[FRESH][fresh] <= now - FRESH_GRACE_S:
            return fresh
        for kind in (PARTIAL_HEAD, IDLE):
            found = _first(self.waiting[kind], exclude)
            if found is not None:
                return found
        return fresh


def _first(connections: dict, exclude) -> object | None:
    for connection in connections:
        if connection is not exclude:
            return connection
    return None


class ConnectionTable:
    """The open connections of one worker, by client and waiting kind; decides admissions (see the module)."""

    def __init__(self, max_connections: int, max_per_client: int):
        self.max_connections, self.max_per_client = max_connections, max_per_client
        self._where: dict[object, tuple[str | None, int | None]] = {}  # connection -> (client, kind or None: busy)
        self._clients: dict[str | None, _Client] = {}
        self._by_count: dict[int, set[str]] = {}  # addressed clients by connection count
        self._top = 0

    def __len__(self) -> int:
        return len(self._where)

    def count(self, client: str | None) -> int:
        entry = self._clients.get(client_key(client))
        return entry.count if entry else 0

    def admit(self, connection, client: str | None, now: float) -> Admission:
        """Add ``connection`` (from ``client``, an IP address or None for a Unix socket), accepted at ``now``, as
        waiting for its first byte, and say what making room for it takes. Evicted and refused connections leave
        the table at once (their slots are free from now on); the caller closes them."""
        key = client_key(client)
        self._add(connection, key, now)
        admission = Admission()
        entry = self._clients[key]
        if key is not None and entry.count > self.max_per_client:
            victim = entry.cheapest(connection, now)
            if victim is None:
                self.remove(connection)
                return Admission(refuse="client_connection_limit")
            self.remove(victim)
            admission.evict.append(victim)
        if len(self._where) > self.max_connections:
            victim = self._from_the_largest_client(connection, now)
            if victim is None:
                self.remove(connection)
                return Admission(evict=admission.evict, refuse="server_busy")
            self.remove(victim)
            admission.evict.append(victim)
        return admission

    def waiting(self, connection, kind: int, now: float) -> None:
        """``connection`` waits again, as ``kind``, from ``now`` (it goes behind the others of that kind)."""
        self._move(connection, kind, now)

    def busy(self, connection) -> None:
        """``connection`` carries a request: it is not closed to make room until it waits again."""
        self._move(connection, None, 0.0)

    def remove(self, connection) -> None:
        """Forget ``connection`` (closed, evicted or refused); idempotent."""
        where = self._where.pop(connection, None)
        if where is None:
            return
        key, kind = where
        entry = self._clients[key]
        if kind is not None:
            del entry.waiting[kind][connection]
        self._recount(key, entry, -1)
        if not entry.count:
            del self._clients[key]

    def _add(self, connection, key: str | None, now: float) -> None:
        entry = self._clients.get(key)
        if entry is None:
            entry = self._clients[key] = _Client()
        self._where[connection] = (key, FRESH)
        entry.waiting[FRESH][connection] = now
        self._recount(key, entry, +1)

    def _move(self, connection, kind: int | None, now: float) -> None:
        where = self._where.get(connection)
        if where is None:  # already evicted, refused or closed
            return
        key, old = where
        entry = self._clients[key]
        if old is not None:
            del entry.waiting[old][connection]
        if kind is not None:
            entry.waiting[kind][connection] = now
        self._where[connection] = (key, kind)

    def _recount(self, key: str | None, entry: _Client, delta: int) -> None:
        old, entry.count = entry.count, entry.count + delta
        if key is None:  # Unix sockets: counted, never bucketed (never closed to make room)
            return
        if old:
            bucket = self._by_count[old]
            bucket.discard(key)
            if not bucket:
                del self._by_count[old]
        if entry.count:
            self._by_count.setdefault(entry.count, set()).add(key)
        self._top = max(self._top, entry.count)
        while self._top and self._top not in self._by_count:
            self._top -= 1

    def _from_the_largest_client(self, newcomer, now: float):
        """A waiting connection of the client holding the most connections; among clients holding as many, one
        outside the newcomers' grace if any (up to ``_TIE_SCAN`` of them are looked at); None if none waits."""
        for count in range(self._top, 0, -1):
            young = None
            for scanned, key in enumerate(self._by_count.get(count, ())):
                victim = self._clients[key].cheapest(newcomer, now)
                if victim is None:
                    continue
                if not self._is_young(victim, now):
                    return victim
                young = young or victim
                if scanned >= _TIE_SCAN:
                    break
            if young is not None:
                return young
        return None

    def _is_young(self, connection, now: float) -> bool:
        key, kind = self._where[connection]
        return kind == FRESH and self._clients[key].waiting[FRESH][connection] > now - FRESH_GRACE_S
