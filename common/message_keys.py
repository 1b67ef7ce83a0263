"""Record and metric keys shared by the ServerApp and the ClientApp (never importing each other)."""

__all__ = [
    "ARRAYS",
    "CONFIG",
    "EPSILON",
    "EPSILON_BUDGET",
    "EPSILON_SITE_TOTAL",
    "DELTA",
    "METRICS",
    "NOISE_MULTIPLIER",
    "NUM_CLASSES",
    "NUM_EXAMPLES",
    "PRIVACY_STATE",
    "PROXIMAL_MU",
    "SERVER_ROUND",
    "SITE_ID",
    "STEPS",
    "TRAIN_LOSS",
    "EVAL_LOSS",
]

# Records in a message's RecordDict (Flower's strategy defaults).
ARRAYS = "arrays"
CONFIG = "config"
METRICS = "metrics"

# Config sent by the server.
SERVER_ROUND = "server-round"
NUM_CLASSES = "num-classes"
PROXIMAL_MU = "proximal-mu"

# Metrics sent back by a site. NUM_EXAMPLES is a count of samples, never of batches.
NUM_EXAMPLES = "num-examples"
SITE_ID = "site-id"
TRAIN_LOSS = "train-loss"
EVAL_LOSS = "eval-loss"
STEPS = "steps"
EPSILON = "epsilon"
DELTA = "delta"
NOISE_MULTIPLIER = "noise-multiplier"
#: Epsilon spent on the site's data over every job so far (its privacy ledger).
EPSILON_SITE_TOTAL = "epsilon-site-total"
#: The site's own limit on that total (its max-epsilon).
EPSILON_BUDGET = "epsilon-budget"

# Key of the site's own state kept across rounds in Flower's context.state.
PRIVACY_STATE = "medfed-privacy-state"
