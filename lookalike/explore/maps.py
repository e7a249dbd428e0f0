"""2-D maps of a catalog (t-SNE or UMAP of the product vectors): a PNG coloured by category and a
self-contained interactive HTML page (hover a point: thumbnail and product id; no CDN, no network)."""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lookalike.errors import InvalidRequest
from lookalike.explore.space import LatentSpace

MAP_METHODS = ("tsne", "umap")


@dataclass
class CatalogMap:
    method: str
    model: str
    product_ids: list[str]
    coords: np.ndarray  # (n, 2)
    categories: list[str]
    model_label: str = ""


def catalog_map(
    space: LatentSpace, *, method: str = "tsne", limit: int | None = 3000, seed: int = 0
) -> CatalogMap:
    """Project product vectors to 2-D. ``limit`` samples that many products (None: all of them)."""
    if method not in MAP_METHODS:
        raise InvalidRequest(f"unknown map method {method!r} (tsne or umap)")
    ids, vecs = space.vectors()
    if len(ids) < 5:
        raise InvalidRequest(f"a map needs at least 5 products, the catalog has {len(ids)}")
    rng = np.random.default_rng(seed)
    pick = (
        np.sort(rng.choice(len(ids), size=limit, replace=False))
        if limit and limit < len(ids)
        else np.arange(len(ids))
    )
    x = vecs[pick]
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
        coords = TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
    else:
        import umap

        # a seed makes UMAP single-threaded; it says so with a warning, which is expected here
        reducer = umap.UMAP(n_neighbors=min(15, len(x) - 1), random_state=seed, metric="cosine", n_jobs=1)
        coords = reducer.fit_transform(x)
    picked = [ids[i] for i in pick]
    records = space.catalog.get_products(picked)
    cats = [(records[p].category if p in records else None) or "(none)" for p in picked]
    return CatalogMap(
        method, space.model, picked, np.asarray(coords, dtype=np.float32), cats, space.short_name
    )


def _palette(categories: list[str]) -> dict[str, str]:
    import matplotlib

    names = sorted(set(categories))
    cmap = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {c: matplotlib.colors.to_hex(cmap(i % cmap.N)) for i, c in enumerate(names)}


def save_map_png(m: CatalogMap, path: str | Path, *, title: str | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    colours = _palette(m.categories)
    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    cats = np.array(m.categories)
    for c, colour in colours.items():
        sel = cats == c
        ax.scatter(m.coords[sel, 0], m.coords[sel, 1], s=4, c=colour, label=c, alpha=0.8, linewidths=0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or f"{m.method.upper()} of {len(m.product_ids)} products ({m.model_label or m.model})")
    ax.legend(markerscale=3, fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _thumb_b64(space: LatentSpace, product_id: str, size: int) -> str:
    img = space.product_image(product_id)
    img.thumbnail((size, size))
    if img.mode == "RGB":
        r, g, b = img.split()
        if r.tobytes() == g.tobytes() == b.tobytes():
            img = r  # grey product shots: a one-channel PNG is a third of the size
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def save_map_html(space: LatentSpace, m: CatalogMap, path: str | Path, *, thumb_size: int = 56) -> Path:
    """One HTML file, everything inline (data, thumbnails as base64 PNG, script): hover shows the product."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    colours = _palette(m.categories)
    lo, hi = m.coords.min(axis=0), m.coords.max(axis=0)
    norm = (m.coords - lo) / np.maximum(hi - lo, 1e-9)
    points = [
        {
            "x": round(float(x), 4),
            "y": round(float(y), 4),
            "id": pid,
            "c": cat,
            "t": _thumb_b64(space, pid, thumb_size),
        }
        for (x, y), pid, cat in zip(norm, m.product_ids, m.categories, strict=True)
    ]
    title = f"{m.method.upper()} map of {len(points)} products, model {m.model}"
    page = _TEMPLATE.replace("__TITLE__", html.escape(title))
    page = page.replace("__DATA__", json.dumps(points, separators=(",", ":")).replace("</", "<\\/"))
    page = page.replace("__COLOURS__", json.dumps(colours))
    path.write_text(page, encoding="utf-8")
    return path


_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
body{font:14px system-ui,sans-serif;margin:16px;color:#222}
#wrap{position:relative;display:inline-block}
canvas{border:1px solid #ccc;cursor:crosshair}
#tip{position:absolute;pointer-events:none;background:#fff;border:1px solid #888;padding:4px;display:none;
 box-shadow:0 2px 6px rgba(0,0,0,.25);font-size:12px}
#tip img{display:block;width:96px;height:96px;image-rendering:pixelated}
#legend span{display:inline-block;margin-right:12px}
#legend i{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:50%}
</style></head><body>
<h3>__TITLE__</h3>
<div id="legend"></div>
<div id="wrap"><canvas id="map" width="760" height="620"></canvas><div id="tip"></div></div>
<script>
const P = __DATA__;
const COL = __COLOURS__;
const cv = document.getElementById('map'), ctx = cv.getContext('2d'), tip = document.getElementById('tip');
const M = 12, W = cv.width - 2 * M, H = cv.height - 2 * M;
const px = p => [M + p.x * W, M + (1 - p.y) * H];
function draw(hi) {
  ctx.clearRect(0, 0, cv.width, cv.height);
  for (const p of P) { const [x, y] = px(p); ctx.fillStyle = COL[p.c]; ctx.globalAlpha = .75;
    ctx.beginPath(); ctx.arc(x, y, 2.5, 0, 7); ctx.fill(); }
  ctx.globalAlpha = 1;
  if (hi) { const [x, y] = px(hi); ctx.strokeStyle = '#000'; ctx.lineWidth = 2;
    ctx.beginPath(); ctx.arc(x, y, 6, 0, 7); ctx.stroke(); }
}
document.getElementById('legend').innerHTML = Object.entries(COL)
  .map(([c, v]) => `<span><i style="background:${v}"></i>${c.replace(/[&<>]/g, '')}</span>`).join('');
cv.addEventListener('mousemove', e => {
  const r = cv.getBoundingClientRect(), mx = e.clientX - r.left, my = e.clientY - r.top;
  let best = null, bd = 100;
  for (const p of P) {
    const [x, y] = px(p), d = (x - mx) ** 2 + (y - my) ** 2;
    if (d < bd) { bd = d; best = p; }
  }
  draw(best);
  if (!best) { tip.style.display = 'none'; return; }
  tip.innerHTML = '';
  const img = document.createElement('img'); img.src = 'data:image/png;base64,' + best.t;
  const label = document.createElement('div'); label.textContent = best.id + ' \u00b7 ' + best.c;
  tip.append(img, label);
  tip.style.left = (mx + 14) + 'px'; tip.style.top = (my + 14) + 'px'; tip.style.display = 'block';
});
cv.addEventListener('mouseleave', () => { tip.style.display = 'none'; draw(null); });
draw(null);
</script></body></html>
"""
