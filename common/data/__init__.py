"""Dataset readers, in-memory splits and site partitioning."""
