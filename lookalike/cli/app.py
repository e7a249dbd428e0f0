"""The Typer application objects. Command modules in this package attach their commands here."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="lookalike",
    help="Visual search for product catalogs: index product photos, then find lookalikes of any photo.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
train_app = typer.Typer(help="Train models (metric learning, VAE).", no_args_is_help=True)
explore_app = typer.Typer(help="Explore a catalog's latent space.", no_args_is_help=True)
db_app = typer.Typer(help="Manage a local PostgreSQL server.", no_args_is_help=True)
app.add_typer(train_app, name="train")
app.add_typer(explore_app, name="explore")
app.add_typer(db_app, name="db")

#: set by the global --debug option: show tracebacks instead of one-line errors
state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"lookalike {version('lookalike')}")
        except PackageNotFoundError:  # run from a source tree that was never installed
            typer.echo("lookalike (not installed)")
        raise typer.Exit()


@app.callback()
def _main(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    state["debug"] = debug
