"""Seeded HTTP fault injection, one random stream per endpoint.

Every request to an endpoint consumes exactly one uniform draw from that endpoint's generator, whether
or not faults are configured, so the same seed and the same request sequence give the same faults even
when the configuration changes at runtime. The draw is mapped onto the configured kinds in a fixed order.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .settings import ENDPOINTS, FAULT_KINDS, FaultMap


@dataclass(frozen=True, slots=True)
class Fault:
    kind: str
    # For `cut`: how many events are sent before the stream is cut.
    cut_after: int = 0


class FaultInjector:
    def __init__(self, seed: int, faults: FaultMap) -> None:
        self.seed = seed
        self.faults = faults
        self._rngs: dict[str, random.Random] = {}
        self.reset(faults)

    def reset(self, faults: FaultMap) -> None:
        self.faults = faults
        self._rngs = {name: random.Random(f"{self.seed}:faults:{name}") for name in ENDPOINTS}

    def draw(self, endpoint: str) -> Fault | None:
        rng = self._rngs[endpoint]
        u = rng.random()
        rates = self.faults.get(endpoint, {})
        cumulative = 0.0
        for kind in FAULT_KINDS:
            cumulative += rates.get(kind, 0.0)
            if u < cumulative:
                # The second draw happens only on a cut, which the seed already fixed, so it stays reproducible.
                return Fault(kind, cut_after=1 + rng.randrange(4) if kind == "cut" else 0)
        return None
