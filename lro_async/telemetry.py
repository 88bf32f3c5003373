"""OpenTelemetry traces and metrics of lro_async: a no-op unless ``lro-async[otel]`` is installed.

Client and server ask this module for a :class:`Telemetry` when they are made
(:func:`current`) and keep it, or None: with None their only cost is one attribute check
per RPC or operation. Which one :func:`current` gives:

- after :func:`configure` (tracer and meter providers passed explicitly, or the global
  ones; or a ``prometheus_client`` registry that lro_async answers itself, without the
  SDK): that one; after :func:`disable`: None;
- otherwise, if ``opentelemetry-api`` is installed: one over the global providers (the
  API's no-op providers until an SDK is set up, which cost little), made once;
- otherwise None, and ``opentelemetry`` is never imported.

>>> import lro_async.telemetry as telemetry
>>> # from opentelemetry.sdk.metrics import MeterProvider
>>> # telemetry.configure(meter_provider=MeterProvider(metric_readers=[reader]))

Spans (names, attributes; README "Traces and metrics" lists them with the metrics):

- client ``lro_async.wait`` (INTERNAL): one per awaited operation, from the first awaiter
  to the end of the wait; ``lro_async.operation.name``, ``lro_async.operation.code``,
  ``lro_async.rpcs``, ``lro_async.transport``, ``lro_async.wait.long_polled``,
  ``lro_async.wait.watched``, ``lro_async.wait.polled``;
- client ``{rpc.method}`` (CLIENT) per RPC, its W3C trace context sent in the request
  metadata; the Watch stream has one per stream, with an ``operation`` event per delivery;
- server ``{rpc.method}`` (SERVER) per RPC (one per Watch stream), continuing the caller's
  trace; ``lro_async.operation`` (INTERNAL) per operation started by ``manager.start``,
  from start to its final write, linked to the span current at start (the RPC).

Durations and ends are measured when things happen and applied (counted, their attributes
found, recorded) in one go later (:meth:`Telemetry._keep`): by the next collection, or 32
at a time after the loop turn, so their cost falls after the answers a turn sends, not
before them.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import grpc

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.metrics import Meter, MeterProvider, Observation
    from opentelemetry.trace import Span, TracerProvider
    from prometheus_client.core import Metric
    from prometheus_client.registry import CollectorRegistry

__all__ = [
    "INSTALL_HINT",
    "ClientRpc",
    "ServerRpc",
    "Telemetry",
    "WaitTrace",
    "available",
    "configure",
    "current",
    "disable",
    "reset",
]

INSTALL_HINT = "pip install 'lro-async[otel]'"
"""What to install for traces, metrics and ``serve --metrics-port``."""

SCOPE = "lro_async"
OPERATIONS = "google.longrunning.Operations"
WATCH = "lro_async.v1.OperationsWatch"

# Bits of WaitTrace.how.
LONG_POLL, WATCHED, POLLED = 1, 2, 4

_LOOK_AGAIN = 1.0
"""Seconds between two looks for OpenTelemetry's global tracer (or meter) provider while
none is set."""

_CODE_NAMES: dict[int, str] = {code.value[0]: code.name for code in grpc.StatusCode}

# Histogram buckets in seconds: RPCs and store calls are sub-millisecond to seconds, notice
# delays milliseconds, operations seconds to hours.
_FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_SLOW_BUCKETS = (0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 3 * 3600, 12 * 3600)


def code_name(code: grpc.StatusCode | int) -> str:
    """``"OK"``, ``"NOT_FOUND"``, ...: the name of a status code (an unknown int as a number)."""
    if isinstance(code, grpc.StatusCode):
        return code.name
    return _CODE_NAMES.get(code, str(code))


class _State:
    telemetry: Telemetry | None = None
    decided = False  # configure() or disable() was called, or current() looked once


_state = _State()


def available() -> bool:
    """Whether ``opentelemetry-api`` can be imported (the ``otel`` extra is installed)."""
    try:
        import opentelemetry.trace  # noqa: F401
    except ImportError:
        return False
    return True


def current() -> Telemetry | None:
    """The telemetry that managers and clients made from now on use (see the module doc)."""
    if not _state.decided:
        _state.decided = True
        _state.telemetry = Telemetry() if available() else None
    return _state.telemetry


def configure(
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    prometheus_registry: CollectorRegistry | None = None,
) -> Telemetry:
    """Instrument managers and clients made from now on with these providers.

    :param tracer_provider: where spans go (None: the global one, ``trace.set_tracer_provider``).
    :param meter_provider: where metrics go (None: the global one).
    :param prometheus_registry: or a ``prometheus_client`` registry that a scrape reads the
        metrics from, the same names, units and labels as OpenTelemetry's Prometheus
        exporter gives them, without the SDK (what ``lro-async serve --metrics-port``
        does); :meth:`Telemetry.close` unregisters them.
    :raises ImportError: without ``opentelemetry-api`` (``pip install 'lro-async[otel]'``).
    :raises ValueError: given both a meter provider and a registry.
    """
    telemetry = Telemetry(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        prometheus_registry=prometheus_registry,
    )
    _state.telemetry, _state.decided = telemetry, True
    return telemetry


def disable() -> None:
    """Managers and clients made from now on are not instrumented at all."""
    _state.telemetry, _state.decided = None, True


def reset() -> None:
    """Back to the default: decided afresh by the next :func:`current`."""
    _state.telemetry, _state.decided = None, False


class WaitTrace:
    """The span of one awaited operation and what its waiter did (client side)."""

    __slots__ = ("how", "rpcs", "span")

    def __init__(self, span: Span) -> None:
        self.span = span
        self.rpcs = 0
        self.how = 0  # LONG_POLL | WATCHED | POLLED


class ClientRpc:
    """One outgoing RPC: its span and the metadata that carries its trace context."""

    __slots__ = ("metadata", "span", "telemetry")

    def __init__(self, telemetry: Telemetry, span: Span | None, metadata: Sequence[Any]) -> None:
        self.telemetry = telemetry
        self.span = span  # None: nothing traces (no tracer provider is set up)
        self.metadata = metadata

    def end(self, code: grpc.StatusCode, http_status: int | None = None) -> None:
        """End the span with the call's status (and, over HTTP, the response's status)."""
        span = self.span
        if span is None:
            return
        if span.is_recording():
            span.set_attribute("rpc.response.status_code", code.name)
            if http_status is not None:
                span.set_attribute("http.response.status_code", http_status)
            if code is not grpc.StatusCode.OK:
                span.set_status(self.telemetry._error, code.name)
        span.end()


class ServerRpc:
    """One incoming RPC: its span (current while it runs) and its duration."""

    __slots__ = ("method", "span", "started", "telemetry", "token")

    def __init__(self, telemetry: Telemetry, method: str, span: Span | None, token: object) -> None:
        self.telemetry = telemetry
        self.method = method
        self.span = span
        self.token = token
        self.started = time.perf_counter()

    def end(self, code: grpc.StatusCode) -> None:
        self.telemetry._keep((_rpc_ended, self.method, code, time.perf_counter() - self.started))
        if self.span is not None:
            self._end_span(code.name, error=code in _SERVER_ERRORS)

    def _end_span(self, status: str | int, *, error: bool) -> None:
        span = self.span
        if span is None:
            return
        if span.is_recording():
            if isinstance(status, str):
                span.set_attribute("rpc.response.status_code", status)
            else:
                span.set_attribute("http.response.status_code", status)
            if error:
                span.set_status(self.telemetry._error, str(status))
        span.end()
        self.telemetry._detach(self.token)


class ServerRequest(ServerRpc):
    """One incoming HTTP request of the HTTP/JSON face: its span and its duration.

    ``method`` is the request's route template (``/v1/{name=**/operations/*}``), or ""
    when it matches none.
    """

    __slots__ = ("verb",)

    def __init__(
        self, telemetry: Telemetry, verb: str, route: str | None, span: Span | None, token: object
    ) -> None:
        super().__init__(telemetry, route or "", span, token)
        self.verb = verb

    def end_http(self, status: int | None) -> None:
        """End it with the response's status (None: the client left before an answer)."""
        elapsed = time.perf_counter() - self.started
        self.telemetry._keep((_request_ended, self.verb, self.method, status, elapsed))
        # A client that left before the answer (None) is no error of the server's.
        self._end_span(0 if status is None else status, error=status is not None and status >= 500)


