"""The ``duologue`` command line and the small adapters shared by gateway and projector."""
