"""The `duologue` command line: the composition root, the only package that imports both
gateway and projector (dev mode, the operator commands, embedded services)."""
