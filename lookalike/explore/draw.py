"""Small PIL helpers that lay images out in labelled grids (strips, traversal grids, contact sheets)."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

WHITE = (255, 255, 255)
BLACK = (0, 0, 0)
GREY = (110, 110, 110)


def _font():
    return ImageFont.load_default()


def grid(
    rows: Sequence[Sequence[Image.Image | None]],
    *,
    cell: int = 56,
    pad: int = 4,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    captions: Sequence[Sequence[str]] | None = None,
    title: str | None = None,
    label_width: int | None = None,
) -> Image.Image:
    """Lay out rows of images (None leaves a gap) at ``cell`` px, with optional row/column labels and a
    small caption under each image."""
    font = _font()
    n_cols = max((len(r) for r in rows), default=0)
    lw = (
        label_width
        if label_width is not None
        else (8 + 6 * max((len(s) for s in row_labels), default=0) if row_labels else 0)
    )
    cap_h = 12 if captions else 0
    top = (16 if title else 0) + (14 if col_labels else 0)
    width = lw + n_cols * (cell + pad) + pad
    height = top + len(rows) * (cell + cap_h + pad) + pad
    canvas = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, 2), title, fill=BLACK, font=font)
    if col_labels:
        for c, text in enumerate(col_labels):
            draw.text((lw + pad + c * (cell + pad), top - 13), text[: cell // 6], fill=GREY, font=font)
    for r, row in enumerate(rows):
        y = top + pad + r * (cell + cap_h + pad)
        if row_labels:
            draw.text((4, y + cell // 2 - 5), row_labels[r], fill=BLACK, font=font)
        for c, img in enumerate(row):
            x = lw + pad + c * (cell + pad)
            if img is not None:
                canvas.paste(img.convert("RGB").resize((cell, cell), Image.Resampling.BILINEAR), (x, y))
            if captions and c < len(captions[r]) and captions[r][c]:
                draw.text((x, y + cell + 1), captions[r][c][: cell // 6 + 1], fill=GREY, font=font)
    return canvas
