"""The coordinator: Flower ServerApp, strategies, run records and checkpoints."""
