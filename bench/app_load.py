"""The Gradio app through ``gradio_client``: round trip of ``/classify``, then load, and the app's memory.

The app runs in its own process (``python app.py`` on 127.0.0.1 and a free
port), so its RSS is its own: after start-up, before and after the load, and
its peak (``VmHWM``). Every request uploads a file and classifies it; the
images are distinct from one request to the next (the app caches predictions
per upload, and an upload's path is its content hash), so no request is a
cache hit unless the image list is shorter than the request count. All traffic
goes to 127.0.0.1; the number of requests and every wait are bounded.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from hematovision.commands import DEFAULT_MODEL

from .common import ROOT, Timing

HOST = "127.0.0.1"


@dataclass(frozen=True)
class LoadResult:
    clients: int
    requests_per_client: int
    sent: int
    ok: int
    errors: int
    error_samples: tuple[str, ...]
    wall_s: float
    requests_per_s: float
    latency: Timing | None


@dataclass(frozen=True)
class AppReport:
    command: str
    endpoint: str
    startup_s: float
    distinct_images: int
    round_trip: Timing | None
    round_trip_errors: int
    load: LoadResult | None
    rss_after_start_mib: float
    rss_before_load_mib: float
    rss_after_load_mib: float
    rss_growth_mib: float  # after load - before load
    peak_rss_mib: float


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _rss_mib(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


def _peak_rss_mib(pid: int, sampled: float) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return sampled


class AppProcess:
    """``command`` started on a free port with GRADIO_SERVER_* set; stopped (its pid only) on exit."""

    def __init__(self, command: list[str], *, env: dict | None = None, start_timeout_s: float = 240.0):
        self.command, self.port = command, free_port()
        self.url = f"http://{HOST}:{self.port}/"
        self._tmp = tempfile.TemporaryDirectory(prefix="hv-bench-app-")
        self.env = {**os.environ, **(env or {}), "GRADIO_SERVER_NAME": HOST, "GRADIO_SERVER_PORT": str(self.port),
                    "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "GRADIO_TEMP_DIR": self._tmp.name,
                    "NO_PROXY": f"{HOST},localhost", "no_proxy": f"{HOST},localhost"}
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen | None = None
        self.startup_s = float("nan")

    def __enter__(self) -> "AppProcess":
        self._log = open(Path(self._tmp.name) / "app.log", "w+")
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(self.command, cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        while time.perf_counter() - t0 < self.start_timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the app exited with {self.proc.returncode} before serving: {self.log_tail()}")
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5):
                    break
            except OSError:
                time.sleep(0.2)
        else:
            self.__exit__(None, None, None)
            raise TimeoutError(f"the app did not listen on {self.url} within {self.start_timeout_s:.0f} s: {self.log_tail()}")
        self.startup_s = time.perf_counter() - t0
        return self

    def log_tail(self, n: int = 1500) -> str:
        self._log.flush()
        self._log.seek(0)
        return self._log.read()[-n:]

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=20)
        self._log.close()
        self._tmp.cleanup()


def client(url: str):
    from gradio_client import Client

    return Client(url, verbose=False, download_files=False, analytics_enabled=False)


def classify_once(cl, image: Path, args: tuple, endpoint: str, timeout_s: float):
    from gradio_client import handle_file

    return cl.submit(handle_file(str(image)), *args, api_name=endpoint).result(timeout=timeout_s)


def _load(url: str, images: list[Path], args: tuple, endpoint: str, *, clients: int, requests: int,
          deadline_s: float, request_timeout_s: float) -> LoadResult:
    lat: list[float] = []
    errors: list[str] = []
    sent = [0]
    lock = threading.Lock()
    t_end = time.perf_counter() + deadline_s

    def worker(c: int) -> None:
        try:
            cl = client(url)
        except Exception as exc:  # noqa: BLE001 - any failure to connect is one error per request, reported
            with lock:
                errors.extend([f"client {c}: {type(exc).__name__}: {exc}"] * requests)
            return
        for i in range(requests):
            if time.perf_counter() > t_end:
                with lock:
                    errors.append(f"client {c}: deadline reached, request {i} not sent")
                continue
            img = images[(c * requests + i) % len(images)]
            t0 = time.perf_counter()
            try:
                classify_once(cl, img, args, endpoint, request_timeout_s)
            except Exception as exc:  # noqa: BLE001 - the load test counts every kind of failure
                with lock:
                    sent[0] += 1
                    errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
                continue
            with lock:
                sent[0] += 1
                lat.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(worker, range(clients)))
    wall = time.perf_counter() - t0
    return LoadResult(
        clients=clients, requests_per_client=requests, sent=sent[0], ok=len(lat), errors=len(errors),
        error_samples=tuple(dict.fromkeys(errors))[:5], wall_s=wall, requests_per_s=len(lat) / wall if wall > 0 else 0.0,
        latency=Timing.from_samples("app_load", f"/classify under load, {clients} clients", lat) if lat else None)


def run(images: list[Path], *, command: list[str] | None = None, env: dict | None = None, endpoint: str = "/classify",
        args: tuple = (DEFAULT_MODEL,), round_trips: int = 200, warmup: int = 5, clients: int = 8, requests: int = 50,
        deadline_s: float = 300.0, request_timeout_s: float = 60.0) -> AppReport:
    """Start the app, time ``round_trips`` sequential requests, then ``clients`` x ``requests`` concurrent ones."""
    if not images:
        raise ValueError("the app benchmark needs images")
    command = command or [sys.executable, "app.py"]
    with AppProcess(command, env=env) as app:
        pid = app.proc.pid
        rss_start = _rss_mib(pid)
        cl = client(app.url)
        for i in range(warmup):
            classify_once(cl, images[-1 - i % len(images)], args, endpoint, request_timeout_s)
        lat, rt_errors = [], 0
        t_end = time.perf_counter() + deadline_s
        for i in range(round_trips):
            if time.perf_counter() > t_end:
                rt_errors += round_trips - i
                break
            t0 = time.perf_counter()
            try:
                classify_once(cl, images[i % len(images)], args, endpoint, request_timeout_s)
            except Exception:  # noqa: BLE001 - counted and reported as errors
                rt_errors += 1
                continue
            lat.append(time.perf_counter() - t0)
        rss_before = _rss_mib(pid)
        peak_sampled = [rss_before]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.05):
                try:
                    peak_sampled[0] = max(peak_sampled[0], _rss_mib(pid))
                except Exception:  # noqa: BLE001 - the process may be gone; sampling is best effort
                    return

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        load = _load(app.url, images, args, endpoint, clients=clients, requests=requests, deadline_s=deadline_s,
                     request_timeout_s=request_timeout_s) if clients and requests else None
        stop.set()
        sampler.join()
        rss_after = _rss_mib(pid)
        peak = _peak_rss_mib(pid, peak_sampled[0])
        startup = app.startup_s
    return AppReport(
        command=" ".join(Path(c).name if i == 0 else c for i, c in enumerate(command)), endpoint=endpoint,
        startup_s=startup, distinct_images=len(images),
        round_trip=Timing.from_samples("app_round_trip", f"{endpoint} round trip, 1 client", lat) if lat else None,
        round_trip_errors=rt_errors, load=load, rss_after_start_mib=rss_start, rss_before_load_mib=rss_before,
        rss_after_load_mib=rss_after, rss_growth_mib=rss_after - rss_before, peak_rss_mib=peak)

