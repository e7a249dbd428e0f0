"""The Store interface and the plain records it exchanges. Stores know only records and vectors."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from lookalike.errors import InvalidRequest

#: attribute keys that can be stored and filtered on: 1-64 characters, no double quote, backslash or
#: control character, no space at either end ("Size (EU)", "og:type", "color/size" are fine)
ATTRIBUTE_KEY = re.compile(r'[^"\\\s](?:[^"\\\x00-\x1f\x7f]{0,62}[^"\\\s])?')
ATTRIBUTE_KEY_RULE = (
    "1-64 characters, no double quote, backslash or control character, no space at either end"
)


def check_attribute_key(key: object) -> str:
    """``key`` if an attribute can be stored and filtered under it, else InvalidRequest."""
    if not isinstance(key, str) or not ATTRIBUTE_KEY.fullmatch(key):
        raise InvalidRequest(f"invalid attribute key {str(key)[:80]!r} ({ATTRIBUTE_KEY_RULE})")
    return key


@dataclass
class ProductRecord:
    product_id: str
    title: str | None = None
    category: str | None = None
    attributes: dict = field(default_factory=dict)
    url: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    image_ids: list[int] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "product_id": self.product_id,
            "title": self.title,
            "category": self.category,
            "attributes": self.attributes,
            "url": self.url,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "image_ids": self.image_ids,
        }


@dataclass
class ImageRecord:
    id: int
    sha256: str
    uri: str | None
    width: int
    height: int
    phash: str | None


@dataclass
class NewImage:
    """An image to store; ``vector`` is its embedding under the batch's model (None: already stored)."""

    sha256: str
    uri: str | None
    width: int
    height: int
    phash: str | None
    thumbnail: bytes | None = None
    vector: np.ndarray | None = None


@dataclass
class ProductWrite:
    """Create or update a product. ``None`` fields keep their stored value; attributes merge.

    ``image_shas`` are linked to the product; with ``replace_images`` the product's other links go.
    """

    product_id: str
    title: str | None = None
    category: str | None = None
    attributes: dict = field(default_factory=dict)
    url: str | None = None
    image_shas: list[str] = field(default_factory=list)
    replace_images: bool = False


@dataclass
class WriteResult:
    products_created: int = 0
    products_updated: int = 0
    images_added: int = 0
    embeddings_added: int = 0
    links_added: int = 0
    #: with ``replace_images``: links to images a product no longer lists
    links_removed: int = 0


class Store(ABC):
    """Persistence for one catalog. Every write method is one transaction."""

    url: str

    # --- schema -------------------------------------------------------------------------
    @abstractmethod
    def schema_version(self) -> int: ...

    # --- writes ---------------------------------------------------------------------------
    @abstractmethod
    def write_batch(self, model: str, images: list[NewImage], products: list[ProductWrite]) -> WriteResult:
        """Store images (deduplicated by sha256), their vectors and the products, atomically."""

    @abstractmethod
    def delete_product(self, product_id: str) -> bool:
        """Delete a product and its links; images no other product uses go too."""

    @abstractmethod
    def set_attributes(self, updates: dict[str, dict]) -> int:
        """Merge attributes into existing products; returns how many products were updated."""

    # --- reads ----------------------------------------------------------------------------
    @abstractmethod
    def images_with_sha(self, shas: Iterable[str], model: str) -> dict[str, tuple[int, bool]]:
        """sha256 -> (image id, has an embedding under ``model``) for the shas already stored."""

    @abstractmethod
    def get_products(self, product_ids: Iterable[str]) -> dict[str, ProductRecord]: ...

    @abstractmethod
    def product_pks(self, product_ids: Iterable[str]) -> dict[str, int]:
        """product id -> internal integer key, for the ids that exist."""

    @abstractmethod
    def products_by_pk(self, pks: Iterable[int]) -> dict[int, ProductRecord]:
        """Products by their internal integer key (the key used in :meth:`load_links`)."""

    def product_labels(self, pks: Iterable[int]) -> dict[int, tuple[str, str | None, str | None]]:
        """pk -> (product id, title, category): what a search hit shows (stores answer in one query)."""
        return {pk: (r.product_id, r.title, r.category) for pk, r in self.products_by_pk(pks).items()}

    @abstractmethod
    def list_products(
        self, after: int | None, limit: int, category: str | None = None
    ) -> list[tuple[int, ProductRecord]]:
        """(internal key, product) pairs in key order: the first ``limit`` with a key above ``after``
        (keyset pagination: an index range scan however deep the page), optionally of one category."""

    @abstractmethod
    def get_image(self, image_id: int) -> ImageRecord | None: ...

    @abstractmethod
    def load_phashes(self) -> tuple[np.ndarray, list[str]]:
        """(image ids int64 [n], perceptual hashes as hex) of every image that has one."""

    @abstractmethod
    def get_thumbnail(self, image_id: int) -> bytes | None: ...

    def get_thumbnails(self, image_ids: Sequence[int]) -> dict[int, bytes]:
        """``{image id: thumbnail}`` for those of ``image_ids`` that have one (one query where the
        store can)."""
        out = {}
        for i in image_ids:
            data = self.get_thumbnail(int(i))
            if data is not None:
                out[int(i)] = data
        return out

    @abstractmethod
    def matching_product_pks(self, filters: dict[str, str]) -> np.ndarray:
        """Internal keys of the products whose category / attributes equal the filters."""

    @abstractmethod
    def load_vectors(self, model: str) -> tuple[np.ndarray, np.ndarray]:
        """(image ids int64 [n], vectors float32 [n, dim]) of every image embedded under ``model``."""

    @abstractmethod
    def load_links(self) -> tuple[np.ndarray, np.ndarray]:
        """(product pks int64 [m], image ids int64 [m]): the whole product<->image relation."""

    @abstractmethod
    def vectors_for_images(self, image_ids: Iterable[int], model: str) -> dict[int, np.ndarray]: ...

    @abstractmethod
    def models(self) -> dict[str, int]:
        """Model name -> number of embedded images."""

    @abstractmethod
    def counts(self) -> dict[str, int]:
        """products, images, links, embeddings."""

    @abstractmethod
    def categories(self) -> dict[str, int]: ...

    @abstractmethod
    def generation(self) -> int:
        """A counter that changes whenever vectors or links change (for cache invalidation)."""

    @abstractmethod
    def get_meta(self, key: str) -> str | None: ...

    @abstractmethod
    def set_meta(self, key: str, value: str) -> None: ...

    @abstractmethod
    def close(self) -> None: ...
