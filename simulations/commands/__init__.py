"""One module per medfed-sim command."""