# What a server span marks as an error (semconv: the codes that say the server failed).
_SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


_HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})


class _Ended(Protocol):
    """An operation's end as a store wrote it (a stores' OperationRecord; read-only)."""

    @property
    def operation(self) -> Any: ...
    @property
    def create_time(self) -> int: ...
    @property
    def update_time(self) -> int: ...


class _Histogram(Protocol):
    """What records a histogram: the SDK's instrument, or lro_async's :class:`_Buckets`."""

    def record(self, amount: float, attributes: Mapping[str, str | int] | None = None) -> None: ...


class _Measured(NamedTuple):
    """A histogram: its OpenTelemetry name, unit, description and bucket bounds."""

    name: str
    unit: str
    description: str
    buckets: tuple[float, ...]


_OPERATION_DURATION = _Measured(
    "lro_async.operation.duration",
    "s",
    "From an operation's creation to its end, by code",
    _SLOW_BUCKETS,
)
_NOTICE_DELAY = _Measured(
    "lro_async.notice.delay",
    "s",
    "From an operation's end to its answer to a waiter (WaitOperation, Watch)",
    _FAST_BUCKETS,
)
_STORE_DURATION = _Measured(
    "lro_async.store.call.duration", "s", "Calls of the operation store, by method", _FAST_BUCKETS
)
_RPC_DURATION = _Measured(
    "rpc.server.call.duration", "s", "Duration of incoming RPCs", _FAST_BUCKETS
)
_HTTP_DURATION = _Measured(
    "http.server.request.duration",
    "s",
    "Duration of incoming HTTP requests (the HTTP/JSON face)",
    _FAST_BUCKETS,
)


