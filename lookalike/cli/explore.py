"""`lookalike explore ...`: latent-space exploration commands over the library in lookalike.explore."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from lookalike.cli.app import explore_app
from lookalike.cli.options import (
    DbOption,
    JsonOption,
    ModelOption,
    console,
    err_console,
    one_of,
    open_catalog,
    writable_dir,
    writable_file,
)
from lookalike.errors import InvalidRequest

OutOption = Annotated[Path, typer.Option("--out", "-o", help="Output folder.")]


def _safe(name: str) -> str:
    """A product id as a file-name part (ids may hold slashes or spaces)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:80]


def _space(cat, model):
    from lookalike.explore import LatentSpace

    return LatentSpace(cat, model)


@explore_app.command()
def interpolate(
    a: Annotated[str, typer.Argument(help="Start product id.")],
    b: Annotated[str, typer.Argument(help="End product id.")],
    steps: Annotated[int, typer.Option(min=2, max=64, help="Points on the path, ends included.")] = 8,
    method: Annotated[
        str, typer.Option(help="linear, spherical or both.", callback=one_of("linear", "spherical", "both"))
    ] = "both",
    db: DbOption = None,
    model: ModelOption = None,
    out: OutOption = Path("explore"),
    json_: JsonOption = False,
) -> None:
    """Decode the latent path from A to B; match each point to the nearest real product (PNG strip + JSON)."""
    from lookalike.explore.interpolate import interpolate as run
    from lookalike.explore.interpolate import save_interpolation

    methods = ["linear", "spherical"] if method == "both" else [method]
    writable_dir(out, "--out")  # before the work, not after it
    with open_catalog(db) as cat:
        space = _space(cat, model)
        results = [run(space, a, b, steps=steps, method=m) for m in methods]
        png, js = save_interpolation(space, results, out / f"interpolate-{_safe(a)}-{_safe(b)}")
    if json_:
        typer.echo(js.read_text())
        return
    for r in results:
        console.print(f"[bold]{r.method}[/]: " + " → ".join(m.product_id for m in r.nearest))
    console.print(f"strip {png}\njson {js}")


@explore_app.command()
def traverse(
    product_id: Annotated[str, typer.Argument(help="The product to traverse around.")],
    dims: Annotated[
        str | None, typer.Option(help="Dimensions to show, e.g. 0,3,7 (default: the most influential).")
    ] = None,
    range_: Annotated[tuple[float, float], typer.Option("--range", help="Values each dimension sweeps.")] = (
        -3.0,
        3.0,
    ),
    steps: Annotated[int, typer.Option(min=2, max=32)] = 9,
    top: Annotated[int, typer.Option(min=1, max=64, help="Without --dims: how many top dimensions.")] = 8,
    db: DbOption = None,
    model: ModelOption = None,
    out: OutOption = Path("explore"),
    json_: JsonOption = False,
) -> None:
    """Vary one latent dimension at a time around a product (PNG grid), dimensions ranked by effect."""
    from lookalike.explore.traverse import save_traversal
    from lookalike.explore.traverse import traverse as run

    dim_list = None
    if dims:
        try:
            dim_list = [int(d) for d in dims.split(",") if d.strip()]
        except ValueError:
            raise InvalidRequest(f"--dims {dims!r} is not a comma-separated list of integers") from None
    writable_dir(out, "--out")  # before the work, not after it
    with open_catalog(db) as cat:
        space = _space(cat, model)
        t = run(space, product_id, dims=dim_list, low=range_[0], high=range_[1], steps=steps, top=top)
        png, js = save_traversal(space, t, out / f"traverse-{_safe(product_id)}")
    if json_:
        typer.echo(js.read_text())
        return
    table = Table(title=f"dimensions around {product_id} (most influential first)")
    for col in ("dim", "effect", "variance", "active", "KL"):
        table.add_column(col, justify="right")
    for r in t.ranks:
        table.add_row(
            f"z{r.dim}",
            f"{r.effect:.4f}",
            f"{r.variance:.3f}",
            "yes" if r.active else "no",
            "—" if r.kl is None else f"{r.kl:.3f}",
        )
    console.print(table)
    console.print(f"grid {png}\njson {js}")


@explore_app.command()
def arithmetic(
    expression: Annotated[
        str, typer.Argument(help='Product ids joined by " + " and " - ", e.g. "A + B - C".')
    ],
    k: Annotated[int, typer.Option("-k", "--k", min=1, max=100, help="Nearest products to return.")] = 5,
    db: DbOption = None,
    model: ModelOption = None,
    out: OutOption = Path("explore"),
    json_: JsonOption = False,
) -> None:
    """Latent arithmetic: decode A + B - C and list the nearest real products."""
    from lookalike.explore.arithmetic import latent_arithmetic, save_arithmetic

    writable_dir(out, "--out")  # before the work, not after it
    with open_catalog(db) as cat:
        space = _space(cat, model)
        r = latent_arithmetic(space, expression, k=k)
        png, js = save_arithmetic(space, r, out / "arithmetic")
    if json_:
        typer.echo(js.read_text())
        return
    for i, m in enumerate(r.nearest, 1):
        console.print(f"{i}. {m.product_id}  {m.score:.4f}  {m.category or ''}")
    console.print(f"picture {png}\njson {js}")


