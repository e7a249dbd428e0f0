"""A catalog seen through one model: product vectors, product images, raw latents and nearest products.

Every explore command starts from a :class:`LatentSpace`. Product vectors come from the catalog when it
holds vectors for the model; otherwise products are embedded on the fly from their stored thumbnails, so
``map``, ``clusters`` and ``impute`` work with any embedder even on a catalog indexed with another one.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from lookalike.catalog import Catalog
from lookalike.errors import ImageNotFound, InvalidRequest, ModelError
from lookalike.progress import progress_bar


@dataclass
class Match:
    """A real catalog product nearest to a point of latent space."""

    product_id: str
    score: float
    category: str | None
    title: str | None

    def to_dict(self) -> dict:
        return {
            "product_id": self.product_id,
            "score": round(self.score, 6),
            "category": self.category,
            "title": self.title,
        }


class LatentSpace:
    """``catalog`` explored with ``model`` (default: the model the catalog was indexed with)."""

    def __init__(self, catalog: Catalog, model: str | None = None):
        self.catalog = catalog
        self.model = model or catalog.model
        self.embedder = catalog.embedder(self.model)
        self._ids: list[str] | None = None
        self._vecs: np.ndarray | None = None
        self.embedded_on_the_fly = False

    # -- decoding models -----------------------------------------------------------------------
    @property
    def short_name(self) -> str:
        """The model name with a checkpoint path cut to its last two parts (for picture titles)."""
        family, sep, arg = self.model.partition(":")
        return f"{family}:{'/'.join(arg.replace(chr(92), '/').split('/')[-2:])}" if sep else self.model

    @property
    def can_decode(self) -> bool:
        return hasattr(self.embedder, "decode") and hasattr(self.embedder, "encode")

    def require_decoder(self, what: str):
        if not self.can_decode:
            raise ModelError(
                f"{what} decodes latents, so it needs a VAE model (vae:PATH from `lookalike train vae`); "
                f"model {self.model!r} is an encoder only"
            )
        return self.embedder

    # -- products --------------------------------------------------------------------------------
    def product_image(self, product_id: str) -> Image.Image:
        """The product's first stored image (its thumbnail, which is lossless for small images)."""
        product = self.catalog.get_product(product_id)
        for image_id in product.image_ids:
            try:
                data = self.catalog.thumbnail(image_id)
            except ImageNotFound:
                continue
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                return img.copy()
        raise InvalidRequest(f"product {product_id!r} has no stored image to explore")

    def latents(self, product_ids: list[str]) -> np.ndarray:
        """Raw encoder means of products (n, dim): the coordinates decoding models work in."""
        vae = self.require_decoder("this command")
        return vae.encode([self.product_image(pid) for pid in product_ids])

    def vectors(self) -> tuple[list[str], np.ndarray]:
        """(product ids, L2-normalised vectors) for every product, from the catalog or embedded now."""
        if self._ids is None:
            ids, vecs = self.catalog.product_vectors(self.model)
            if len(ids) == 0:
                ids, vecs = self._embed_all()
                self.embedded_on_the_fly = True
            self._ids, self._vecs = list(ids), np.asarray(vecs, dtype=np.float32)
        return self._ids, self._vecs

    def product_ids(self) -> list[str]:
        """Every indexed product id, without embedding anything."""
        if self._ids is not None:
            return self._ids
        for model in (self.model, self.catalog.model, *self.catalog.stats().get("models", {})):
            ids, _ = self.catalog.product_vectors(model)
            if ids:
                return list(ids)
        raise InvalidRequest("the catalog has no indexed products to explore")

    def _embed_all(self) -> tuple[list[str], np.ndarray]:
        ids = self.product_ids()
        images = []
        with progress_bar(f"embedding catalog with {self.model}", total=len(ids)) as advance:
            for pid in ids:
                images.append(self.product_image(pid))
                advance(1)
        return ids, self.embedder.embed_images(images)

    def nearest(self, points: np.ndarray, k: int = 1, exclude: set[str] | None = None) -> list[list[Match]]:
        """For each raw latent point, the ``k`` products with the closest vectors (cosine, like search)."""
        ids, vecs = self.vectors()
        pts = np.asarray(points, dtype=np.float32).reshape(-1, vecs.shape[1])
        pts = pts / np.maximum(np.linalg.norm(pts, axis=1, keepdims=True), 1e-12)
        scores = pts @ vecs.T
        if exclude:
            mask = np.array([pid in exclude for pid in ids])
            scores[:, mask] = -np.inf
        k = min(k, len(ids))
        top = np.argsort(-scores, axis=1)[:, :k]
        records = self.catalog.get_products({ids[j] for row in top for j in row})
        out = []
        for row, s in zip(top, scores, strict=True):
            matches = []
            for j in row:
                rec = records.get(ids[j])
                matches.append(
                    Match(ids[j], float(s[j]), rec.category if rec else None, rec.title if rec else None)
                )
            out.append(matches)
        return out


def image_array(img: Image.Image, size: int) -> np.ndarray:
    """A PIL image as RGB uint8 (size, size, 3) for contact sheets and strips."""
    return np.asarray(img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))
