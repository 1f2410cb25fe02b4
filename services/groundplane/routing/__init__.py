"""groundplane routing: which satellite serves a request (filter → score → pick), as a route table.

Modules: ``backhaul`` (how ground users reach stations), ``policy`` (the pure decision),
``table`` (the precomputed route table the gateway decides from locally), ``service`` (the
refresh loop) and ``servicer`` (the ``groundplane.routing.v1.RoutingService`` gRPC edge).
"""
