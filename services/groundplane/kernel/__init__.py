"""The shared kernel of groundplane: time, logs, errors, state paths and gRPC serving.

Every service depends on this package and on nothing of another service but its gRPC/MQTT
contract. Keep it small: a module here is a concept every service needs.
"""
