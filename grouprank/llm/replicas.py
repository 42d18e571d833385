"""Replicas of one endpoint (`LLMEndpoint.replicas`): several servers of one model behind one client.

Each attempt goes to the live replica with the fewest requests in flight (ties rotate), never to
the one whose attempt just failed while another is live. Every replica has its own connection pools
(`max_concurrency` each), preflight and circuit breaker (`guard.EndpointGuard`): a replica whose
breaker opens is taken out for the rest of the client's life and its requests go to the others;
the client fails only when every replica is out. With one URL the replica's guard is the client's
own, so a single endpoint behaves exactly as before.
"""
from __future__ import annotations

import asyncio
import logging
import threading

from . import transport
from .guard import EndpointGuard, EndpointUnavailable, KeyRejected, preflight

log = logging.getLogger("grouprank.llm")


def endpoint_urls(endpoint) -> list[str]:
    """The server(s) an endpoint's requests go to: `replicas`, else [base_url] (empty when it has neither)."""
    reps = getattr(endpoint, "replicas", None)
    return list(reps) if reps else ([endpoint.base_url] if endpoint.base_url else [])


class Replica:
    """One server: its endpoint (a copy with this `base_url`), guard, pools and counters."""

    def __init__(self, index: int, endpoint, guard: EndpointGuard):
        self.index, self.endpoint, self.guard = index, endpoint, guard
        self.in_flight = 0      # attempts sent or waiting for this replica's concurrency slot
        self.pools = None       # transport.LoopPools of the current event loop
        self.calls = 0          # attempts sent
        self.answers = 0        # answers received (HTTP 200 with a completion)

    @property
    def out(self) -> bool:
        return self.guard.reason is not None


class ReplicaSet:
    def __init__(self, endpoint, client_guard: EndpointGuard):
        urls = endpoint_urls(endpoint)
        self.name = endpoint.name
        if len(urls) == 1:
            ep = endpoint if not getattr(endpoint, "replicas", None) else \
                endpoint.model_copy(update={"base_url": urls[0], "replicas": None})
            self.items = [Replica(0, ep, client_guard)]
        else:
            self.items = []
            for i, u in enumerate(urls):
                ep = endpoint.model_copy(update={"base_url": u, "replicas": None})
                where = f"LLM endpoint {endpoint.name!r} replica {i + 1}/{len(urls)} ({u})"
                self.items.append(Replica(i, ep, EndpointGuard(ep, where)))
        self._turn = 0
        self._pools_lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.items)

    def pick(self, avoid: Replica | None = None) -> Replica | None:
        """The live replica with the fewest in flight (not `avoid` while another is live); None when all are out."""
        live = [r for r in self.items if not r.out]
        if avoid is not None and len(live) > 1:
            live = [r for r in live if r is not avoid]
        if not live:
            return None
        self._turn += 1
        n = len(self.items)
        return min(live, key=lambda r: (r.in_flight, (r.index - self._turn) % n))

    def pools(self, rep: Replica, api_key: str) -> transport.LoopPools:
        """`rep`'s connection pools for the running event loop (made on first use in each loop)."""
        loop = asyncio.get_running_loop()
        p = rep.pools
        if p is not None and p.loop is loop:
            return p
        with self._pools_lock:
            p = rep.pools
            if p is None or p.loop is not loop:
                p = rep.pools = transport.LoopPools.open(rep.endpoint, api_key, loop)
            return p

    async def send(self, rep: Replica, api_key: str, body: dict, timeout: float):
        """One attempt on `rep` (`transport.send`), counted in flight while it is on its way."""
        pools = self.pools(rep, api_key)
        rep.calls += 1
        rep.in_flight += 1
        try:
            out = await transport.send(pools, body, timeout)
        finally:
            rep.in_flight -= 1
        rep.answers += 1
        return out

    async def aclose(self) -> None:
        for rep in self.items:
            p, rep.pools = rep.pools, None
            if p is not None and p.loop is asyncio.get_running_loop():
                await p.close()

    def forget_pools(self) -> None:
        for rep in self.items:
            rep.pools = None

    async def preflight(self, api_key: str, where: str, scrub) -> None:
        """`guard.preflight` of every live replica, together: one that cannot be reached is taken out
        (a warning); a rejected key, or no replica left, raises `EndpointUnavailable`."""
        if len(self.items) == 1:
            await preflight(self.items[0].endpoint, api_key, where, scrub)
            return
        live = [r for r in self.items if not r.out]
        outs = await asyncio.gather(*(preflight(r.endpoint, api_key, r.guard.where, scrub) for r in live),
                                    return_exceptions=True)
        for r, o in zip(live, outs):
            if isinstance(o, KeyRejected) or (isinstance(o, BaseException) and not isinstance(o, EndpointUnavailable)):
                raise o
            if isinstance(o, EndpointUnavailable):
                # the reason is reported by replica position (usage, records): without its URL
                r.guard.open("its preflight failed: " + str(o).replace(r.guard.where, "the replica"))
                if self.taken_out(r) is not None:
                    raise EndpointUnavailable(f"{where}: no replica can be reached: {self.all_out_reason()}")

    def note(self, rep: Replica, kind: str | None) -> str | None:
        """Breaker bookkeeping of one attempt on `rep`; returns the reason the whole set is out, if it now is."""
        was_out = rep.out
        rep.guard.note_transport(kind)
        if len(self.items) == 1 or not rep.out or was_out:
            return None
        return self.taken_out(rep)

    def taken_out(self, rep: Replica) -> str | None:
        left = [r for r in self.items if not r.out]
        if left:
            log.warning("LLM endpoint %r: replica %d/%d taken out (%s); its requests go to the %d other(s)",
                        self.name, rep.index + 1, len(self.items), rep.guard.reason, len(left))
            return None
        return self.all_out_reason()

    def slots(self) -> int:
        """Requests on the wire at once over the live replicas (`max_concurrency` each)."""
        return sum(max(1, int(r.endpoint.max_concurrency)) for r in self.items if not r.out) or 1

    def all_out_reason(self) -> str:
        return f"all {len(self.items)} replicas are out (" + "; ".join(
            f"{r.index + 1}: {r.guard.reason}" for r in self.items) + ")"

    def usage(self) -> list[dict]:
        """Per replica (by position, never its URL): attempts sent, answers, why it is out (None: live)."""
        return [{"replica": r.index + 1, "calls": r.calls, "answers": r.answers, "out": r.guard.reason}
                for r in self.items]
