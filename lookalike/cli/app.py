"""The Typer application objects. Command modules in this package attach their commands here."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="lookalike",
    help="Visual search for product catalogs: index product photos, then find lookalikes of any photo.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
train_app = typer.Typer(help="Train models (metric learning, VAE).", no_args_is_help=True)
explore_app = typer.Typer(help="Explore a catalog's latent space.", no_args_is_help=True)
db_app = typer.Typer(help="Manage a local PostgreSQL server.", no_args_is_help=True)
app.add_typer(train_app, name="train")
app.add_typer(explore_app, name="explore")
app.add_typer(db_app, name="db")

#: set by the global --debug option: show tracebacks instead of one-line errors
state = {"debug": False}


@app.callback()
def _main(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    state["debug"] = debug
