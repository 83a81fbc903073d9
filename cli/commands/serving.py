"""`serve`: verified exports on a Triton Inference Server, in the foreground until SIGINT or SIGTERM."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hyperexport.options import (
    DEFAULT_GRPC_PORT,
    DEFAULT_HTTP_PORT,
    DEFAULT_MAX_QUEUE_DELAY_US,
    DEFAULT_METRICS_PORT,
    DEFAULT_SERVE_HOST,
    DEFAULT_SERVE_INSTANCES,
    DEFAULT_SERVE_MAX_BATCH,
)
from hyperexport_cli.app import app
from hyperexport_cli.errors import user_errors


@app.command(epilog="Example: hyperexport serve exports/rte/onnx exports/sst2/onnx  |  "
                     "hyperexport serve rte=exports/rte/onnx --http-port 9000 --max-queue-delay-us 500  |  "
                     "curl -s localhost:8000/v2/health/ready")
@user_errors
def serve(
    exports: Annotated[list[Path], typer.Argument(
        help="Verified export folders; NAME=EXPORT serves one under another name (default: its task).",
        show_default=False)],
    host: Annotated[str, typer.Option(help="Address to bind (0.0.0.0: every interface).")] = DEFAULT_SERVE_HOST,
    http_port: Annotated[int, typer.Option(min=1, max=65535, help="KServe v2 HTTP/REST port.")] = DEFAULT_HTTP_PORT,
    grpc_port: Annotated[int, typer.Option(min=1, max=65535, help="KServe v2 gRPC port.")] = DEFAULT_GRPC_PORT,
    metrics_port: Annotated[int, typer.Option(
        min=1, max=65535, help="Prometheus metrics port.")] = DEFAULT_METRICS_PORT,
    max_batch_size: Annotated[int, typer.Option(
        min=1, help="Rows the dynamic batcher joins into one run.")] = DEFAULT_SERVE_MAX_BATCH,
    max_queue_delay_us: Annotated[int, typer.Option(
        min=0, help="How long a request may wait for others to batch with (0: none).")] = DEFAULT_MAX_QUEUE_DELAY_US,
    instances: Annotated[int, typer.Option(
        min=1, help="Model instances (processes) per served model.")] = DEFAULT_SERVE_INSTANCES,
) -> None:
    """Serve verified exports on a Triton Inference Server (HTTP, gRPC, metrics) until Ctrl-C or SIGTERM, which
    let in-flight requests finish. Per export: <name>_classify and <name>_generate (text in), <name>_classify_ids
    and <name>_generate_ids (token ids in)."""
    import signal

    from hyperexport.serve.server import ServerStopped, Serving
    from hyperexport.serve.server import serve as run_server

    def ready(serving: Serving) -> None:
        for entry in serving.exports:
            manifest = entry.export.manifest
            typer.echo(f"serving {entry.export.path} ({manifest.task}, {manifest.format} {manifest.precision}) as "
                       f"{', '.join(entry.model_names)}")
        endpoints = serving.endpoints
        typer.echo(f"HTTP http://{endpoints.http} (ready: {endpoints.ready_url}), gRPC {endpoints.grpc}, "
                   f"metrics {endpoints.metrics_url}")
        typer.echo("stop with Ctrl-C or SIGTERM: in-flight requests finish first")

    try:
        stopped_by = run_server([str(path) for path in exports], host=host, http_port=http_port, grpc_port=grpc_port,
                                metrics_port=metrics_port, max_batch_size=max_batch_size,
                                max_queue_delay_us=max_queue_delay_us, instances=instances, on_ready=ready)
    except ServerStopped as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=1) from None
    typer.echo(f"stopped ({signal.Signals(stopped_by).name}): in-flight requests finished")
