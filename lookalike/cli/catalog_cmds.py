"""Catalog commands: index, search, tag, similar, recommend, delete, stats, check-index."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from lookalike.cli.app import app
from lookalike.cli.options import (
    DbOption,
    FilterOption,
    JsonOption,
    KOption,
    ModelOption,
    RerankOption,
    TextModelOption,
    console,
    err_console,
    image_input,
    one_of,
    open_catalog,
    parse_filters,
    print_hits,
    writable_file,
)
from lookalike.errors import InvalidRequest, SourceError
from lookalike.recommend import METHODS


@app.command()
def index(
    source: Annotated[
        str, typer.Argument(help="Folder of images, .csv/.jsonl table, or fashion-mnist[:train|test].")
    ],
    db: DbOption = None,
    model: ModelOption = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Index only the first N products.")] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            min=1, help="Images per batch (one transaction each); with --async, products per batch."
        ),
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option(
            help="Where to write the JSON report of the run (not with --async: see `lookalike job`)."
        ),
    ] = None,
    async_: Annotated[
        bool, typer.Option("--async", help="Submit as a background job to the workers.")
    ] = False,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="Exit with status 2 when any image or product was skipped (the good ones are still stored).",
        ),
    ] = False,
    replace_images: Annotated[
        bool,
        typer.Option(
            "--replace-images",
            help="Make each product's images exactly those the source lists now (a replaced photo "
            "replaces the stored one). Default: add to the images a product has.",
        ),
    ] = False,
) -> None:
    """Index a catalog source: embed each product's images and store them (idempotent).

    Re-indexing adds: a product keeps its images and gains new ones; --replace-images swaps them.
    A source without any product (an empty folder, a table without rows) is an error.
    """
    from lookalike.sources import open_source

    if async_ and report is not None:
        raise InvalidRequest(
            "--report does not go with --async: the job's report is `lookalike job ID` (--json for all of it)"
        )
    writable_file(report, "--report")  # before the indexing, not after it
    src = open_source(source)
    try:
        total = len(src)  # a folder is scanned here, which also finds its files that are not images
    except TypeError:
        total = None
    _warn_skipped(src)
    if total == 0:
        raise SourceError(f"source {src.name} has no products: nothing to index")
    if async_ and strict:
        raise InvalidRequest("--strict does not go with --async: `lookalike job ID` lists a job's bad items")
    if async_ and replace_images:
        raise InvalidRequest("--replace-images does not go with --async yet: index in the foreground")
    if async_:
        from lookalike.config import get_settings
        from lookalike.jobs import submit_index_job

        job = submit_index_job(str(source), db=db, model=model, limit=limit, batch_products=batch_size)
        if get_settings().redis_url:
            console.print(f"submitted index job [bold]{job['id']}[/] ({job['state']})")
        else:  # no broker: the jobs module ran it here, to the end
            console.print(
                f"index job [bold]{job['id']}[/] ran in this process ({job['state']}): LOOKALIKE_REDIS_URL "
                "is not set, so there are no workers to hand it to"
            )
        return
    with open_catalog(db, create=True) as cat:
        stored = [0]  # products of this run in finished batches (no catalog call after Ctrl-C)
        try:
            r = cat.index(
                src,
                model=model,
                limit=limit,
                batch_size=batch_size,
                report_path=report,
                replace_images=replace_images,
                on_batch=lambda part: stored.__setitem__(0, stored[0] + part.products_indexed),
            )
        except KeyboardInterrupt:
            err_console.print(
                f"interrupted: {stored[0]:,} products of this run are stored (the batches that finished); "
                "run the same command again to index the rest: unchanged images are not embedded twice"
            )
            raise typer.Exit(130) from None
        console.print(
            f"[bold green]indexed[/] {r.products_indexed}/{r.products_seen} products from {r.source} "
            f"with [bold]{r.model}[/] in {r.elapsed_s:.1f}s: {r.images_embedded} images embedded, "
            f"{r.images_reused} unchanged, {r.images_failed} bad image(s), "
            f"{r.products_failed} product(s) skipped"
            + (f", {r.images_unlinked} image(s) no longer listed removed" if r.images_unlinked else "")
        )
        for f in r.failures[:10]:
            err_console.print(f"[yellow]skipped[/] {escape(f['item'])}: {escape(f['reason'])}")
        if len(r.failures) > 10:
            err_console.print(f"... and {len(r.failures) - 10} more")
        console.print(f"report: {r.report_path}")
    if strict and (r.images_failed or r.products_failed):
        raise typer.Exit(2)


def _warn_skipped(src) -> None:
    """A folder's files that are not products (.heic, .txt ...): say how many, and which."""
    from lookalike.sources import describe_skipped

    skipped = getattr(src, "skipped", None)
    if skipped:
        shown = ", ".join(skipped[:5]) + (f", ... ({len(skipped) - 5} more)" if len(skipped) > 5 else "")
        err_console.print(f"[yellow]warning:[/] skipped {escape(describe_skipped(skipped))}: {escape(shown)}")


