"""medfed-sim: simulate many hospitals on one machine, with baselines and reports."""
