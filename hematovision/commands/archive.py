"""``python -m hematovision archive --input DIR --output OUT.parquet [--model M] [--engine local|ray] [--address ADDR] [--workers N]``

Classifies every image under DIR (recursive, sorted) into a Parquet dataset:
OUT.parquet is a folder of part files, one row per file with the columns path,
label, confidence, probabilities (label -> p), uncertain, ood, ood_score, model,
model_sha256 and error (null unless the file could not be classified; then the
prediction columns are null). Each file's bytes are checked and decoded by the
core (``hematovision.images``), with either engine.

``--engine local`` (default) uses a process pool on this machine (``--workers``,
default every core); ``--engine ray`` runs Ray Data (``read_binary_files`` ->
``map_batches`` with one classifier per actor -> ``write_parquet``) on a local
Ray instance or the cluster at ``--address`` (needs ``pip install .[scale]``).
Re-running with the same OUTPUT resumes: files already in it are skipped. A file
name that is not valid UTF-8 is stored with those bytes as ``\\xNN``, as
``classify`` prints it (with Ray, such files are classified on this machine), and
an unreachable ``--address`` fails within seconds, before any work. Exit
status: 0 every file classified, 1 some file failed, or the model/input/output/
engine could not be used, 2 usage error. See docs/scale.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import HematoVisionError
from . import DEFAULT_MODEL, _parquet, add_model_argument, fail, positive_int
from ..runtime import threads_per_worker
from ._parquet import ArchiveError

ENGINES = ("local", "ray")


@dataclass(frozen=True)
class ArchiveOptions:
    input: Path
    output: Path
    model: str = DEFAULT_MODEL
    engine: str = "local"
    address: str | None = None  # a Ray cluster (``ray start --head`` prints it); None: a local Ray instance
    workers: int | None = None  # processes (local) or actors (ray); None: every core here / every CPU of the cluster
    threads: int | None = None  # TFLite threads per worker
    rows_per_file: int = 4096  # local engine: rows per part file (what a crash can lose)


@dataclass(frozen=True)
class ArchiveResult:
    found: int  # files under the input
    skipped: int  # already in the output (resume)
    written: int  # rows this run added
    errors: int  # error rows among them
    earlier_errors: int  # error rows of files skipped now (written by an earlier run; not retried)
    seconds: float
    engine: str
    workers: int


def add_parser(sub) -> None:
    p = sub.add_parser("archive", help="classify a folder tree into a Parquet dataset (local pool or Ray), resumable",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, type=Path, help="folder of images (searched recursively)")
    p.add_argument("--output", required=True, type=Path, help="Parquet dataset folder (created; an existing one is resumed)")
    add_model_argument(p)
    p.add_argument("--engine", choices=ENGINES, default=ArchiveOptions.engine,
                   help="local: a process pool on this machine; ray: Ray Data (default: %(default)s)")
    p.add_argument("--address", help="Ray cluster address, e.g. ray://head:10001 or head:6379 (--engine ray; default: local Ray)")
    p.add_argument("--workers", type=positive_int, help="worker processes / Ray actors (default: every core or cluster CPU)")
    p.add_argument("--threads", type=positive_int, default=None, help="TFLite interpreter threads per worker (default: local, the cores shared out over the workers; ray, 1)")
    p.set_defaults(run=run)


def run(args) -> int:
    if args.address and args.engine != "ray":
        return fail("--address is for --engine ray; add --engine ray or drop --address.", status=2)
    opts = ArchiveOptions(input=args.input, output=args.output, model=args.model, engine=args.engine,
                          address=args.address, workers=args.workers, threads=args.threads)
    try:
        result = archive(opts)
    except (HematoVisionError, OSError) as exc:
        return fail(exc)
    print(f"archive: {result.found} files, {result.skipped} already in {opts.output}, {result.written} written "
          f"({result.errors} errors) in {result.seconds:.1f} s with {result.workers} {result.engine} worker(s)", file=sys.stderr)
    if result.earlier_errors:
        print(f"archive: {result.earlier_errors} error rows from an earlier run are kept, not retried; to retry those "
              "files, archive them into a new --output.", file=sys.stderr)
    return 1 if result.errors or result.earlier_errors else 0


def archive(options: ArchiveOptions) -> ArchiveResult:
    """Classify the images under ``options.input`` not yet in ``options.output``; append their rows."""
    from ..classifier import load_model
    from ._pool import default_workers, expand, path_problem, row_key

    t0 = time.perf_counter()
    pa = _parquet.pyarrow()
    if options.engine not in ENGINES:
        raise ArchiveError(f"unknown engine {options.engine!r}; choose one of {', '.join(ENGINES)}.")
    folder = options.input.absolute()
    if not folder.is_dir():
        raise ArchiveError(f"{folder}: not a folder; --input takes the folder that holds the images.")
    if options.engine == "ray" and options.address:
        from ._ray import check_reachable

        check_reachable(options.address)  # before any work: an unreachable cluster makes ray.init retry forever
    workers = options.workers or default_workers()
    # local engine: this process's model serves one worker and is forked for more; Ray: one CPU per actor
    threads = options.threads if options.engine == "ray" else threads_per_worker(options.threads, workers)
    clf = load_model(options.model, num_threads=threads)
    model = _parquet.ModelId(clf.spec.name, clf.spec.sha256)
    items = expand([str(folder)], recursive=True)
    if len(items) == 1 and items[0].path == folder:
        raise ArchiveError(items[0].problem or f"{folder}: no images found.")
    done = _parquet.done_paths(options.output, model)
    todo = [it for it in items if row_key(it.path) not in done]
    problems = [it.problem or path_problem(it.path) for it in todo]  # FIFOs, devices, loops: never opened
    refused = [{"path": str(it.path), "error": why} for it, why in zip(todo, problems) if why]
    readable = [it for it, why in zip(todo, problems) if not why]
    writer = _parquet.PartWriter(options.output, model, pa=pa, rows_per_file=options.rows_per_file)
    writer.add(refused)
    if options.engine == "ray" and readable:
        workers = _run_ray(readable, writer, clf=clf, options=options, threads=threads)
    else:
        _run_local(readable, writer, clf=clf, options=options, workers=workers, threads=threads)
    writer.close()
    (written, errors), (_, earlier) = _parquet.count_rows(options.output, [{row_key(it.path) for it in todo},
                                                                          {row_key(it.path) for it in items} & done])
    return ArchiveResult(found=len(items), skipped=len(items) - len(todo), written=written, errors=errors,
                         earlier_errors=earlier, seconds=time.perf_counter() - t0, engine=options.engine, workers=workers)


def _run_ray(items, writer, *, clf, options: ArchiveOptions, threads: int | None) -> int:
    """Ray classifies ``items``; a file whose name is not UTF-8 (which Ray cannot read by name) is done here."""
    from ._ray import run_ray

    here = [it for it in items if not _is_utf8(str(it.path))]
    _run_local(here, writer, clf=clf, options=options, workers=1, threads=threads)
    writer.close()
    paths = [str(it.path) for it in items if _is_utf8(str(it.path))]
    if not paths:
        return 1
    return run_ray(paths, output=options.output, spec=clf.spec, model=_parquet.ModelId(clf.spec.name, clf.spec.sha256),
                   workers=options.workers, address=options.address, threads=options.threads or 1)


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _run_local(items, writer, *, clf, options: ArchiveOptions, workers: int, threads: int | None) -> None:
    from ._pool import Task, iter_rows

    tasks = [Task(index=i, item=it, archive=True) for i, it in enumerate(items)]
    for row in iter_rows(tasks, clf=clf, model=options.model, threads=threads, workers=workers):
        writer.add([row])
