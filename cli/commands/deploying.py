"""Commands that put exports in front of clients: deploy (a Triton model repository)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hyperexport.contracts.names import CLIENT_FILE, CLIENTS_DIR, MODELS_DIR
from hyperexport.options import DEFAULT_TRITON_REPO, Format
from hyperexport_cli.app import JsonOpt, OverwriteOpt, app
from hyperexport_cli.errors import user_errors
from hyperexport_cli.output import print_json


@app.command(epilog="Example: hyperexport deploy --task rte --format onnx --triton-repo triton-repo  |  "
                     "hyperexport deploy --format onnx --export exports/multitask/onnx  |  "
                     "hyperexport deploy --task rte --format tensorrt --triton-repo triton-repo --overwrite")
@user_errors
def deploy(
    task: Annotated[str | None, typer.Option(
        help="The exported task; none: the multi-task export (one model per graph for all its tasks).")] = None,
    format: Annotated[Format, typer.Option(help="tensorrt (plans) or onnx.")] = "tensorrt",
    triton_repo: Annotated[Path, typer.Option(
        help="Deployment folder: models/ is the Triton model repository, clients/<task>/ the client."
    )] = Path(DEFAULT_TRITON_REPO),
    export_dir: Annotated[Path | None, typer.Option(
        "--export", help="Export folder; default exports/<task>/<format>/.")] = None,
    overwrite: OverwriteOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Write a verified export as Triton models (config.pbtxt from the io spec, as Triton's protobuf message)
    and a client folder."""
    from hyperexport.contracts.fields import to_json
    from hyperexport.serve.deploy import deploy as deploy_task

    description = deploy_task(task=task, fmt=format, triton_repo=triton_repo, export_dir=export_dir,
                              overwrite=overwrite)
    if json_output:
        print_json(to_json(description))
        return
    typer.echo(f"deployed {description.task} ({format}, {description.precision}): "
               f"{', '.join(description.models.values())}")
    typer.echo(f"serve: tritonserver --model-repository {triton_repo / MODELS_DIR}")
    typer.echo(f"query: python {triton_repo / CLIENTS_DIR / description.task / CLIENT_FILE} '<JSON example>'")
