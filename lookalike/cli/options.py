"""Options shared by several commands, and helpers to open the catalog and print results."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from lookalike.errors import InvalidRequest, StoreError


def _console(stderr: bool = False) -> Console:
    """Rich output; into a pipe or file (not a terminal) lines are not folded at 80 columns, so
    that summaries, paths and tables stay one line each for grep, cut and copy-paste."""
    import sys

    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(stderr=stderr)
    return Console(stderr=stderr, width=100_000, soft_wrap=True)


console = _console()
err_console = _console(stderr=True)

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db", envvar="LOOKALIKE_DB", help="SQLite file or postgresql:// URL (default: user data dir)."
    ),
]
ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model", "-m", help="Embedder: default, pixels, trained:PATH, vae:PATH, torchvision:NAME."
    ),
]
KOption = Annotated[int, typer.Option("-k", "--k", min=1, max=1000, help="How many products to return.")]
FilterOption = Annotated[
    list[str] | None,
    typer.Option(
        "--filter", "-f", help="Only products with key=value (category=Bag, or any attribute). Repeatable."
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]
RerankOption = Annotated[
    int,
    typer.Option(
        min=0,
        max=1000,
        help="Re-rank with the photo: alignment screens the first 3×N products and the learned "
        "verifier checks the best N (0: off); for customer photos 100-300 finds the exact product "
        "first far more often.",
    ),
]
TextModelOption = Annotated[
    str | None,
    typer.Option(
        help="Text model from `lookalike train text` \\[default: the LOOKALIKE_TEXT_MODEL setting]",
        show_default=False,
    ),
]


def index_hint(data: str) -> str:
    """The source to name in a "use it: lookalike index ..." hint after training on ``data``: the
    whole demo catalog for Fashion-MNIST, else the training source itself (shell-quoted)."""
    import shlex

    return "fashion-mnist" if data.startswith("fashion-mnist") else shlex.quote(data)


def os_error_message(exc: OSError) -> str:
    """``PATH: reason`` for an OSError (both paths for a rename or copy), else its text."""
    reason = exc.strerror or str(exc)
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    return f"{' -> '.join(paths)}: {reason}" if paths else reason


def writable_file(path: Path | None, option: str) -> None:
    """Fail now, before any work, when ``path`` cannot be written (a folder, a read-only place...).
    Creates the missing parent folders, as writing it later would."""
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise InvalidRequest(f"{option} {path}: is a folder, not a file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        existed = path.exists()
        with open(path, "a"):
            pass
        if not existed:
            path.unlink()
    except OSError as exc:
        raise InvalidRequest(f"{option} {path}: cannot write there ({_reason(exc, path)})") from None


def writable_dir(path: Path, option: str) -> None:
    """Fail now, before any work, when the output folder ``path`` cannot be created or written to.
    Folders it creates are removed again at exit if nothing was written into them (a command that
    failed leaves no empty output folder behind)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InvalidRequest(f"{option} {path}: is a file, not a folder")
    missing = [p for p in (path, *path.absolute().parents) if not p.exists()]
    if missing:
        import atexit

        atexit.register(_remove_if_empty, missing)  # deepest first
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidRequest(f"{option} {path}: cannot create the folder ({_reason(exc, path)})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise InvalidRequest(f"{option} {path}: the folder is not writable")


def _remove_if_empty(folders: list[Path]) -> None:
    for folder in folders:
        try:
            folder.rmdir()  # only an empty folder goes
        except OSError:
            return


def _reason(exc: OSError, path: Path) -> str:
    """The reason, naming the culprit when it is a parent of ``path`` rather than ``path`` itself."""
    reason = exc.strerror or str(exc)
    if exc.filename is not None and str(exc.filename) != str(path):
        return f"{exc.filename}: {reason}"
    return reason


def open_catalog(db: str | None, *, create: bool = False):
    """The catalog at ``db``. Only ``index`` and ``serve`` create one: for the other commands a
    mistyped --db is an error, not a new empty catalog that answers "no matches"."""
    from lookalike.catalog import Catalog
    from lookalike.config import get_settings

    settings = get_settings()
    if db is None and not settings.db:  # the default catalog lives in the data folder
        try:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"data folder {settings.data_dir} (LOOKALIKE_DATA_DIR) cannot be created: "
                f"{_reason(exc, settings.data_dir)}"
            ) from None
    return Catalog.open(db, create=create)


def parse_filters(items: list[str] | None) -> dict[str, str] | None:
    if not items:
        return None
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidRequest(f"filter {item!r} is not key=value")
        out[key.strip()] = value.strip()
    return out


def print_hits(query: str, model: str, hits, as_json: bool) -> None:
    if as_json:
        doc = {"query": query, "model": model, "results": [h.to_dict() for h in hits]}
        typer.echo(json.dumps(doc, indent=2))
        return
    table = Table(title=f"{query}  ·  model {model}")
    aligned = any(h.alignment is not None for h in hits)
    verified = any(getattr(h, "verifier", None) is not None for h in hits)
    extra = (("alignment",) if aligned else ()) + (("verifier",) if verified else ())
    cols = ("#", "product", "score", *extra, "category", "title", "image")
    for col in cols:
        numeric = col in {"#", "score", "alignment", "verifier", "image"}
        table.add_column(col, justify="right" if numeric else "left")
    for i, h in enumerate(hits, 1):
        cells = [str(i), h.product_id, f"{h.score:.4f}"]
        if aligned:
            cells.append("" if h.alignment is None else f"{h.alignment:.4f}")
        if verified:
            cells.append("" if h.verifier is None else f"{h.verifier:+.2f}")
        table.add_row(*cells, h.category or "", h.title or "", str(h.image_id))
    console.print(table)
    if not hits:
        console.print("[yellow]no matching products[/]")


def one_of(*choices: str):
    """An option callback that accepts one of ``choices`` (any case) as a usage error otherwise."""

    def check(value: str | None) -> str | None:
        if value is None or value.lower() in choices:
            return value.lower() if value is not None else None
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(choices)}")

    return check


def image_input(image: str):
    """An image argument as the library takes it: a path or URL as it is; ``-`` reads the image
    from standard input (``lookalike search - < photo.jpg``, ``curl ... | lookalike search -``)."""
    if image != "-":
        return image
    import sys

    from lookalike.config import get_settings
    from lookalike.errors import TooLargeError
    from lookalike.images import load_image

    limit = get_settings().max_image_bytes
    data = sys.stdin.buffer.read(limit + 1)
    if not data:
        raise InvalidRequest("no image on standard input: pipe one in (lookalike search - < photo.jpg)")
    if len(data) > limit:
        raise TooLargeError("<stdin>", f"more than the {limit} bytes allowed (LOOKALIKE_MAX_IMAGE_BYTES)")
    return load_image(data, name="<stdin>").image
