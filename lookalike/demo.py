"""`make demo`: index the Fashion-MNIST catalog (once) with the default model, learn its words
(once), show a search by photo and one by words, then serve the web page."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", default="data/demo.db")
    parser.add_argument("--model", default="default")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--no-serve", action="store_true", help="index and search, do not start the server")
    args = parser.parse_args(argv)

    from rich.console import Console

    from lookalike.catalog import Catalog
    from lookalike.datasets.fashion_mnist import load_split
    from lookalike.embedders import resolve_name

    console = Console()
    _set_aside_if_stale(args.db, args.model, console)
    with Catalog.open(args.db) as cat:
        stats = cat.stats()
        if stats["models"].get(args.model, 0) < 70_000:
            console.print(
                f"[bold]indexing the Fashion-MNIST catalog (70,000 products) with {args.model}[/]"
                f" ({resolve_name(args.model)})"
            )
            report = cat.index("fashion-mnist", model=args.model)
            console.print(f"indexed {report.products_indexed} products in {report.elapsed_s:.0f}s")
        else:
            console.print(f"catalog {args.db} already indexed with {args.model}")
        images, labels = load_split("test")
        from collections import Counter

        from PIL import Image

        query = Image.fromarray(images[0]).rotate(15, fillcolor=40).resize((112, 112))
        hits = cat.search(query, k=5, model=args.model)
        console.print("[bold]search: a rotated, enlarged photo of test item fmnist-test-0 (Ankle boot)[/]")
        for i, h in enumerate(hits, 1):
            console.print(f"  {i}. {h.product_id:18s} {h.score:.3f}  {h.category}")
        text_model = _text_model(cat, args.db, console)
        words = "running shoes"
        hits = cat.search_text(words, k=5, text_model=text_model)
        console.print(f"[bold]search with words: {words!r}[/]")
        for i, h in enumerate(hits, 1):
            console.print(f"  {i}. {h.product_id:18s} {h.score:.3f}  {h.category}")
        liked = ["fmnist-test-0", "fmnist-test-2"]  # an ankle boot and a pair of trousers
        hits = cat.recommend(liked, k=10)
        console.print(f"[bold]recommended from liked {', '.join(liked)} (Ankle boot, Trouser)[/]")
        counts = Counter(h.category for h in hits)
        console.print("  " + ", ".join(f"{n} × {c}" for c, n in counts.most_common()))
        console.print("  " + ", ".join(h.product_id for h in hits[:5]) + ", …")
        check = cat.check_authenticity("fmnist-test-0", query)
        console.print(f"[bold]does the rotated photo show fmnist-test-0?[/] {check.verdict}: {check.reason}")
    if args.no_serve:
        return 0
    try:
        from lookalike.api.app import serve
    except ImportError:
        return 0
    import os

    from lookalike.config import Settings

    settings = Settings(text_model=os.environ.get("LOOKALIKE_TEXT_MODEL") or str(text_model.path))
    console.print(f"[bold green]open http://{args.host}:{args.port}/[/] (Ctrl-C to stop)")
    serve(db=args.db, host=args.host, port=args.port, settings=settings)
    return 0


def _text_model(cat, db: str, console):
    """The demo's text model beside its catalog (trained once, on 10,000 products: the catalog has
    ten categories of words), trained again when the catalog's vectors changed."""
    from pathlib import Path

    from lookalike.errors import ModelError
    from lookalike.text import train_text_model

    path = Path(db).with_name(Path(db).stem + "-text.pt")
    if path.is_file():
        try:
            return cat.text_model(path)
        except ModelError as exc:
            console.print(f"[yellow]{exc}[/]: training it again")
    console.print(f"[bold]learning words -> images from the catalog's titles and categories ({path})[/]")
    tm = train_text_model(cat, max_products=10_000, log=console.print)
    tm.recipe["command"] = f"python -m lookalike.demo --db {db}"
    tm.save(path)
    return cat.text_model(path)


def _set_aside_if_stale(db: str, model: str, console) -> None:
    """A demo catalog indexed with earlier weights of the model (an older lookalike) is renamed to
    ``<db>.stale`` so the demo re-indexes instead of failing; nothing is deleted."""
    from pathlib import Path

    from lookalike.catalog import Catalog
    from lookalike.errors import ModelMismatchError

    path = Path(db)
    if not path.is_file():
        return
    with Catalog.open(db) as cat:
        if not cat.stats()["models"].get(model):
            return
        try:
            cat.embedder(model)
        except ModelMismatchError as exc:
            stale = exc
        else:
            return
    aside = path.with_name(path.name + ".stale")
    for p in list(path.parent.glob(path.name + "*")):  # the DB and the files beside it (-wal, .hnsw)
        if not p.name.startswith(aside.name):
            p.rename(p.with_name(p.name.replace(path.name, aside.name, 1)))
    console.print(f"[yellow]{stale}[/]\nmoved the old demo catalog to {aside}; indexing again")


if __name__ == "__main__":
    sys.exit(main())
