"""The chaos workload: concurrent clients reading, writing and compare-and-swapping registers
(one ConfigMap each, value in ``data.v``) through the Kubernetes API while faults happen, each
request recorded as an ``Operation`` for the checkers.

Each operation is exactly one HTTP request, sent to one controller and never retried: a retry
after an unanswered request could apply a write twice, which the history could not describe (so
``ApiClient``, which fails over and retries, is not used here). A client talks to one controller
at a time, moves to the next one after a failure, as users spread over a cluster's addresses do,
and with ``rebind`` now and then to a random one, so that every controller keeps some clients.

What an answer means for the history (``classify``): 2xx is ``ok``; an answer that says nothing
was applied (4xx: 404, 409, 422, 429) is ``fail``; anything else (a timeout, a 5xx, a connection
error) is ``unknown``: the write may have taken effect then or later. Even "connection refused"
is unknown: aiohttp sends an idempotent request (PUT) a second time when the first connection
broke, so the refusal may follow a first attempt that reached the server and was applied (a
chaos run caught exactly that: a write recorded as failed whose value was read later). A
compare-and-swap is a read (recorded as such) and an update carrying the read resourceVersion;
409 Conflict (another write came in between) applied nothing, so it is ``fail`` too, which also
keeps the checker's search small. Reads that fail are dropped (``fail``): they change nothing.

Values are unique (``<run>:<client>-<sequence>``), which the lost-write check and the cas reading
above rely on. Setup creates every register, or overwrites what an earlier run left, with this
run's first value (recorded as writes of client -1).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from chaos.history import Kind, Operation, Outcome, Value

log = logging.getLogger(__name__)

NAMESPACE = "chaos"
#: The register's field in the ConfigMap's data.
FIELD = "v"
SETUP_CLIENT = -1
#: Statuses that say the request was refused before anything was applied.
DEFINITE_FAILURES = frozenset({400, 403, 404, 409, 422, 429})


#: Default chance per operation that a client moves to a random controller.
REBIND = 0.05


@dataclass
class WorkloadConfig:
    """``urls``: every controller's API; ``ssl``: the admin client's context."""

    urls: list[str]
    ssl: ssl.SSLContext | None
    keys: int = 8
    clients: int = 6
    #: Share of each kind of operation (read, write, cas).
    mix: tuple[float, float, float] = (0.4, 0.3, 0.3)
    #: Pause between a client's operations, seconds (keeps histories checkable).
    think: float = 0.02
    timeout: float = 5.0
    #: The chance, after each answered operation, that a client moves to a random controller.
    #: Failovers alone gather the clients on controllers that were never hit; with rebinding a
    #: fault's target (a cut-off leader above all) keeps serving some of them. 0: sticky.
    rebind: float = REBIND
    seed: int = 0
    namespace: str = NAMESPACE

    def key(self, i: int) -> str:
        return f"reg-{i}"


@dataclass
class Answer:
    """One HTTP exchange: its status (0 when no answer came) and body."""

    status: int
    body: Any = None


def classify(answer: Answer) -> Outcome:
    """What a write's answer tells the checkers (see the module docstring)."""
    if 200 <= answer.status < 300:
        return Outcome.OK
    if answer.status in DEFINITE_FAILURES:
        return Outcome.FAIL
    return Outcome.UNKNOWN


@dataclass
class _Client:
    number: int
    session: aiohttp.ClientSession
    url_index: int
    sequence: int = 0
    ops: list[Operation] = field(default_factory=list)


