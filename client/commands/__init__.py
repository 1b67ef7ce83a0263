"""One module per medfed-site command."""
