"""Write an evaluation as Markdown + JSON, and a PNG of the top-k results with failures highlighted."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from lookalike.evaluation.protocol import EvalResult, Gallery, QuerySet


def markdown_table(result: EvalResult) -> str:
    """One row per (embedder, subset): instance R@K + mAP@R, then class R@1 + mAP@R."""
    ks = result.ks
    head = ["model", "subset", "queries"] + [f"R@{k}" for k in ks] + ["mAP@R", "class R@1", "class mAP@R"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, subsets in result.results.items():
        for subset in ("clean", "full"):
            if subset not in subsets:
                continue
            r = subsets[subset]
            inst, cls = r.get("instance"), r.get("class")
            n = result.n_clean if subset == "clean" else result.n_queries
            cells = [f"`{name}`", subset, str(n)]
            cells += [f"{inst[f'R@{k}']:.3f}" if inst else "–" for k in ks]
            cells.append(f"{inst['mAP@R']:.3f}" if inst else "–")
            cells.append(f"{cls['R@1']:.3f}" if cls else "–")
            cells.append(f"{cls['mAP@R']:.3f}" if cls else "–")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(
    result: EvalResult,
    out_dir: str | Path,
    queries: QuerySet,
    gallery: Gallery,
    *,
    title: str = "Retrieval evaluation",
    command: str = "",
    n_examples: int = 8,
    k: int = 5,
    seed: int = 0,
) -> dict[str, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = result.protocol
    paths = {
        "json": out_dir / f"{stem}.json",
        "md": out_dir / f"{stem}.md",
        "png": out_dir / f"{stem}-topk.png",
    }
    payload = result.to_dict() | {"command": command, "queries": queries.name, "gallery": gallery.name}
    paths["json"].write_text(json.dumps(payload, indent=2))
    topk_png(result, queries, gallery, paths["png"], n_examples=n_examples, k=k, seed=seed)
    md = [
        f"# {title}",
        "",
        f"Protocol `{result.protocol}`: {result.n_queries} queries ({queries.name}; "
        f"{result.n_clean} in the clean "
        f"subset) against {result.n_gallery} gallery images ({gallery.name}).",
        "",
        markdown_table(result),
        "",
        "Instance level: the query's own product must be found; class level: any product of its category.",
        "",
        f"![top-{k} results]({paths['png'].name})",
        "",
        "Green: the query's own product; orange: same category; red: wrong category.",
    ]
    if command:
        md += ["", f"Command: `{command}`"]
    paths["md"].write_text("\n".join(md) + "\n")
    return paths


def topk_png(
    result: EvalResult,
    queries: QuerySet,
    gallery: Gallery,
    path: Path,
    *,
    n_examples: int = 8,
    k: int = 5,
    seed: int = 0,
    tile: int = 64,
    picks: Sequence[int] | None = None,
) -> Path:
    """For sampled queries (or the query numbers ``picks``): the query, then each embedder's top-k,
    bordered by correctness (green: the product, orange: its category, red: neither)."""
    names = list(result.neighbours)
    if picks is None:
        rng = np.random.default_rng(seed)
        picks = np.sort(rng.choice(len(queries), size=min(n_examples, len(queries)), replace=False))
    label_w = 110
    rows = len(picks) * len(names)
    sheet = Image.new("RGB", (label_w + tile * (k + 1) + 8, rows * (tile + 4) + 4), "white")
    draw = ImageDraw.Draw(sheet)
    y = 4
    for qi in picks:
        q_img = queries.image(int(qi)).convert("RGB").resize((tile, tile))
        for name in names:
            draw.text((4, y + tile // 2 - 6), name[-16:], fill="black")
            sheet.paste(q_img, (label_w, y))
            for j, g in enumerate(result.neighbours[name][qi][:k]):
                g_img = (
                    gallery.images[int(g)]
                    .convert("RGB")
                    .resize((tile - 6, tile - 6), Image.Resampling.NEAREST)
                )
                if gallery.ids[g] == queries.ids[qi]:
                    colour = (20, 170, 20)
                elif queries.classes is not None and gallery.classes[g] == queries.classes[qi]:
                    colour = (235, 150, 0)
                else:
                    colour = (220, 20, 20)
                x = label_w + tile * (j + 1) + 8
                draw.rectangle([x, y, x + tile - 1, y + tile - 1], fill=colour)
                sheet.paste(g_img, (x + 3, y + 3))
            y += tile + 4
    sheet.save(path)
    return path


def localizer_png(
    embedder, queries: QuerySet, gallery_image, path: Path, n: int = 6, seed: int = 0
) -> Path | None:
    """For ``n`` sampled street photos: the photo with the localizer's box drawn on it (yellow: its
    first guess, red: after the refiner's passes, when the model has a refiner), the crop the model
    embeds, and the product's catalog image (``gallery_image(product_id)``). None when the embedder
    has no localizer."""
    import math

    from lookalike.embedders._localizer import crop_items, find_items, predict_boxes

    localizer = getattr(embedder, "localizer", None)
    if localizer is None:
        return None
    refiner = getattr(embedder, "refiner", None)
    pick = np.random.default_rng(seed).choice(len(queries), size=min(n, len(queries)), replace=False)
    get = queries.images if callable(queries.images) else queries.images.__getitem__
    photos = [get(int(i)) for i in pick]
    first = predict_boxes(localizer, photos)
    boxes = find_items(localizer, photos, refiner, **getattr(embedder, "refine", {}))
    crops = crop_items(photos, boxes, 28)
    cell = 120
    sheet = Image.new("RGB", (3 * cell + 20, len(pick) * cell), "white")
    for row, (photo, box0, box, crop, i) in enumerate(zip(photos, first, boxes, crops, pick, strict=True)):
        f = (cell - 8) / max(photo.size)
        shown = photo.convert("RGB").resize((round(photo.width * f), round(photo.height * f)))
        draw = ImageDraw.Draw(shown)
        drawn = (
            [(box0, (255, 210, 0), 1), (box, (255, 40, 40), 2)]
            if refiner is not None
            else [(box, (255, 40, 40), 2)]
        )
        for b, colour, width in drawn:
            cx, cy, side, angle = b[0] * f, b[1] * f, b[2] * f, math.radians(b[3])
            c, s = math.cos(angle), math.sin(angle)
            corners = [(-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5)]
            pts = [(cx + side * (c * u + s * v), cy + side * (-s * u + c * v)) for u, v in corners]
            draw.line(pts + pts[:1], fill=colour, width=width)
        y = row * cell + 4
        sheet.paste(shown, (4, y))
        sheet.paste(
            crop.convert("RGB").resize((cell - 8, cell - 8), Image.Resampling.NEAREST), (cell + 14, y)
        )
        shop = gallery_image(str(queries.ids[int(i)])).convert("RGB")
        sheet.paste(shop.resize((cell - 8, cell - 8), Image.Resampling.NEAREST), (2 * cell + 16, y))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path
