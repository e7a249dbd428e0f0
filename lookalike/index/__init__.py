"""Nearest-neighbour indexes over image vectors, keyed by image id."""

from lookalike.index.base import VectorIndex
from lookalike.index.exact import ExactIndex

__all__ = ["ExactIndex", "VectorIndex"]
