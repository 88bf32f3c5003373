"""WaitPolicy: how a client waits for operations (a frozen, validated configuration)."""

from __future__ import annotations

import dataclasses
import math

import grpc

from ..backoff import Backoff

__all__ = ["WaitPolicy", "channel_options"]

_RETRY_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        # A grpc.aio server refuses calls beyond its pending queue with CANCELLED.
        grpc.StatusCode.CANCELLED,
    }
)
_POLL = Backoff(initial=1.0, multiplier=1.5, maximum=20.0, jitter=True)
# Capped at 5 s: a waiter retries within 5 s of a restarted server's return (with
# channel_options() reconnecting the channel as fast), at most one call per 2.5 s on
# average while the server is away (full jitter).
_RETRY = Backoff(initial=0.1, multiplier=2.0, maximum=5.0, jitter=True)


def channel_options(*, max_reconnect_backoff: float = 2.0) -> list[tuple[str, int]]:
    """The grpc.aio channel options lro_async recommends for waiting on operations.

    ``grpc.aio.insecure_channel(target, options=lro_async.channel_options())``. A gRPC
    channel whose server went away tries to reconnect with a backoff that grows to 120 s
    by default, and calls fail at once meanwhile (UNAVAILABLE): a waiter that retries
    after a restarted server is back still fails until the channel's next attempt, up to
    two minutes later. These options keep the attempts at most *max_reconnect_backoff*
    seconds apart (gRPC adds 20 % jitter), so waiters notice a server's return within a
    few seconds; each attempt is one TCP connect per channel, not per waiter.

    :param max_reconnect_backoff: the longest pause between reconnection attempts, seconds.
    """
    if not 0.1 <= max_reconnect_backoff <= 3600:
        raise ValueError(
            f"max_reconnect_backoff must be within 0.1 and 3600 s, not {max_reconnect_backoff!r}"
        )
    longest = int(max_reconnect_backoff * 1000)
    return [
        ("grpc.initial_reconnect_backoff_ms", min(500, longest)),
        ("grpc.max_reconnect_backoff_ms", longest),
    ]


@dataclasses.dataclass(frozen=True, slots=True)
class WaitPolicy:
    """How a client waits for operations: long polls, polling, retries and pacing.

    >>> policy = WaitPolicy(long_poll=60.0, poll=Backoff(initial=0.5, maximum=10.0))
    >>> policy.rpc_timeout
    30.0

    :param long_poll: seconds one WaitOperation call asks to wait when no awaiter has a
        nearer deadline. Long calls make idle waiters nearly free.
    :param deadline_margin: seconds by which a WaitOperation's RPC deadline exceeds the
        wait it asks for, so the server answers OK before the deadline.
    :param rpc_timeout: the deadline of every other RPC (GetOperation, CancelOperation,
        DeleteOperation, each ListOperations page), unless a call gives its own.
    :param poll: the pause between GetOperation polls when the server does not implement
        WaitOperation, and the length of progress polls.
    :param retry: the pause between retries of a transient error.
    :param retry_codes: the status codes a waiter retries; any other ends the wait.
    :param max_in_flight: most short RPCs one client has in flight at once.
    :param opens_per_second: most WaitOperation calls one client opens per second.
    :param open_burst: how many WaitOperation calls may open at once before that rate applies.
    :param warn_after: seconds a wait may keep failing (and retrying) before the client
        logs a warning naming the error (an untrusted certificate, a server that is down);
        at most one such warning per client per *warn_after* seconds.
    """

    long_poll: float = 900.0
    deadline_margin: float = 2.0
    rpc_timeout: float = 30.0
    poll: Backoff = _POLL
    retry: Backoff = _RETRY
    retry_codes: frozenset[grpc.StatusCode] = _RETRY_CODES
    max_in_flight: int = 200
    opens_per_second: float = 1000.0
    open_burst: int = 200
    warn_after: float = 30.0

    def __post_init__(self) -> None:
        numbers = ("long_poll", "deadline_margin", "rpc_timeout", "opens_per_second", "warn_after")
        for field in numbers:
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"WaitPolicy.{field} must be a number, not {value!r}")
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"WaitPolicy.{field} must be > 0 and finite, not {value!r}")
        for field in ("max_in_flight", "open_burst"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"WaitPolicy.{field} must be an int >= 1, not {value!r}")

    @classmethod
    def instant(cls) -> WaitPolicy:
        """A policy that never pauses between polls or retries: for tests."""
        return cls(poll=Backoff.instant(), retry=Backoff.instant())
