"""The `hyperexport` command line: parse arguments, call one library function, print the result.

Each command module under `commands/` registers its commands on the one app; heavy libraries (torch,
transformers, optimum, onnxruntime) are imported inside the commands, after the arguments are checked.
"""

from __future__ import annotations

import os

# Before torch loads: OpenMP threads that spin while waiting make small CPU matmuls ~100x slower as
# soon as another process wants the same cores; passive waiting costs little when the cores are free.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from hyperexport_cli.app import app  # noqa: E402, I001  (the commands below register in the order of the path)
from hyperexport_cli.commands import training  # noqa: E402, F401, I001  (registration, in the order of the path)
from hyperexport_cli.commands import shipping  # noqa: E402, F401, I001
from hyperexport_cli.commands import deploying  # noqa: E402, F401, I001
from hyperexport_cli.commands import serving  # noqa: E402, F401, I001
from hyperexport_cli.commands import benchmarking  # noqa: E402, F401, I001


def main() -> None:
    app()
