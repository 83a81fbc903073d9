"""The Hugging Face Hub, reached only where a recipe names something on it, and never waited on.

A hub id is looked up in the local cache first (no network). Only when the cache lacks it is the hub
asked, and only if it answers a TCP connect within `PROBE_TIMEOUT_S`; `HF_HUB_OFFLINE=1` means never.
Without either, the one-line `UserError` names what was wanted and the offline way, within seconds
instead of minutes of retries.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
from collections.abc import Callable, Iterator
from typing import TypeVar
from urllib.parse import urlparse

from hyperexport.errors import UserError

T = TypeVar("T")
PROBE_TIMEOUT_S = 3.0
DEFAULT_ENDPOINT = "https://huggingface.co"
_OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


def offline_by_setting() -> bool:
    """HF_HUB_OFFLINE (or transformers'/datasets' own variable) says not to use the network."""
    return any(os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on") for name in _OFFLINE_VARIABLES)


@functools.cache
def hub_reachable() -> bool:
    """The hub endpoint (HF_ENDPOINT or huggingface.co) accepts a TCP connection within the probe time."""
    if offline_by_setting():
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname or "", port), timeout=PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def _why_not() -> str:
    if offline_by_setting():
        return "HF_HUB_OFFLINE is set"
    return f"the Hugging Face Hub ({os.environ.get('HF_ENDPOINT', DEFAULT_ENDPOINT)}) is unreachable"


def load_from_hub(load: Callable[..., T], name: str, what: str, offline_way: str) -> T:
    """`load(name, local_files_only=True)` from the cache, else `load(name)` from a reachable hub, else a
    one-line UserError: "cannot load <what> '<name>': <why>, and it is not cached: <offline_way>"."""
    try:
        return load(name, local_files_only=True)
    except (OSError, ValueError):
        pass
    if not hub_reachable():
        raise UserError(f"cannot load {what} '{name}': {_why_not()}, and it is not cached: {offline_way}")
    return load(name)


@contextlib.contextmanager
def datasets_offline_unless_reachable() -> Iterator[bool]:
    """`datasets` in offline mode (its cache only) when the hub cannot be reached; yields whether online."""
    import datasets.config

    online = hub_reachable()
    saved = datasets.config.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = saved or not online
    try:
        yield online
    finally:
        datasets.config.HF_HUB_OFFLINE = saved


def unreachable_dataset(name: str, offline_way: str) -> UserError:
    return UserError(f"cannot load dataset '{name}': {_why_not()}, and it is not cached: {offline_way}")
