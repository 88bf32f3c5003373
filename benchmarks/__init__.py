"""lro_async benchmarks: ``python -m benchmarks [--quick] [--only NAME] [--sizes N ...]``.

Each benchmark runs its server and its client in separate processes, so that the CPU of
each side can be measured, prints a table, and writes JSON to ``benchmarks/results/``.
Every figure that is compared with something is compared with a figure measured in the
same run on the same machine (DESIGN.md section 6); absolute times are reported, never
asserted.

- ``notice``: completion-to-notice latency, RPCs per completed operation and CPU of both
  sides for lro_async's long poll, its polling fallback and google-api-core's polling;
- ``throughput``: GetOperation calls per second through lro_async (MemoryStore, SQLite)
  versus a bare grpc.aio handler returning a constant Operation;
- ``idle``: memory and CPU of thousands of open WaitOperation calls, versus a bare
  long-poll server (an ``asyncio.Event`` per operation);
- ``wakeup``: time until the last of thousands of waiters is answered when every
  operation finishes at once, versus the same bare server;
- ``scale``: memory, notice latency and CPU per awaited operation from 1,000 to 100,000,
  over the Watch stream and with a WaitOperation per operation;
- ``batch``: a batch awaited at once in an app-sized heap, lro_async against raw
  WaitOperation loops in the same process;
- ``otel``: the cost of the OpenTelemetry instrumentation, by telemetry mode.

Modules, besides one per benchmark:

- what every benchmark shares: ``settings`` (the command line, gRPC message limits,
  paths), ``processes`` (starting servers and clients, and a client's ``__main__``),
  ``reports`` (a benchmark's report, its targets and JSON) and ``tables`` (printed
  tables);
- what the processes measure with: ``resources`` (CPU seconds, resident memory),
  ``gcpauses`` (garbage-collector pauses), ``percentiles`` (p50/p99 summaries) and
  ``telemetry`` (a process's OpenTelemetry mode, for ``otel``);
- the processes themselves: ``server`` (``python -m benchmarks.server``), ``control``
  (the side channel a client drives a benchmark server with) and ``waiters`` (the client
  of ``idle``, ``wakeup`` and ``scale``).
"""

from __future__ import annotations
