"""Emulated space links: the pure link model (delay, serialisation, loss, outages) and the
emulator service that carries MQTT messages across the links on the simulated clock."""
