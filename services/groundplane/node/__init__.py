"""One satellite's compute: inference backends, the serving engine and session state.

``backends`` holds the inference backends behind one async streaming protocol (a deterministic
synthetic model and an OpenAI-compatible HTTP client for a real local server); ``engine`` runs
requests on a fixed number of slots behind a bounded queue, de-duplicates them by request id and
keeps multi-turn sessions; ``sessions`` is the session state and its portable export format.
"""
