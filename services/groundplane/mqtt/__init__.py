"""MQTT plumbing of groundplane: a private Mosquitto launcher, the one client wrapper every
component uses, and the ``gp/v1/`` topic namespace (see docs/topics.md)."""