class _Observed(NamedTuple):
    """A count or a level lro_async keeps as ints, read when a reader collects."""

    name: str
    kind: str  # "counter" or "gauge" (an up-down counter)
    unit: str
    description: str
    read: Callable[[Telemetry], Iterable[tuple[int, Mapping[str, str] | None]]]


class _Buckets:
    """A histogram lro_async keeps itself for a Prometheus registry: per attribute set,
    the count of each bucket and the sum.

    Callers pass the attribute mappings :class:`Telemetry` makes once per distinct value
    (or None), so a series is found by the mapping's identity; it keeps the mapping.
    A scrape reads it from another thread: the lock keeps counts and sum of a series
    consistent.
    """

    __slots__ = ("_lock", "bounds", "series")

    def __init__(self, spec: _Measured) -> None:
        self.bounds = spec.buckets
        self.series: dict[int, tuple[Mapping[str, str | int] | None, list[float]]] = {}
        self._lock = threading.Lock()

    def record(self, amount: float, attributes: Mapping[str, str | int] | None = None) -> None:
        index = bisect.bisect_left(self.bounds, amount)  # the first bound >= amount
        with self._lock:
            entry = self.series.get(id(attributes))
            if entry is None:
                entry = self.series[id(attributes)] = (attributes, [0.0] * (len(self.bounds) + 2))
            counts = entry[1]
            counts[index] += 1
            counts[-1] += amount  # the sum

    def read(self) -> list[tuple[Mapping[str, str | int] | None, list[float]]]:
        """Each series' attributes, bucket counts (the last for +Inf) and sum, copied."""
        with self._lock:
            return [(attributes, list(counts)) for attributes, counts in self.series.values()]


