"""Config and metric keys shared by the ServerApp and the ClientApp (never importing each other)."""

__all__ = [
    "DELTA",
    "EPSILON",
    "EPSILON_BUDGET",
    "EPSILON_SITE_TOTAL",
    "EVAL_LOSS",
    "FIT_INS_MODEL",
    "NOISE_MULTIPLIER",
    "NUM_EXAMPLES",
    "PRIVACY_STATE",
    "PRIVACY_UNIT",
    "SCORE_COUNTS",
    "SERVER_ROUND",
    "SITE_NAME",
    "STEPS",
    "TRAIN_LOSS",
    "TRAINED_AT_SETUP",
]

# Config sent by the server.
SERVER_ROUND = "server-round"

# Metrics sent back by a site. NUM_EXAMPLES is a count of samples, never of batches.
NUM_EXAMPLES = "num-examples"
SITE_NAME = "site"
TRAIN_LOSS = "train-loss"
EVAL_LOSS = "eval-loss"
STEPS = "steps"
EPSILON = "epsilon"
DELTA = "delta"
NOISE_MULTIPLIER = "noise-multiplier"
#: What one unit of privacy protects: "patient" or "image".
PRIVACY_UNIT = "privacy-unit"
#: Binary classification: the site's validation images per class and score bin, as
#: common.tasks.threshold encodes them (a clear, non-DP release: docs/privacy.md).
SCORE_COUNTS = "score-counts"
#: Epsilon spent on the site's data over every job so far (its privacy ledger).
EPSILON_SITE_TOTAL = "epsilon-site-total"
#: The site's own limit on that total (its max-epsilon).
EPSILON_BUDGET = "epsilon-budget"

# Key of the site's own state kept across rounds in Flower's context.state.
PRIVACY_STATE = "medfed-privacy-state"

# SecAgg+ (Flower's config record of each stage).
#: Where Flower's legacy fit instructions carry the model (flwr's compat record name).
FIT_INS_MODEL = "fitins.parameters"
#: In a site's setup reply: it trains the round now, from the model its setup message carried,
#: so the coordinator leaves the model out of the site's masked-vector message.
TRAINED_AT_SETUP = "medfed-trained-at-setup"
