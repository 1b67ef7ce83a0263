"""Framework-free core of medfed: config, data, models, tasks and privacy (never imports flwr)."""
