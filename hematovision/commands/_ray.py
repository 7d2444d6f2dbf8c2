"""The archive's Ray engine: Ray Data reads the files' bytes, actors classify them, Parquet out.

``read_binary_files(paths, include_paths=True)`` -> ``map_batches(Predictor)``
(an actor pool, one classifier per actor) -> ``write_parquet``. The bytes are
decoded by the core (``hematovision.images.load_image``), never by Ray's own
image reader, so every size, bomb and format check applies. The model's files
travel with the actors (a few MB), so cluster nodes need hematovision installed,
not the model. Ray is imported only inside :func:`run_ray`.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import MissingDependencyError
from ._parquet import ArchiveError, ModelId

#: Seconds to wait for the cluster's port to answer (``ray.init`` itself retries an unreachable address forever).
CONNECT_TIMEOUT_S = 5.0
#: The port of an address without one: the Ray Client server (``ray://``) or the GCS (``ray start --head``).
DEFAULT_PORTS = {"ray": 10001, "": 6379}


def cluster_endpoint(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of ``--address`` (``head:6379``, ``ray://head:10001``, ``[::1]:6379``); None for ``auto``/``local``."""
    text = address.strip()
    if text.lower() in ("auto", "local"):
        return None
    scheme, _, rest = text.rpartition("://")
    try:
        parts = urlsplit("//" + rest)
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if not host or scheme.lower() not in DEFAULT_PORTS or parts.path or parts.query:
        raise ArchiveError(f"--address {address!r}: not a Ray cluster address; use HOST:PORT (e.g. head:6379, "
                           "what `ray start --head` prints) or ray://HOST:10001.")
    return host, port or DEFAULT_PORTS[scheme.lower()]


def check_reachable(address: str, *, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Raise ``ArchiveError`` unless the cluster at ``address`` accepts a connection within ``timeout`` seconds."""
    endpoint = cluster_endpoint(address)
    if endpoint is None:
        return
    try:
        socket.create_connection(endpoint, timeout=timeout).close()
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc) or type(exc).__name__)
        raise ArchiveError(f"cannot reach the Ray cluster at {address}: {reason}; start it with `ray start --head` "
                           "or check --address.") from exc


def model_files(spec) -> dict[str, bytes]:
    """The files a classifier loads (``<name>.json``, ``.tflite``, ``.head.npz``, ``.ood.npz``, ...) by name;
    not the float ``.keras`` model or the model card."""
    folder = spec.json_path.parent
    names = {spec.json_path.name, spec.tflite_path.name}
    names |= {p.name for p in (spec.head_path, spec.ood_path) if p is not None}
    names |= {p.name for p in folder.glob(spec.json_path.stem + ".*") if p.is_file() and p.suffix in (".json", ".npz")}
    return {name: (folder / name).read_bytes() for name in sorted(names)}


class Predictor:
    """A Ray Data callable class: one verified classifier per actor, a batch of files' bytes in, an Arrow table out."""

    def __init__(self, *, files: dict[str, bytes], json_name: str, model: ModelId, threads: int | None = None):
        from ..classifier import load_model

        self._dir = tempfile.mkdtemp(prefix="hematovision-model-")
        for name, data in files.items():
            (Path(self._dir) / name).write_bytes(data)
        self.clf = load_model(Path(self._dir) / json_name, num_threads=threads)
        self.model = model

    def __call__(self, batch: dict):
        import pyarrow as pa

        from ._parquet import table
        from ._pool import classify_bytes

        rows = [classify_bytes(self.clf, str(path), bytes(data)) for path, data in zip(batch["path"], batch["bytes"])]
        return table(rows, self.model, pa=pa)

    def __del__(self):
        shutil.rmtree(getattr(self, "_dir", ""), ignore_errors=True)


def run_ray(paths: list[str], *, output: Path, spec, model: ModelId, workers: int | None = None,
            address: str | None = None, threads: int | None = None, batch_size: int = 32) -> int:
    """Classify ``paths`` on Ray and append their rows to ``output``; returns the number of actors used."""
    try:
        import ray
    except ImportError as exc:
        raise MissingDependencyError("--engine ray needs Ray Data, which is not installed; run `pip install .[scale]` "
                                     "(or use --engine local).") from exc
    started = not ray.is_initialized()
    if started and address:
        check_reachable(address)
        ray.init(address=address)
    elif started:
        ray.init(num_cpus=workers)
    try:
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        if workers and workers > cpus:
            raise ArchiveError(f"--workers {workers} but the Ray cluster has {cpus} CPUs (one actor each); "
                               f"use --workers {cpus} or fewer, or add nodes with `ray start --address=...`.")
        # Enough blocks to keep every actor busy, about 1,000 files each on a big archive.
        blocks = min(len(paths), max(4 * (workers or cpus), len(paths) // 1000))
        size = min(workers or cpus, blocks)  # an actor without a block would idle
        # Reading bytes and writing Parquet ask for no CPU slot: the actors hold one each, and with every slot
        # taken by an actor, reads that need one would never start (ray-project/ray#44687).
        ds = ray.data.read_binary_files(paths, include_paths=True, num_cpus=0, override_num_blocks=blocks)
        ds = ds.map_batches(Predictor, batch_size=batch_size, num_cpus=1, compute=ray.data.ActorPoolStrategy(size=size),
                            fn_constructor_kwargs={"files": model_files(spec), "json_name": spec.json_path.name,
                                                   "model": model, "threads": threads})
        ds.write_parquet(str(output.absolute()), ray_remote_args={"num_cpus": 0})
    finally:
        if started:
            ray.shutdown()
    return size
