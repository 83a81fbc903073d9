"""Run `hyperexport` commands inside this (child) process, as a test arranged it, and print the results.

    python tests/child_cli.py '[["materialize", "--task", "rte"], ...]'

prints one JSON list of {"exit_code", "stdout", "stderr", "traceback"} on its last line. Environment:
- HX_FSIZE=<bytes>: RLIMIT_FSIZE for this process, so any write past that size fails with EFBIG
  (Python ignores SIGXFSZ, so the write returns the error instead of killing the process): a full disk
  as the code sees it, without filling one.
- HX_PAUSE=<event>|<glob>|<count>|<marker>: a PEP 578 audit hook; at the <count>-th <event> (os.mkdir,
  open, os.rename, ...) whose path argument matches <glob>, write <marker> and sleep, so the test can
  SIGKILL the process at exactly that point of the real code path.
The tests that use it run as a separate process (a kill, a resource limit, another user id).
"""

from __future__ import annotations

import fnmatch
import json
import os
import resource
import sys
import time
import traceback


def install_pause(spec: str) -> None:
    event, pattern, count, marker = spec.split("|")
    seen, busy = [0], [False]

    def hook(name: str, args: tuple) -> None:
        if name != event or busy[0]:
            return
        paths = [os.fsdecode(a) for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))]
        if not any(fnmatch.fnmatch(os.path.abspath(p), pattern) for p in paths):
            return
        seen[0] += 1
        if seen[0] == int(count):
            busy[0] = True
            with open(marker, "w") as handle:
                handle.write(" ".join(paths))
            time.sleep(3600)  # the test kills us here

    sys.addaudithook(hook)


def main() -> None:
    if "HX_FSIZE" in os.environ:
        limit = int(os.environ["HX_FSIZE"])
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    if "HX_PAUSE" in os.environ:
        install_pause(os.environ["HX_PAUSE"])
    from typer.testing import CliRunner

    from hyperexport_cli.main import app

    results = []
    for args in json.loads(sys.argv[1]):
        result = CliRunner().invoke(app, args)
        error = result.exc_info and not isinstance(result.exception, SystemExit)
        results.append({"exit_code": result.exit_code, "stdout": result.stdout, "stderr": result.stderr,
                        "traceback": "".join(traceback.format_exception(*result.exc_info)) if error else ""})
    print(json.dumps(results))


if __name__ == "__main__":
    main()