@app.command()
def search(
    image: Annotated[
        str | None,
        typer.Argument(
            help="Image path, http(s) URL or - (standard input); or give --text.", show_default=False
        ),
    ] = None,
    text: Annotated[
        str | None,
        typer.Option(
            help='Search with words instead of a photo ("ankle boots"): needs a text model trained '
            "on this catalog (`lookalike train text`).",
            show_default=False,
        ),
    ] = None,
    text_model: TextModelOption = None,
    db: DbOption = None,
    model: ModelOption = None,
    k: KOption = 10,
    filter: FilterOption = None,
    json_: JsonOption = False,
    rerank: RerankOption = 0,
    verifier: Annotated[
        str | None,
        typer.Option(
            help="With --rerank: 'default' (shipped), 'none' (alignment only) or a checkpoint from "
            "`lookalike train verifier` \\[default: the LOOKALIKE_VERIFIER setting, else 'default']",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Find the products that look like an image, or that match words (--text)."""
    if (image is None) == (text is None):
        raise InvalidRequest(
            "give an image to search with, or words with --text (not both)"
            if image is not None
            else 'give an image path or URL to search with, or words with --text "ankle boots"'
        )
    if verifier is not None and not rerank:
        raise InvalidRequest("--verifier only acts when re-ranking: add --rerank N (for example --rerank 20)")
    if text is not None:
        if rerank or model:
            raise InvalidRequest(
                "--rerank and --model do not apply to --text (the text model maps into one model's space)"
            )
        with open_catalog(db) as cat:
            tm = cat.text_model(text_model)
            hits = cat.search_text(text, k=k, filters=parse_filters(filter), text_model=tm)
            print_hits(text, tm.image_model, hits, json_)
            note_empty_filters(cat, hits, filter)
        return
    if text_model is not None:
        raise InvalidRequest("--text-model only acts with --text")
    with open_catalog(db) as cat:
        model = model or cat.model
        hits = cat.search(
            image_input(image),
            k=k,
            filters=parse_filters(filter),
            model=model,
            rerank=rerank,
            verifier=verifier,
        )
        print_hits("<stdin>" if image == "-" else image, model, hits, json_)
        note_empty_filters(cat, hits, filter)
        warn_incomplete(cat, model)


def note_empty_filters(cat, hits, items: list[str] | None) -> None:
    """On stderr, when filters left nothing: which filter no product matches (a misspelt key or
    value, or another case: filters are exact)."""
    filters = parse_filters(items)
    if hits or not filters:
        return
    for key, value in filters.items():
        if not len(cat.store.matching_product_pks({key: value})):
            what = f"category {value!r}" if key == "category" else f"{key}={value!r}"
            hint = ""
            if key == "category":
                known = list(cat.store.categories())
                hint = (
                    f" (categories: {', '.join(known[:12])}{', …' if len(known) > 12 else ''})"
                    if known
                    else ""
                )
            note = f"no product has {what}{hint}; filters are exact, case included"
            err_console.print(f"[yellow]note: {escape(note)}[/]")


def warn_incomplete(cat, model: str) -> None:
    """On stderr: images the model has no vector for cannot be found with it (a catalog indexed
    again with another model); the results stand, the user learns why a product may be missing."""
    missing, images = cat.missing_vectors(model), cat.store.counts()["images"]
    if missing:
        err_console.print(
            f"[yellow]note: model {escape(model)!r} has no vectors for {missing} of {images} images; "
            f"those cannot be found with it (`lookalike index SOURCE -m {escape(model)}` embeds them)[/]"
        )


@app.command()
def tag(
    image: Annotated[str, typer.Argument(help="Image path, http(s) URL or - (standard input).")],
    text_model: TextModelOption = None,
    db: DbOption = None,
    k: Annotated[int, typer.Option("-k", "--k", min=1, max=1000, help="How many tags to show.")] = 5,
    json_: JsonOption = False,
) -> None:
    """Suggest tags for a photo: the catalog's categories and attribute values nearest to it."""
    with open_catalog(db) as cat:
        tm = cat.text_model(text_model)
        tags = cat.tag(image_input(image), k=k, text_model=tm)
    image = "<stdin>" if image == "-" else image
    if json_:
        doc = {"query": image, "model": tm.image_model, "tags": [t.to_dict() for t in tags]}
        typer.echo(json.dumps(doc, indent=2))
        return
    table = Table(title=f"{image}  ·  tags from {tm.path or 'the text model'}")
    for col in ("#", "tag", "kind", "score"):
        table.add_column(col, justify="right" if col in {"#", "score"} else "left")
    for i, t in enumerate(tags, 1):
        table.add_row(str(i), t.tag, t.kind, f"{t.score:.4f}")
    console.print(table)


@app.command()
def similar(
    product_id: Annotated[str, typer.Argument(help="A product id in the catalog.")],
    db: DbOption = None,
    model: ModelOption = None,
    k: KOption = 10,
    filter: FilterOption = None,
    json_: JsonOption = False,
) -> None:
    """Find the products that look like a product of the catalog."""
    with open_catalog(db) as cat:
        model = model or cat.model
        hits = cat.similar(product_id, k=k, filters=parse_filters(filter), model=model)
        print_hits(product_id, model, hits, json_)
        note_empty_filters(cat, hits, filter)


@app.command()
def recommend(
    liked: Annotated[list[str], typer.Argument(help="Products the shopper liked (one or more ids).")],
    disliked: Annotated[
        list[str] | None,
        typer.Option("--not", help="A product to steer away from (repeatable)."),
    ] = None,
    exclude: Annotated[
        list[str] | None,
        typer.Option("--exclude", help="A product never to recommend, e.g. bought already (repeatable)."),
    ] = None,
    db: DbOption = None,
    model: ModelOption = None,
    k: KOption = 10,
    filter: FilterOption = None,
    method: Annotated[
        str,
        typer.Option(
            callback=one_of(*METHODS),
            help="balanced: every liked product gets its share; nearest: the most alike first; "
            "centroid: products like all of them at once.",
        ),
    ] = "balanced",
    diversity: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="0: the most alike first; up to 1: fewer near-copies."),
    ] = 0.0,
    json_: JsonOption = False,
) -> None:
    """Recommend products that look like the liked ones (and unlike --not ones).

    Example: lookalike recommend fmnist-test-0 fmnist-test-2 --not fmnist-test-9 -k 5
    """
    with open_catalog(db) as cat:
        model = model or cat.model
        hits = cat.recommend(
            liked,
            k=k,
            disliked=disliked or [],
            exclude=exclude or [],
            filters=parse_filters(filter),
            method=method,
            diversity=diversity,
            model=model,
        )
        print_hits("liked: " + ", ".join(dict.fromkeys(liked)), model, hits, json_)
        if diversity and not json_:
            console.print(f"[dim]ordered for variety (diversity {diversity}): scores are not in order[/]")
        note_empty_filters(cat, hits, filter)


@app.command()
def delete(
    product_ids: Annotated[list[str], typer.Argument(help="The products to delete (one or more ids).")],
    db: DbOption = None,
    json_: JsonOption = False,
) -> None:
    """Delete products (their images go too unless another product uses them). Every id is checked
    first: with one unknown id, nothing is deleted."""
    from lookalike.errors import ProductNotFound

    ids = list(dict.fromkeys(product_ids))
    with open_catalog(db) as cat:
        missing = [p for p in ids if p not in cat.get_products(ids)]
        if missing:
            if len(missing) == 1:
                raise ProductNotFound(missing[0])
            raise InvalidRequest(
                f"{len(missing)} products not found, nothing deleted: {', '.join(missing[:10])}"
            )
        for product_id in ids:
            cat.delete(product_id)
    if json_:
        typer.echo(json.dumps({"deleted": ids}))
    else:
        console.print(f"deleted {', '.join(ids)}")


@app.command()
def stats(db: DbOption = None, json_: JsonOption = False) -> None:
    """Show what the catalog holds."""
    with open_catalog(db) as cat:
        s = cat.stats()
    if json_:
        typer.echo(json.dumps(s, indent=2))
        return
    console.print(f"[bold]{s['db']}[/] (schema v{s['schema_version']}, model {s['model']})")
    console.print(
        f"{s['products']} products, {s['images']} images, {s['links']} product-image links, "
        f"{s['embeddings']} embeddings"
    )
    for m, n in s["models"].items():
        missing = s["images"] - n
        note = (
            f" [yellow]({missing} image{'s' if missing != 1 else ''} without one: "
            f"`lookalike index SOURCE -m {escape(m)}` embeds them)[/]"
            if missing > 0
            else ""
        )
        console.print(f"  model {escape(m)}: {n} vectors{note}")
    for c, n in s["categories"].items():
        console.print(f"  {escape(c)}: {n}")
    uncategorised = s["products"] - sum(s["categories"].values())
    if uncategorised > 0:
        console.print(f"  (no category): {uncategorised}")


@app.command("check-index")
def check_index(
    db: DbOption = None,
    model: ModelOption = None,
    samples: Annotated[int, typer.Option(help="Stored vectors used as queries.", min=1)] = 200,
    k: Annotated[int, typer.Option("-k", "--k", min=1, max=1000, help="Neighbours compared per query.")] = 10,
    json_: JsonOption = False,
) -> None:
    """Measure the search index's recall@k against exact search on this catalog's own vectors."""
    with open_catalog(db) as cat:
        r = cat.check_index(model, samples=samples, k=k)
    if json_:
        typer.echo(json.dumps(r, indent=2))
        return
    recall = r[f"recall@{r['k']}"]
    console.print(
        f"{r['index']} index over {r['vectors']:,} vectors of {r['model']}: "
        f"[bold]recall@{r['k']} {recall:.3f}[/] against exact search ({r['samples']} stored vectors as "
        f"queries), p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms"
    )
    if recall < 0.95 and r["index"] in ("faiss", "usearch"):
        console.print(
            "The HNSW graph misses neighbours of these embeddings. Try the graph-free index: "
            "LOOKALIKE_ANN=pqscan (docs/scale-out.md)."
        )
