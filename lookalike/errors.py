"""Exceptions raised by the library. Only the CLI and API turn them into exit codes / HTTP statuses."""

from __future__ import annotations


class LookalikeError(Exception):
    """Base class for every error lookalike raises on purpose."""

    #: short machine-readable code used by the HTTP API
    code: str = "error"


class ImageError(LookalikeError):
    """An image could not be loaded: names the item and the reason."""

    code = "bad_image"

    def __init__(self, item: str, reason: str, *, kind: str = "invalid"):
        self.item = item
        self.reason = reason
        #: one of: empty, truncated, not_image, unsupported_format, too_many_pixels,
        #: too_large, fetch_failed, timeout, http_status, not_image_content, ssrf, invalid,
        #: missing, not_a_file, unreadable
        self.kind = kind
        super().__init__(f"{item}: {reason}")


class TooLargeError(ImageError):
    """Byte or pixel limit exceeded."""

    code = "too_large"


class UnsupportedFormatError(ImageError):
    code = "unsupported_format"


class URLNotAllowedError(ImageError):
    """The SSRF guard refused a URL."""

    code = "url_not_allowed"


class FetchError(ImageError):
    """Downloading an image URL failed (timeout, HTTP status, HTML instead of image)."""

    code = "fetch_failed"


class NotFoundError(LookalikeError):
    code = "not_found"


class ProductNotFound(NotFoundError):
    def __init__(self, product_id: str):
        self.product_id = product_id
        super().__init__(f"product {product_id!r} not found")


class ImageNotFound(NotFoundError):
    def __init__(self, image_id: int | str):
        self.image_id = image_id
        super().__init__(f"image {image_id!r} not found")


class CatalogNotFound(NotFoundError):
    """A command that only reads was pointed at a SQLite catalog that does not exist (a typo in
    ``--db`` must not create an empty catalog and report "no matches")."""

    def __init__(self, path: str):
        self.path = path
        super().__init__(
            f"no catalog at {path}: index into it first (lookalike index SOURCE --db {path}), "
            "or check --db / LOOKALIKE_DB"
        )


class ModelError(LookalikeError):
    """Unknown embedder name, unreadable checkpoint, or a model used for something it cannot do."""

    code = "model_error"


class ModelMismatchError(ModelError):
    """The catalog was indexed with another model than the one asked for."""

    code = "model_mismatch"


class SourceError(LookalikeError):
    """A catalog source (folder, CSV, JSONL, dataset) cannot be read."""

    code = "bad_source"


class StoreError(LookalikeError):
    """The database is unreachable, or its schema is newer than this code."""

    code = "store_unavailable"


class ImagesGone(StoreError):
    """A write names images that another writer deleted meanwhile; nothing was written."""

    def __init__(self, shas: set[str]):
        self.shas = set(shas)
        super().__init__(f"{len(self.shas)} image(s) were deleted by another write meanwhile")


class Interrupted(LookalikeError):
    """A long run stopped at Ctrl-C after saving its state; the message says where and how to go on."""

    code = "interrupted"


class InvalidRequest(LookalikeError):
    """A parameter is malformed (bad filter, k out of range, ...)."""

    code = "invalid_request"
