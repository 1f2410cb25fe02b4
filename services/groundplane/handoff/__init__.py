"""Handoff: sessions and long jobs that outlive a satellite pass (planner, manager, store)."""
