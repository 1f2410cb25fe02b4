"""The ``groundplane`` command line."""