@explore_app.command("map")
def map_(
    method: Annotated[str, typer.Option(help="tsne, umap or both.")] = "tsne",
    limit: Annotated[
        int, typer.Option(min=5, help="Products to place (a random sample of the catalog).")
    ] = 3000,
    db: DbOption = None,
    model: ModelOption = None,
    out: OutOption = Path("explore"),
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """A 2-D map of the catalog coloured by category: PNG plus an interactive HTML page (hover: thumbnail)."""
    from lookalike.explore.maps import catalog_map, save_map_html, save_map_png

    methods = ["tsne", "umap"] if method == "both" else [method]
    writable_dir(out, "--out")  # before the work, not after it
    with open_catalog(db) as cat:
        space = _space(cat, model)
        space.vectors()  # embeds the catalog first when it has no vectors of this model (with a bar)
        for m in methods:
            with err_console.status(f"{m}: projecting the product vectors to 2-D, then drawing"):
                cmap = catalog_map(space, method=m, limit=limit, seed=seed)
                png = save_map_png(cmap, out / f"map-{m}.png")
                page = save_map_html(space, cmap, out / f"map-{m}.html")
            console.print(f"{m}: {len(cmap.product_ids)} products → {png}, {page}")


clusters_app = typer.Typer(
    help="k-means clusters for bulk annotation: `clusters --k N` exports, `clusters import FILE` reads back.",
    invoke_without_command=True,
)
explore_app.add_typer(clusters_app, name="clusters")


@clusters_app.callback()
def clusters(
    ctx: typer.Context,
    k: Annotated[int, typer.Option("-k", "--k", min=2, help="Number of clusters.")] = 12,
    per_sheet: Annotated[int, typer.Option(min=1, help="Products on each contact sheet.")] = 48,
    db: DbOption = None,
    model: ModelOption = None,
    out: OutOption = Path("explore/clusters"),
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Cluster the catalog (k-means on product vectors): clusters.csv plus a contact sheet per cluster."""
    if ctx.invoked_subcommand is not None:
        return
    from lookalike.explore.clusters import cluster_catalog, contact_sheets, export_csv

    writable_dir(out, "--out")  # before the work, not after it
    with open_catalog(db) as cat:
        space = _space(cat, model)
        c = cluster_catalog(space, k, seed=seed)
        csv_path = export_csv(c, out / "clusters.csv")
        sheets = contact_sheets(space, c, out, per_sheet=per_sheet)
    console.print(f"{len(c.product_ids)} products in {k} clusters, sizes {c.sizes()}")
    console.print(
        f"annotate the label column of {csv_path}, then: lookalike explore clusters import {csv_path}"
    )
    console.print(f"contact sheets: {sheets[0].parent}/cluster-*.png")


@clusters_app.command("import")
def clusters_import(
    file: Annotated[Path, typer.Argument(help="The annotated clusters.csv.")],
    attribute: Annotated[
        str, typer.Option(help="Product attribute to write the labels to.")
    ] = "cluster_label",
    propagate: Annotated[
        bool,
        typer.Option(
            "--propagate/--no-propagate", help="Give a cluster's agreed label to its unlabelled rows."
        ),
    ] = True,
    db: DbOption = None,
    json_: JsonOption = False,
) -> None:
    """Write the labels of an annotated cluster CSV back as a product attribute."""
    from lookalike.explore.clusters import import_labels

    with open_catalog(db) as cat:
        r = import_labels(cat, file, attribute=attribute, propagate=propagate)
    if json_:
        typer.echo(json.dumps(r.to_dict(), indent=2))
        return
    console.print(
        f"{r.updated} products labelled ({r.labelled_rows} labelled rows, {r.propagated} by cluster) "
        f"as attribute [bold]{attribute}[/]"
    )
    if r.unknown_products:
        console.print(
            f"[yellow]{len(r.unknown_products)} unknown product id(s)[/]: "
            + ", ".join(r.unknown_products[:10])
        )


@explore_app.command()
def impute(
    attribute: Annotated[str, typer.Argument(help="Attribute to predict (an attribute key, or category).")],
    k: Annotated[int, typer.Option("-k", "--k", min=1, max=100, help="Neighbours that vote.")] = 5,
    holdout: Annotated[
        float, typer.Option(min=0.0, max=0.95, help="Share of labelled products held out.")
    ] = 0.2,
    write: Annotated[bool, typer.Option("--write", help="Store predictions as product attributes.")] = False,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="CSV of predictions.")] = None,
    db: DbOption = None,
    model: ModelOption = None,
    json_: JsonOption = False,
) -> None:
    """Predict a missing attribute from the nearest neighbours' vote, with held-out accuracy."""
    from lookalike.explore.impute import impute as run
    from lookalike.explore.impute import save_predictions

    writable_file(out, "--out")
    with open_catalog(db) as cat:
        space = _space(cat, model)
        r = run(space, attribute, k=k, holdout=holdout, write=write)
    if out:
        save_predictions(r, out)
    if json_:
        typer.echo(json.dumps(r.to_dict(with_predictions=out is None), indent=2))
        return
    acc = "n/a" if r.holdout_accuracy is None else f"{r.holdout_accuracy:.3f}"
    base = "n/a" if r.majority_baseline is None else f"{r.majority_baseline:.3f}"
    console.print(
        f"[bold]{attribute}[/] with {r.model}: held-out accuracy {acc} on {r.holdout} products "
        f"(majority guess {base}); {r.labelled} labelled, {r.missing} missing"
    )
    for p in r.predictions[:10]:
        console.print(f"  {p.product_id}: {p.value} ({p.confidence:.0%})")
    if r.written:
        console.print(f"wrote {r.written} predictions")
    if out:
        console.print(f"predictions {out}")
