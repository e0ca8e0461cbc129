"""FaceX training: pairs from shards, the Ray Train loop, evaluation and its metrics (paper §3.5, §4)."""

__version__ = "0.1.0"