class _Exposition:
    """A ``prometheus_client`` collector of one :class:`Telemetry`'s metrics, named as
    OpenTelemetry's Prometheus exporter names them (``rpc.server.call.duration`` in
    seconds is ``rpc_server_call_duration_seconds``, a counter gains ``_total``, an
    up-down counter is a gauge, ``rpc.method`` is the label ``rpc_method``)."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import Metric
        from prometheus_client.utils import floatToGoString

        telemetry = self.telemetry
        telemetry.flush()  # every record kept so far, before the histograms are read
        for observed in _OBSERVED:
            name = _prometheus_name(observed.name, observed.unit)
            metric = Metric(name, observed.description, observed.kind)
            sample = f"{name}_total" if observed.kind == "counter" else name
            for value, counted in observed.read(telemetry):
                metric.add_sample(sample, _labels(counted), value)
            yield metric
        for measured, histogram in telemetry.histograms():
            assert isinstance(histogram, _Buckets)
            name = _prometheus_name(measured.name, measured.unit)
            metric = Metric(name, measured.description, "histogram")
            bounds = [*map(floatToGoString, measured.buckets), "+Inf"]
            for attributes, counts in histogram.read():
                labels = _labels(attributes)
                cumulative = 0.0
                for bound, count in zip(bounds, counts, strict=False):
                    cumulative += count
                    metric.add_sample(f"{name}_bucket", {**labels, "le": bound}, cumulative)
                metric.add_sample(f"{name}_count", labels, cumulative)
                metric.add_sample(f"{name}_sum", labels, counts[-1])
            yield metric


def _prometheus_name(name: str, unit: str) -> str:
    return name.replace(".", "_") + ("_seconds" if unit == "s" else "")


def _labels(attributes: Mapping[str, str | int] | None) -> dict[str, str]:
    return {key.replace(".", "_"): str(value) for key, value in (attributes or {}).items()}


class _Provided:
    """Whether a provider (tracer or meter) was given or OpenTelemetry's global one is set.

    The global one is looked up at most once a :data:`_LOOK_AGAIN` while unset (the
    lookup reads the environment each time); once set, it stays set (OpenTelemetry sets
    it once, for good). One set after lro_async started counts within a second.
    """

    __slots__ = ("_given", "_is_set", "_look_again")

    def __init__(self, given: bool, is_set: Callable[[], bool]) -> None:
        self._given = given
        self._is_set = is_set
        self._look_again = 0.0  # time.monotonic() when the global is looked up again

    def __call__(self) -> bool:
        if self._given:
            return True
        now = time.monotonic()
        if now < self._look_again:
            return False
        if self._is_set():
            self._given = True
            return True
        self._look_again = now + _LOOK_AGAIN
        return False


def _of_the_api(provider: object) -> bool:
    """Whether *provider* is one of the API's own (its proxy or its no-op), not an SDK's."""
    return type(provider).__module__.startswith("opentelemetry.metrics")


#: Measurements kept before they are applied in one go (see :meth:`Telemetry._keep`).
_PENDING = 32
#: ... and made at once when this many wait (a loop that stopped before its drain ran).
_PENDING_MAX = 4096


class _Carrier:
    """Reads W3C trace headers from gRPC invocation metadata without building a dict."""

    @staticmethod
    def get(carrier: Iterable[tuple[str, Any]], key: str) -> list[str] | None:
        for name, value in carrier:
            if name == key and isinstance(value, str):
                return [value]
        return None

    @staticmethod
    def keys(carrier: Iterable[tuple[str, Any]]) -> list[str]:
        return [name for name, _ in carrier]


class Telemetry:
    """Spans and instruments of lro_async over a tracer provider and a meter provider.

    :param tracer_provider: None: the global one.
    :param meter_provider: None: the global one.
    :param prometheus_registry: a ``prometheus_client`` registry to answer with the
        metrics instead of a meter provider: lro_async then keeps the histograms itself,
        which costs a record about a microsecond instead of the SDK's several.
    """

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        prometheus_registry: CollectorRegistry | None = None,
    ) -> None:
        if meter_provider is not None and prometheus_registry is not None:
            raise ValueError("give a meter_provider or a prometheus_registry, not both")
        from opentelemetry import context, metrics, propagate, trace

        self._context = context
        self._trace = trace
        self._propagator = propagate.get_global_textmap()
        self._getter = _Carrier()
        self._error = trace.StatusCode.ERROR
        self._server_kind = trace.SpanKind.SERVER
        self._client_kind = trace.SpanKind.CLIENT
        self.tracer = trace.get_tracer(SCOPE, tracer_provider=tracer_provider)
        # Until a tracer provider is set up, spans are skipped altogether (not even the
        # API's no-op ones): metrics alone cost only their instruments.
        no_tracers = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
        self._traced = _Provided(
            tracer_provider is not None,
            lambda: not isinstance(trace.get_tracer_provider(), no_tracers),
        )
        meter = metrics.get_meter(SCOPE, meter_provider=meter_provider)
        self.meter = meter
        # Counts and levels are plain ints, read by observable instruments when a reader
        # collects: an operation costs them an integer addition, not an SDK measurement.
        # (The callbacks may run on a scrape's thread: they copy the dicts first, which the
        # GIL makes atomic.)
        self._n_started = 0
        self._n_finished: dict[str, int] = {}
        self._n_running = 0
        self._n_store_errors: dict[str, int] = {}
        # Open waits and watches are not counted twice: the gauges read the counts their
        # servicers keep for admission (count_open), held weakly.
        self._waits_of: list[weakref.ref[Any]] = []
        self._watches_of: list[weakref.ref[Any]] = []
        # Measurements of ends, notices and calls wait here and are applied in one go
        # (_keep): by a collection (a scrape, an SDK reader) first, on any thread, or by a
        # drain every _PENDING. A deque's append and popleft are atomic: no lock on the hot
        # path; one drain at a time counts and records (see flush).
        self._pending: collections.deque[tuple[Any, ...]] = collections.deque()
        self._due = _PENDING  # kept past which a drain is due: _PENDING_MAX once queued
        self._draining = threading.Lock()
        self._exposition: _Exposition | None = None
        self._duration: _Histogram
        self._notice: _Histogram
        self._store_duration: _Histogram
        self._rpc_duration: _Histogram
        self._http_duration: _Histogram
        # Attribute mappings are made once per distinct value, not per measurement, and
        # kept: _Buckets finds a series by its mapping's identity (setdefault: two threads
        # making the same one at once end with one).
        self._codes: dict[str, Mapping[str, str]] = {}
        self._methods: dict[str, Mapping[str, str]] = {}
        # (keyed by the code's id: a StatusCode hashes in Python, a member is a singleton)
        self._rpcs: dict[tuple[str, int], Mapping[str, str]] = {}
        self._requests: dict[tuple[str, str, int | None], Mapping[str, str | int]] = {}
        if prometheus_registry is None:
            # Until a meter provider is set up, the instruments are the API's no-op
            # proxies, which drop what they are given: a drain skips them.
            self._metered = _Provided(
                meter_provider is not None and not _of_the_api(meter_provider),
                lambda: not _of_the_api(metrics.get_meter_provider()),
            )
            self._instrument(meter, metrics.Observation)
        else:
            # To the registry: lro_async keeps its own bucket counts (a record costs a
            # bisect and two additions under a lock, not an SDK measurement).
            self._metered = _Provided(True, lambda: True)
            self._duration = _Buckets(_OPERATION_DURATION)
            self._notice = _Buckets(_NOTICE_DELAY)
            self._store_duration = _Buckets(_STORE_DURATION)
            self._rpc_duration = _Buckets(_RPC_DURATION)
            self._http_duration = _Buckets(_HTTP_DURATION)
            self._exposition = _Exposition(self)
            prometheus_registry.register(self._exposition)
            self._registry = prometheus_registry
        self.recording = self._metered()
        """Whether the histograms take records (a meter provider is set up, or a registry
        answered), as of the last drain or collection: while False, a server's RPCs and
        notices are not measured at all (the API's no-op instruments would drop them)."""

    def _instrument(self, meter: Meter, observation: type[Observation]) -> None:
        """Make the OpenTelemetry instruments (the SDK's path)."""
        for spec in _OBSERVED:
            create = (
                meter.create_observable_counter
                if spec.kind == "counter"
                else meter.create_observable_up_down_counter
            )
            create(spec.name, [self._observer(spec, observation)], spec.unit, spec.description)

        def histogram(spec: _Measured) -> _Histogram:
            return meter.create_histogram(
                spec.name,
                spec.unit,
                spec.description,
                explicit_bucket_boundaries_advisory=spec.buckets,
            )

        self._duration = histogram(_OPERATION_DURATION)
        self._notice = histogram(_NOTICE_DELAY)
        self._store_duration = histogram(_STORE_DURATION)
        self._rpc_duration = histogram(_RPC_DURATION)
        self._http_duration = histogram(_HTTP_DURATION)

    def _observer(
        self, spec: _Observed, observation: type[Observation]
    ) -> Callable[[object], list[Observation]]:
        first = spec is _OBSERVED[0]

        def observe(_: object) -> list[Observation]:
            if first:  # before the reader reads the histograms: make what still waits
                self.flush()
            return [observation(value, attributes) for value, attributes in spec.read(self)]

        return observe

    def histograms(self) -> tuple[tuple[_Measured, _Histogram], ...]:
        """Each histogram's description and the instrument that records it."""
        return (
            (_OPERATION_DURATION, self._duration),
            (_NOTICE_DELAY, self._notice),
            (_STORE_DURATION, self._store_duration),
            (_RPC_DURATION, self._rpc_duration),
            (_HTTP_DURATION, self._http_duration),
        )

    def close(self) -> None:
        """Stop answering the Prometheus registry it was given (if any)."""
        if self._exposition is not None:
            self._registry.unregister(self._exposition)
            self._exposition = None

    # -- plumbing ---------------------------------------------------------------------

    def _code(self, code: str) -> Mapping[str, str]:
        attributes = self._codes.get(code)
        if attributes is None:
            attributes = self._codes.setdefault(code, {"code": code})
        return attributes

    def _method(self, method: str) -> Mapping[str, str]:
        attributes = self._methods.get(method)
        if attributes is None:
            attributes = self._methods.setdefault(method, {"method": method})
        return attributes

    def _rpc_attributes(self, method: str, code: grpc.StatusCode) -> Mapping[str, str]:
        key = (method, id(code))
        attributes = self._rpcs.get(key)
        if attributes is None:
            attributes = self._rpcs.setdefault(
                key,
                {
                    "rpc.system.name": "grpc",
                    "rpc.method": method,
                    "rpc.response.status_code": code.name,
                },
            )
        return attributes

    def _http_attributes(
        self, verb: str, route: str, status: int | None
    ) -> Mapping[str, str | int]:
        key = (verb, route, status)
        attributes = self._requests.get(key)
        if attributes is None:
            made: dict[str, str | int] = {"http.request.method": verb}
            if route:
                made["http.route"] = route
            if status is not None:
                made["http.response.status_code"] = status
            attributes = self._requests.setdefault(key, made)
        return attributes

    def _keep(self, measured: tuple[Any, ...]) -> None:
        """Keep *measured* (its applying function, then its values) to apply soon, not now.

        What a measurement costs beyond taking it (its attributes found, a count, a
        histogram record: the SDK's costs several microseconds, lro_async's own buckets
        about half of one) would otherwise hold up what the turn does next, such as
        answering the waiters an end just woke. Kept, measurements are applied in one go:
        by a collection, which applies every one kept before it reads (a scrape, an SDK
        reader's callbacks, from any thread), and once :data:`_PENDING` wait, by one timer
        callback queued behind the callbacks this loop turn scheduled (outside an event
        loop: at once). With no meter provider set up, a drain only counts ends and store
        errors (the API's no-op instruments would drop the records), and a server measures
        no RPC nor notice at all (:attr:`recording`).
        """
        pending = self._pending
        pending.append(measured)
        kept = len(pending)
        if kept < self._due:
            return
        if kept >= _PENDING_MAX:  # the loop that was to drain them stopped first
            self.flush()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._due = _PENDING_MAX  # one drain queued at a time
        loop.call_later(0, self.flush)

    def flush(self) -> None:
        """Apply every measurement kept so far (a collection does so first).

        While another thread drains, this returns at once and leaves what is kept to that
        drain and the next: no thread ever waits on another's drain, so none can hold a
        lock of the SDK's (a reader collecting calls back into this) while waiting on
        ours, whatever the SDK's own locking.
        """
        self._due = _PENDING
        if not self._draining.acquire(blocking=False):
            return
        try:
            pending = self._pending
            metered = self.recording = self._metered()
            while True:
                try:
                    measured = pending.popleft()
                except IndexError:
                    return
                measured[0](self, metered, *measured[1:])
        finally:
            self._draining.release()

    def _detach(self, token: object) -> None:
        self._context.detach(token)  # type: ignore[arg-type]

    def tracing(self) -> bool:
        """Whether spans are made: a tracer provider was given or has been set globally."""
        return self._traced()

    def attach(self, span: Span) -> object:
        """Make *span* current in this task; hand the token to :meth:`detach`."""
        return self._context.attach(self._trace.set_span_in_context(span))

    def detach(self, token: object) -> None:
        self._context.detach(token)  # type: ignore[arg-type]

    # -- client -----------------------------------------------------------------------

    def start_wait(self, name: str, transport: str) -> WaitTrace | None:
        """The span of one awaited operation, child of the span current now (None: no
        tracing)."""
        if not self.tracing():
            return None
        span = self.tracer.start_span(
            "lro_async.wait",
            attributes={"lro_async.operation.name": name, "lro_async.transport": transport},
        )
        return WaitTrace(span)

    def end_wait(self, trace: WaitTrace, code: grpc.StatusCode | int, message: str = "") -> None:
        """End the wait's span with the operation's outcome (or the error that ended it)."""
        span = trace.span
        if span.is_recording():
            how = trace.how
            name = code_name(code)
            span.set_attributes(
                {
                    "lro_async.operation.code": name,
                    "lro_async.rpcs": trace.rpcs,
                    "lro_async.wait.long_polled": bool(how & LONG_POLL),
                    "lro_async.wait.watched": bool(how & WATCHED),
                    "lro_async.wait.polled": bool(how & POLLED),
                }
            )
            if name != "OK":
                span.set_status(self._error, message or name)
        span.end()

    def client_rpc(
        self,
        method: str,
        metadata: Sequence[Any],
        *,
        root: bool = False,
        http: tuple[str, str] | None = None,
    ) -> ClientRpc:
        """Start the span of an outgoing RPC; its ``.metadata`` carries the trace context.

        :param method: ``service/Method``.
        :param root: start a trace of its own (else: a child of the current span).
        :param http: over HTTP/JSON, the request's method and URL (else: over gRPC).
        """
        if not self.tracing():
            return ClientRpc(self, None, metadata)
        context: Context | None = self._context.Context() if root else None
        attributes = (
            {"rpc.system.name": "grpc", "rpc.method": method}
            if http is None
            else {"rpc.method": method, "http.request.method": http[0], "url.full": http[1]}
        )
        span = self.tracer.start_span(
            method, context, kind=self._client_kind, attributes=attributes
        )
        if span.get_span_context().is_valid:
            carrier: dict[str, str] = {}
            self._propagator.inject(carrier, self._trace.set_span_in_context(span, context))
            metadata = (*metadata, *carrier.items())
        return ClientRpc(self, span, metadata)

    # -- server -----------------------------------------------------------------------

    def server_rpc(
        self, method: str, context: grpc.aio.ServicerContext[Any, Any]
    ) -> ServerRpc | None:
        """Start the span of an incoming RPC in the caller's trace and make it current.

        :param method: ``service/Method``.
        :param context: the call's context (its metadata carries the caller's trace context).
        :returns: None while there is neither span nor record to make (:attr:`recording`).
        """
        if not self._traced():
            return ServerRpc(self, method, None, None) if self.recording else None
        metadata = context.invocation_metadata() or ()
        parent = self._propagator.extract(metadata, getter=self._getter)  # type: ignore[arg-type]
        span = self.tracer.start_span(
            method,
            parent,
            kind=self._server_kind,
            attributes={"rpc.system.name": "grpc", "rpc.method": method},
        )
        return ServerRpc(self, method, span, self.attach(span))

    def server_request(
        self, method: str, verb: str, route: str | None, headers: Mapping[str, str]
    ) -> ServerRequest:
        """Start the span of an incoming HTTP request in the caller's trace, current.

        :param method: the RPC method it serves (``service/Method``), or "" (none).
        :param route: the route template, e.g. ``/v1/{name=**/operations/*}``; None: the
            request matches no route.
        :param headers: its headers, names in lower case (``traceparent`` carries the
            caller's trace context).
        """
        if verb not in _HTTP_METHODS:
            verb = "_OTHER"  # semantic conventions: bounded values only
        if not self.tracing():
            return ServerRequest(self, verb, route, None, None)
        parent = self._propagator.extract(headers)
        attributes = {"http.request.method": verb}
        if route is not None:
            attributes["http.route"] = route
        if method:
            attributes["rpc.method"] = method
        name = verb if route is None else f"{verb} {route}"
        span = self.tracer.start_span(name, parent, kind=self._server_kind, attributes=attributes)
        return ServerRequest(self, verb, route, span, self.attach(span))

    def operation_started(self) -> None:
        """Count a new operation (started, or created to be driven by hand)."""
        self._n_started += 1

    def operation_span(self, name: str) -> Span | None:
        """Start the span of an operation's life, linked to the span current now (the RPC
        that started it); None: no tracing."""
        if not self.tracing():
            return None
        trace = self._trace
        now = trace.get_current_span().get_span_context()
        links = (trace.Link(now),) if now.is_valid else ()
        return self.tracer.start_span(
            "lro_async.operation",
            trace.set_span_in_context(trace.INVALID_SPAN),  # its own trace: it outlives the RPC
            attributes={"lro_async.operation.name": name},
            links=links,
        )

    def operation_finished(self, span: Span | None, record: _Ended) -> None:
        """Count an operation's end (*record*, as written) under its code; end its span
        if it has one. Its code and duration are read when the end is applied: a record
        is read-only."""
        self._keep((_operation_ended, record))
        if span is not None:
            if span.is_recording():
                status = record.operation.error
                name = code_name(status.code)
                span.set_attribute("lro_async.operation.code", name)
                if status.code:
                    span.set_status(self._error, status.message or name)
            span.end()

    def operation_ended_unrecorded(self, span: Span, why: str) -> None:
        """End a life span whose end this replica never wrote (deleted, given up)."""
        if span.is_recording():
            span.set_attribute("lro_async.operation.unrecorded", why)
        span.end()

    def running(self, delta: int) -> None:
        self._n_running += delta

    def count_open(self, source: object, *, waits: bool) -> None:
        """Count *source*'s open calls in ``lro_async.waits.open`` (its ``waiting``, when
        *waits*) or ``lro_async.watches.open`` (its ``streams``) for as long as it lives.

        The servicers keep those counts for admission anyway: read when a reader
        collects, they cost a wait or a stream nothing more.
        """
        sources = self._waits_of if waits else self._watches_of
        sources[:] = [ref for ref in sources if ref() is not None]
        sources.append(weakref.ref(source))

    def noticed(self, delay: float) -> None:
        """A waiter was answered *delay* seconds after its operation finished."""
        self._keep((_noticed, delay))

    def store_call(self, method: str, seconds: float, failed: bool) -> None:
        self._keep((_store_called, method, seconds, failed))


# How a drain applies each kind of measurement kept (Telemetry._keep), given whether a
# meter provider or registry takes records.


def _open(sources: list[weakref.ref[Any]], count: str) -> int:
    """The sum of the *count* attribute of the *sources* that still live."""
    return sum(getattr(ref(), count, 0) for ref in list(sources))


def _operation_ended(t: Telemetry, metered: bool, record: _Ended) -> None:
    name = code_name(record.operation.error.code)
    t._n_finished[name] = t._n_finished.get(name, 0) + 1
    if metered:
        t._duration.record((record.update_time - record.create_time) / 1e6, t._code(name))


def _noticed(t: Telemetry, metered: bool, delay: float) -> None:
    if metered:
        t._notice.record(max(delay, 0.0), None)


def _store_called(t: Telemetry, metered: bool, method: str, seconds: float, failed: bool) -> None:
    if metered:
        t._store_duration.record(seconds, t._method(method))
    if failed:
        t._n_store_errors[method] = t._n_store_errors.get(method, 0) + 1


def _rpc_ended(
    t: Telemetry, metered: bool, method: str, code: grpc.StatusCode, seconds: float
) -> None:
    if metered:
        t._rpc_duration.record(seconds, t._rpc_attributes(method, code))


def _request_ended(
    t: Telemetry, metered: bool, verb: str, route: str, status: int | None, seconds: float
) -> None:
    if metered:
        t._http_duration.record(seconds, t._http_attributes(verb, route, status))


_OBSERVED = (
    # The first is read first: the SDK's path makes the deferred records before it.
    _Observed(
        "lro_async.operations.started",
        "counter",
        "{operation}",
        "Operations created or started",
        lambda t: ((t._n_started, None),),
    ),
    _Observed(
        "lro_async.operations.finished",
        "counter",
        "{operation}",
        "Operations finished, by code",
        lambda t: [(n, t._code(code)) for code, n in list(t._n_finished.items())],
    ),
    _Observed(
        "lro_async.operations.running",
        "gauge",
        "{operation}",
        "Operations whose work runs here",
        lambda t: ((t._n_running, None),),
    ),
    _Observed(
        "lro_async.waits.open",
        "gauge",
        "{call}",
        "WaitOperation calls and ':wait' requests open now",
        lambda t: ((_open(t._waits_of, "waiting"), None),),
    ),
    _Observed(
        "lro_async.watches.open",
        "gauge",
        "{stream}",
        "Watch streams open now (gRPC and server-sent events)",
        lambda t: ((_open(t._watches_of, "streams"), None),),
    ),
    _Observed(
        "lro_async.store.errors",
        "counter",
        "{error}",
        "Store calls that failed, by method",
        lambda t: [(n, t._method(method)) for method, n in list(t._n_store_errors.items())],
    ),
)
"""The counts and levels, in the order the OpenTelemetry instruments are made."""
