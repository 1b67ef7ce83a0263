"""One module per `medfed-server` command."""
