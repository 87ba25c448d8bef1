"""Data: benchmark sources (Hub or local), chat-template encoding, bucketed batches."""

from mdu_jax.data import batching, encoding, sources
from mdu_jax.data.encoding import DataError

__all__ = ["batching", "encoding", "sources", "DataError"]
