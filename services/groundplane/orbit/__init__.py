"""Orbital mechanics as a library: element sets, SGP4 geometry, passes, visibility and sites.

Pure functions of explicit inputs (no clock, no I/O beyond parsing what they are given). Every
service that needs geometry (tracking, links, routing, handoff, hil) and the CLI import it; no
service's runtime lives here.
"""