class Workload:
    """``await setup()``, ``await run(stop)``, then ``await final_values()`` after healing."""

    def __init__(self, config: WorkloadConfig, *, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.config = config
        self.clock = clock
        self.history: list[Operation] = []
        #: Prefixes every value: an earlier run's values left in a register are never taken
        #: for this run's.
        self.run_id = f"{random.SystemRandom().getrandbits(32):08x}"

    # -- HTTP -----------------------------------------------------------------------------

    def _session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(ssl=self.config.ssl if self.config.ssl else False)
        return aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=self.config.timeout))

    def _path(self, key: str = "") -> str:
        base = f"/api/v1/namespaces/{self.config.namespace}/configmaps"
        return f"{base}/{key}" if key else base

    async def _send(self, session: aiohttp.ClientSession, url: str, method: str, path: str,
                    body: Any = None) -> Answer:
        try:
            async with session.request(method, url + path, json=body) as response:
                raw = await response.read()
        except (aiohttp.ClientError, TimeoutError):
            return Answer(0)
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        return Answer(response.status, parsed)

    # -- setup and the end ----------------------------------------------------------------

    async def setup(self, timeout: float = 60.0) -> None:
        """The namespace and every register, retried through any controller until done."""
        deadline = self.clock() + timeout
        async with self._session() as session:
            ns = {"apiVersion": "v1", "kind": "Namespace",
                  "metadata": {"name": self.config.namespace}}
            await self._until_done(session, "POST", "/api/v1/namespaces", ns, deadline)
            for i in range(self.config.keys):
                key = self.config.key(i)
                value = f"{self.run_id}:init-{i}"
                body = self._body(key, value)
                invoked = self.clock()
                made = await self._until_done(session, "POST", self._path(), body, deadline)
                if made.status == 409:  # left by an earlier run: this run's first value
                    await self._until_done(session, "PUT", self._path(key), body, deadline)
                self.history.append(Operation(SETUP_CLIENT, key, Kind.WRITE, value, None,
                                              Outcome.OK, invoked, self.clock()))

    async def _until_done(self, session: aiohttp.ClientSession, method: str, path: str,
                          body: Any, deadline: float) -> Answer:
        """Send until an answer other than "unavailable" comes (409 AlreadyExists counts as
        done: an earlier attempt made it)."""
        attempt = 0
        while True:
            url = self.config.urls[attempt % len(self.config.urls)]
            answer = await self._send(session, url, method, path, body)
            if 200 <= answer.status < 300 or answer.status == 409:
                return answer
            if self.clock() > deadline:
                raise RuntimeError(f"{method} {path}: no controller answered (last status "
                                   f"{answer.status})")
            attempt += 1
            await asyncio.sleep(0.2)

    async def final_values(self, timeout: float = 60.0) -> dict[str, Value]:
        """Every register's value now (after healing), read through any controller."""
        deadline = self.clock() + timeout
        values: dict[str, Value] = {}
        async with self._session() as session:
            for i in range(self.config.keys):
                key = self.config.key(i)
                answer = await self._until_done(session, "GET", self._path(key), None, deadline)
                values[key] = _value(answer.body) if answer.status == 200 else None
        return values

    # -- the run --------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> list[Operation]:
        """Every client until ``stop``; the history (setup included), by invocation time."""
        clients = [_Client(n, self._session(), n % len(self.config.urls))
                   for n in range(self.config.clients)]
        try:
            await asyncio.gather(*(self._client(c, stop) for c in clients))
        finally:
            for c in clients:
                await c.session.close()
        for c in clients:
            self.history.extend(c.ops)
        self.history.sort(key=lambda op: op.invoked)
        return self.history

    async def _client(self, client: _Client, stop: asyncio.Event) -> None:
        rng = random.Random(self.config.seed * 1000 + client.number)
        kinds = (Kind.READ, Kind.WRITE, Kind.CAS)
        while not stop.is_set():
            key = self.config.key(rng.randrange(self.config.keys))
            kind = rng.choices(kinds, weights=self.config.mix)[0]
            url = self.config.urls[client.url_index]
            if kind is Kind.READ:
                healthy = (await self._read(client, url, key)) is not None
            elif kind is Kind.WRITE:
                healthy = await self._write(client, url, key)
            else:
                healthy = await self._cas(client, url, key)
            if not healthy:  # this controller did not answer: the next one
                client.url_index = (client.url_index + 1) % len(self.config.urls)
            elif rng.random() < self.config.rebind:  # now and then another controller
                client.url_index = rng.randrange(len(self.config.urls))
            await asyncio.sleep(self.config.think)

    def _body(self, key: str, value: str, resource_version: str = "") -> dict[str, Any]:
        """Register ``key`` holding ``value``; with a resourceVersion, only over that version."""
        meta = {"name": key, "namespace": self.config.namespace}
        if resource_version:
            meta["resourceVersion"] = resource_version
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
                "data": {FIELD: value}}

    def _next_value(self, client: _Client) -> str:
        client.sequence += 1
        return f"{self.run_id}:{client.number}-{client.sequence}"

    async def _read(self, client: _Client, url: str, key: str) -> Answer | None:
        """A read op; its answer, None when it failed (then nothing is recorded)."""
        invoked = self.clock()
        answer = await self._send(client.session, url, "GET", self._path(key))
        returned = self.clock()
        if answer.status == 200:
            client.ops.append(Operation(client.number, key, Kind.READ, None,
                                        _value(answer.body), Outcome.OK, invoked, returned,
                                        url))
            return answer
        if answer.status == 404:
            client.ops.append(Operation(client.number, key, Kind.READ, None, None, Outcome.OK,
                                        invoked, returned, url))
            return answer
        return None

    async def _write(self, client: _Client, url: str, key: str) -> bool:
        value = self._next_value(client)
        return await self._update(client, url, key, Kind.WRITE, value, self._body(key, value))

    async def _cas(self, client: _Client, url: str, key: str) -> bool:
        read = await self._read(client, url, key)
        if read is None or read.status != 200:
            return read is not None
        expected = _value(read.body)
        value = self._next_value(client)
        body = self._body(key, value, read.body["metadata"]["resourceVersion"])
        return await self._update(client, url, key, Kind.CAS, (expected, value), body)

    async def _update(self, client: _Client, url: str, key: str, kind: Kind,
                      given: Value | tuple[Value, Value], body: Any) -> bool:
        """One PUT recorded as a write or a cas (a cas that applied succeeded: output True);
        False when the controller did not answer at all."""
        invoked = self.clock()
        answer = await self._send(client.session, url, "PUT", self._path(key), body)
        outcome = classify(answer)
        returned = self.clock() if outcome is not Outcome.UNKNOWN else float("inf")
        output = True if kind is Kind.CAS and outcome is Outcome.OK else None
        client.ops.append(Operation(client.number, key, kind, given, output, outcome,
                                    invoked, returned, url))
        return answer.status != 0


def _value(body: Any) -> Value:
    data = body.get("data") if isinstance(body, dict) else None
    return data.get(FIELD) if isinstance(data, dict) else None
