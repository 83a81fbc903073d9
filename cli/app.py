"""The Typer app every command module registers on (`cli/commands/`), and the options they share."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hyperexport_cli.errors import OneLineErrors

app = typer.Typer(
    name="hyperexport",
    help="Train HyperFormer++ multi-task T5 models and ship them as plain ONNX / TensorRT graphs.",
    cls=OneLineErrors,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: no panels, no type column
)

RecipeArg = Annotated[
    Path | None, typer.Argument(help="Recipe YAML; default: the embedded demo recipe.", show_default=False)
]
RunOpt = Annotated[Path | None, typer.Option(help="Run folder; default runs/latest.", show_default=False)]
RunArg = Annotated[Path | None, typer.Argument(help="Run folder; default runs/latest.", show_default=False)]
ExportArg = Annotated[Path, typer.Argument(help="An export folder (hyperexport export).", show_default=False)]
OutputOpt = Annotated[Path | None, typer.Option(help="Where to write; default as the command says.",
                                                 show_default=False)]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output folder.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
