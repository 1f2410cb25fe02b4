"""The tracking service: element catalog, SGP4 geometry, passes and visibility.

Keep this module free of imports: ``groundplane.tracking.v1`` (the generated gRPC contract)
is imported by other services, and importing it runs this file.
"""
