"""Poll spacing: grows by the multiplier, stops at the maximum, and jitter keeps it within its band and never
past the maximum."""

from __future__ import annotations

import pytest

from research_runner.lifecycle import backoff_delay
from research_runner.settings import Settings

SAMPLES = 200


def settings(**policy: float) -> Settings:
    return Settings(data_dir="/nonexistent/unused", **policy)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("policy", "polls_done", "base"),
    [
        ({"poll_initial": 10, "poll_multiplier": 1.5, "poll_max": 60}, 0, 10.0),
        ({"poll_initial": 10, "poll_multiplier": 1.5, "poll_max": 60}, 1, 15.0),
        ({"poll_initial": 10, "poll_multiplier": 1.5, "poll_max": 60}, 3, 33.75),
        ({"poll_initial": 10, "poll_multiplier": 1.5, "poll_max": 60}, 5, 60.0),  # 75.9 capped
        ({"poll_initial": 10, "poll_multiplier": 1.5, "poll_max": 60}, 10_000, 60.0),  # no overflow
        ({"poll_initial": 2, "poll_multiplier": 1, "poll_max": 60}, 50, 2.0),  # multiplier 1: constant
        ({"poll_initial": 90, "poll_multiplier": 2, "poll_max": 60}, 0, 60.0),  # initial above the cap
    ],
)
def test_delay_stays_within_the_jitter_band_of_its_base(policy: dict[str, float], polls_done: int, base: float) -> None:
    for jitter in (0.0, 0.1, 0.5):
        rules = settings(**policy, poll_jitter=jitter)
        delays = [backoff_delay(rules, polls_done) for _ in range(SAMPLES)]
        assert min(delays) >= base * (1 - jitter) - 1e-9
        assert max(delays) <= min(base * (1 + jitter), rules.poll_max) + 1e-9
        if jitter == 0:
            assert delays == [pytest.approx(base)] * SAMPLES
        else:  # jitter spreads the polls of jobs started together
            assert max(delays) - min(delays) > base * jitter / 2


def test_delays_grow_until_the_cap_then_stay() -> None:
    rules = settings(poll_initial=1, poll_multiplier=2, poll_max=30, poll_jitter=0)
    delays = [backoff_delay(rules, n) for n in range(8)]
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]


@pytest.mark.parametrize("jitter", [0.1, 0.5])
def test_jitter_never_takes_a_wait_past_the_maximum(jitter: float) -> None:
    # RESEARCH_POLL_MAX is the longest a finished research waits to be noticed (README); jitter only spreads
    # the waits below it, so at the cap they lie between max * (1 - jitter) and max.
    rules = settings(poll_initial=10, poll_multiplier=1.5, poll_max=60, poll_jitter=jitter)
    capped = [backoff_delay(rules, polls_done) for polls_done in range(5, 9) for _ in range(SAMPLES)]
    assert max(capped) == 60
    assert min(capped) >= 60 * (1 - jitter) - 1e-9
    assert len(set(capped)) > SAMPLES  # still spread, not all at the cap
