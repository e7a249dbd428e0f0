"""lookalike: visual search for product catalogs."""

from lookalike.embedders import Embedder, load_embedder
from lookalike.errors import LookalikeError

__version__ = "0.1.0"

__all__ = ["Catalog", "Embedder", "LookalikeError", "load_embedder", "__version__"]


def __getattr__(name: str):
    if name == "Catalog":
        from lookalike.catalog import Catalog

        return Catalog
    raise AttributeError(name)
