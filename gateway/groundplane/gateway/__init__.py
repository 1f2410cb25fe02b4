"""The inference gateway: ground-user ingress (to be built on routing and links)."""
