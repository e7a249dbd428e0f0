"""Perceptual-hash duplicates: re-encoded / resized copies group together, different items do not."""

from __future__ import annotations

import io

from PIL import Image, ImageEnhance

from lookalike.catalog import Catalog
from lookalike.duplicates import find_copies, find_duplicates
from lookalike.sources import ListSource, SourceProduct


def _jpeg(img: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    img.convert("RGB").save(out, "JPEG", quality=quality)
    return out.getvalue()


def test_duplicate_listings_and_copies(db_url, fmnist_test):
    images, _ = fmnist_test
    base = [Image.fromarray(images[i]).resize((112, 112)) for i in range(6)]
    listings = [SourceProduct(f"shop-{i}", [base[i]]) for i in range(6)]
    # a reseller relists item 2 with a recompressed, brightened, resized copy of the photo
    copy = ImageEnhance.Brightness(base[2].resize((90, 90))).enhance(1.1)
    listings.append(SourceProduct("reseller-2", [_jpeg(copy, 70)]))
    cat = Catalog.open(db_url)
    cat.index(ListSource(listings), model="pixels")
    groups = find_duplicates(cat, max_distance=6)
    assert [g.product_ids for g in groups] == [["reseller-2", "shop-2"]]
    found = find_copies(cat, _jpeg(base[4].rotate(0).resize((200, 200)), 60))
    assert found and found[0].product_ids == ["shop-4"] and found[0].distance <= 6
    assert find_copies(cat, Image.new("RGB", (50, 50), "white"), max_distance=2) == []
    cat.close()
