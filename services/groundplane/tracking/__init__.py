"""The tracking service: the element catalog and its store, served over gRPC (geometry, passes
and visibility come from the :mod:`groundplane.orbit` library).

Keep this module free of imports: ``groundplane.tracking.v1`` (the generated gRPC contract)
is imported by other services, and importing it runs this file.
"""
