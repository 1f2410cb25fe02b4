"""The live dashboard: one web page over the services' contracts (``serve dashboard``)."""
