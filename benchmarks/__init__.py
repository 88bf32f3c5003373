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
  operation finishes at once, versus the same bare server.

Modules: ``harness`` (processes, statistics, tables, JSON), ``control`` (the side channel
a client uses to drive a benchmark server), ``server`` (``python -m benchmarks.server``),
``waiters`` (the client of ``idle`` and ``wakeup``) and one module per benchmark.
"""

from __future__ import annotations
