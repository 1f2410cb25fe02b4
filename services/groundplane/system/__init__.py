"""The whole groundplane system on one machine: assembly, synthetic ground-user load, reports.

:mod:`.system` starts and supervises every service (broker, tracking, links, nodes, routing,
gateway) in one asyncio TaskGroup; :mod:`.load` is the synthetic ground-user load (a gRPC client
of the gateway); :mod:`.report` holds the counters, the summary and the per-request trace.
"""
