"""Learning tasks: loss, local training loop, evaluation and metrics."""
