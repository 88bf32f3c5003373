"""Backoff: the policy's validation and the delays it yields."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from lro_async import Backoff


def _first(backoff: Backoff, n: int) -> list[float]:
    return list(itertools.islice(backoff.delays(), n))


def test_delays_grow_by_the_multiplier_and_stop_at_the_maximum() -> None:
    backoff = Backoff(initial=0.5, multiplier=3.0, maximum=10.0, jitter=False)
    assert _first(backoff, 6) == [0.5, 1.5, 4.5, 10.0, 10.0, 10.0]


def test_a_multiplier_of_one_keeps_the_delay_constant() -> None:
    assert _first(Backoff(initial=2.0, multiplier=1.0, maximum=2.0, jitter=False), 4) == [2.0] * 4


def test_full_jitter_draws_each_delay_between_zero_and_its_nominal_value() -> None:
    random.seed(1234)
    nominal = _first(Backoff(initial=1.0, multiplier=2.0, maximum=8.0, jitter=False), 200)
    jittered = _first(Backoff(initial=1.0, multiplier=2.0, maximum=8.0, jitter=True), 200)
    assert all(0.0 <= j <= n for j, n in zip(jittered, nominal, strict=True))
    # Jitter spreads the delays: not all at their nominal value, and the capped ones vary.
    assert jittered != nominal
    assert len({round(d, 6) for d in jittered[10:]}) > 100


def test_instant_never_sleeps() -> None:
    assert _first(Backoff.instant(), 5) == [0.0] * 5


def test_the_policy_is_frozen() -> None:
    backoff = Backoff()
    with pytest.raises(AttributeError):
        backoff.initial = 5.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("options", "error", "words"),
    [
        ({"initial": -1.0}, ValueError, "initial must be >= 0"),
        ({"multiplier": 0.5}, ValueError, "multiplier must be >= 1"),
        ({"initial": 5.0, "maximum": 1.0}, ValueError, "must be >= initial"),
        ({"initial": math.inf, "maximum": math.inf}, ValueError, "initial must be finite"),
        ({"maximum": math.nan}, ValueError, "maximum must be finite"),
        ({"initial": "1"}, TypeError, "initial must be a number"),
        ({"multiplier": True}, TypeError, "multiplier must be a number"),
    ],
)
def test_a_bad_policy_is_refused_with_the_field_named(
    options: dict[str, object], error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        Backoff(**options)  # type: ignore[arg-type]
