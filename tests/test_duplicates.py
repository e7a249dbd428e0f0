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


def _bag(colour: str, size: int = 160) -> Image.Image:
    """A product shot: a bag of one cut on white, in ``colour`` (a grey hash cannot tell colours)."""
    from PIL import ImageDraw

    img = Image.new("RGB", (size, size), "white")
    d = ImageDraw.Draw(img)
    d.rounded_rectangle((30, 55, 130, 140), radius=12, fill=colour)
    d.arc((55, 20, 105, 80), 180, 360, fill=colour, width=8)
    return img


def test_colour_variants_are_not_duplicates_and_groups_are_by_product(tmp_path):
    red, blue = _bag((200, 30, 30)), _bag((30, 60, 200))
    listings = [
        SourceProduct("bag-red", [red]),
        SourceProduct("bag-blue", [blue]),  # same cut, other colour: a variant, not a copy
        SourceProduct("bag-red-xl", [red]),  # lists the very same photo (a shared stored image)
        SourceProduct("reseller-red", [_jpeg(red.resize((120, 120)), 75)]),  # a re-encoded copy
    ]
    with Catalog.open(str(tmp_path / "c.db")) as cat:
        cat.index(ListSource(listings), model="pixels")
        # one group of the red listings (shared photo and copy linked through bag-red), blue alone
        groups = find_duplicates(cat, max_distance=6)
        assert [g.product_ids for g in groups] == [["bag-red", "bag-red-xl", "reseller-red"]]
        assert len(groups[0].image_ids) == 2 and groups[0].max_distance <= 6
        red_copies = find_copies(cat, _jpeg(red.resize((200, 200)), 60))
        assert {tuple(c.product_ids) for c in red_copies} <= {("bag-red", "bag-red-xl"), ("reseller-red",)}
        assert red_copies and all("bag-blue" not in c.product_ids for c in red_copies)
        blue_copies = find_copies(cat, _jpeg(blue, 80))
        assert [c.product_ids for c in blue_copies] == [["bag-blue"]]
