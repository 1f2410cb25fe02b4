"""Generated gRPC contract; regenerate with `python proto/generate.py`."""
