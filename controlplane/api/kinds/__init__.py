"""One strategy module per served kind (see ``controlplane.api.strategy``)."""
