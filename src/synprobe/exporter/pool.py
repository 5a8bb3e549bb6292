"""The Probers behind `/probe`: one per distinct engine setting of the configured modules.

Every request shares a long-lived `synprobe.Prober` (one engine loop on a thread of its own), so
1,000 requests a second cost 1,000 checks, not processes or threads. A Prober fixes what its
engine fixes at start (engine, per-attempt timeout, retries, source address, mark); modules that
agree on those share one, so a config whose modules differ only in name, address family or
count of SYNs has exactly one Prober. The pool is built from the config, never from requests:
its size is bounded by the config, whatever targets requests name.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping

from synprobe.exporter.config import Module
from synprobe.prober import Prober

ProberFactory = Callable[[Module, int], Prober]


def make_prober(module: Module, concurrency: int) -> Prober:
    return Prober(module.engine, timeout=module.attempt_timeout,
                  retries=0 if module.count else module.retries, concurrency=concurrency,
                  source=module.source, mark=module.mark)


class ProberPool:
    """One Prober per distinct engine key of the configured modules.

    A reload is two steps: `prepare()` makes the Probers the new config lacks (slow for the
    raw engine, so callers on an event loop run it on a thread; it touches no shared state),
    `commit()` swaps them in (on the loop's thread, instantly). A Prober no module needs any
    more is closed once no request holds it (`acquire`/`release`): a request that started
    before a reload finishes with the Prober it started with.
    """

    def __init__(self, factory: ProberFactory = make_prober) -> None:
        self._factory = factory
        self._probers: dict[tuple[object, ...], Prober] = {}
        self._users: dict[int, int] = {}  # id(prober) -> requests holding it
        self._retired: dict[int, Prober] = {}  # replaced, closed when its last user leaves
        # The engine's concurrency is fixed at start too: a new cap means new Probers.
        self._concurrency = 0

    def __len__(self) -> int:
        return len(self._probers)

    @staticmethod
    def _key(module: Module, concurrency: int) -> tuple[object, ...]:
        return (*module.engine_key(), concurrency)

    def get(self, module: Module) -> Prober:
        return self._probers[self._key(module, self._concurrency)]

    def acquire(self, module: Module) -> Prober:
        prober = self.get(module)
        self._users[id(prober)] = self._users.get(id(prober), 0) + 1
        return prober

    def release(self, prober: Prober) -> None:
        left = self._users[id(prober)] - 1
        if left:
            self._users[id(prober)] = left
            return
        del self._users[id(prober)]
        retired = self._retired.pop(id(prober), None)
        if retired is not None:
            _close_later([retired])

    def prepare(self, modules: Mapping[str, Module], concurrency: int,
                ) -> dict[tuple[object, ...], Prober]:
        """Probers for the modules' engine keys the pool lacks. One that cannot start (the raw
        engine without CAP_NET_RAW) raises, after closing those made so far."""
        have = set(self._probers)
        fresh: dict[tuple[object, ...], Prober] = {}
        try:
            for module in modules.values():
                key = self._key(module, concurrency)
                if key not in have and key not in fresh:
                    fresh[key] = self._factory(module, concurrency)
        except BaseException:
            _close_later(list(fresh.values()))
            raise
        return fresh

    def commit(self, modules: Mapping[str, Module], concurrency: int,
               fresh: Mapping[tuple[object, ...], Prober]) -> None:
        wanted = {self._key(m, concurrency) for m in modules.values()}
        current = dict(fresh)
        current.update({k: p for k, p in self._probers.items() if k in wanted})
        unused = [p for k, p in fresh.items() if current[k] is not p]  # a racing prepare's
        stale = [p for k, p in self._probers.items() if k not in wanted]
        self._probers = {k: current[k] for k in wanted}
        self._concurrency = concurrency
        for prober in stale:
            if id(prober) in self._users:
                self._retired[id(prober)] = prober
            else:
                unused.append(prober)
        _close_later(unused)

    def replace(self, modules: Mapping[str, Module], concurrency: int) -> None:
        """prepare() and commit() in one go (for callers without an event loop)."""
        self.commit(modules, concurrency, self.prepare(modules, concurrency))

    def close(self) -> None:
        probers = [*self._probers.values(), *self._retired.values()]
        self._probers, self._retired = {}, {}
        for prober in probers:
            prober.close()


def _close_later(probers: list[Prober]) -> None:
    """Prober.close() waits for the checks in flight; off the event loop, so a reload never
    stalls other requests."""
    if probers:
        threading.Thread(target=lambda: [p.close() for p in probers],
                         name="synprobe-exporter-close", daemon=True).start()
