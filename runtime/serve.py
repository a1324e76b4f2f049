"""``pvlm-serve``: a Triton Inference Server on one machine through PyTriton, bound to ``Describer``.

Triton's dynamic batcher groups concurrent requests (batch full or ``queue_delay_ms`` elapsed);
the bound function describes the whole batch with one :class:`runtime.Describer` call. Health
(``/v2/health/ready``), the HTTP/gRPC inference protocol and Prometheus metrics (``/metrics``)
are Triton's own. PyTriton (``pip install nvidia-pytriton``, the ``serve`` extra) is imported
only inside functions: ``import runtime`` never loads it.

Model ``pvlm`` (see docs/serving.md):
  IMAGE      BYTES [1]  one encoded JPEG/PNG image per request row
  TEXT       BYTES [1]  the description (UTF-8)
  ATTRIBUTES BYTES [1]  the parsed attributes as JSON
  ERROR      BYTES [1]  empty, or why this row could not be described (not an image, too large...)

PyTriton fails a whole batch when its function raises, so a bad image is reported in ERROR and
never costs the requests it was batched with their answers.

Also here: :func:`run_repository`, which runs the tritonserver binary shipped in nvidia-pytriton on a
repository written by ``pvlm-export triton --flavor python`` (no Docker needed).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .preprocess import DEFAULT_MAX_PIXELS, MAX_IMAGE_BYTES, InputError, image_from_bytes

log = logging.getLogger(__name__)

MODEL_NAME = "pvlm"


# --------------------------------------------------------------------------- tritonserver plumbing


def tritonserver_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a tritonserver whose Python backend stub must run this interpreter's Python.

    The stub embeds libpython and finds its prefix through ``python3`` on PATH, so this
    interpreter's bin directory goes first on PATH and its libpython directory first on
    LD_LIBRARY_PATH (otherwise a system libpython of another patch release may be loaded
    against this interpreter's standard library).
    """
    env = dict(os.environ if base is None else base)
    bindir = str(Path(sys.executable).parent)
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and p != bindir]
    env["PATH"] = os.pathsep.join([bindir, *path])
    paths = [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    libdir = sysconfig.get_config_var("LIBDIR")
    ldlib = sysconfig.get_config_var("LDLIBRARY")
    if libdir and ldlib and (Path(libdir) / ldlib).exists() and libdir not in paths:
        paths.insert(0, libdir)
    try:  # the server's and the stub's bundled libraries (PyTriton adds the same directory)
        from pytriton.utils.distribution import get_libs_path

        libs = str(get_libs_path())
        if libs not in paths:
            paths.append(libs)
    except ImportError:
        pass
    if paths:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(paths)
    return env


def shipped_tritonserver(workdir: str | Path) -> tuple[Path, Path]:
    """The tritonserver binary in nvidia-pytriton and a backend directory prepared in ``workdir``.

    Returns ``(binary, backend_dir)``; ``backend_dir/python`` holds the Python backend with the
    stub built for this interpreter's Python version (as PyTriton itself lays it out).
    """
    try:
        import pytriton
    except ImportError:
        raise RuntimeError("nvidia-pytriton is not installed: pip install nvidia-pytriton "
                           "(or pip install -e '.[serve]')") from None
    dist = Path(pytriton.__file__).resolve().parent / "tritonserver"
    binary = dist / "bin" / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = dist / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not binary.is_file() or not stub.is_file():
        raise RuntimeError(f"{dist}: no tritonserver binary or no Python backend stub for Python {version}")
    backends = Path(workdir) / "backends"
    shutil.copytree(dist / "backends", backends, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(stub, backends / "python" / "triton_python_backend_stub")
    return binary, backends


def wait_ready(url: str, timeout_s: float, proc: subprocess.Popen | None = None, model: str | None = None) -> None:
    """Poll until ``url`` is ready (``/v2/health/ready``, or ``/v2/models/MODEL/ready``): HTTP 200.

    TimeoutError after ``timeout_s``; RuntimeError as soon as ``proc`` (the server) exits.
    """
    path = f"/v2/models/{model}/ready" if model else "/v2/health/ready"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"{url}{path}", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.25)
    raise TimeoutError(f"{url} not ready after {timeout_s:.0f} s")


@contextlib.contextmanager
def run_repository(repo: str | Path, host: str = "127.0.0.1", http_port: int = 8000, grpc_port: int = 8001,
                   metrics_port: int = 8002, log_file: str | Path | None = None,
                   ready_timeout_s: float = 120, stop_timeout_s: float = 30) -> Iterator[subprocess.Popen]:
    """Run nvidia-pytriton's tritonserver on a (python-flavor) repository until the block exits.

    Yields the server process once ``/v2/health/ready`` answers (every model loaded); on exit
    sends SIGINT (Triton waits up to ``stop_timeout_s`` for open requests and connections) and
    kills it if it is still there 10 s later. Server output goes to ``log_file``.
    """
    shm_prefix = f"pvlm{os.getpid()}x{http_port}x"
    with tempfile.TemporaryDirectory(prefix="pvlm-triton-") as work:
        binary, backends = shipped_tritonserver(work)
        args = [str(binary), f"--model-repository={Path(repo).resolve()}", f"--backend-directory={backends}",
                f"--http-address={host}", f"--http-port={http_port}", f"--grpc-address={host}",
                f"--grpc-port={grpc_port}", f"--metrics-address={host}", f"--metrics-port={metrics_port}",
                "--allow-gpu-metrics=false", f"--exit-timeout-secs={int(stop_timeout_s)}",
                # a unique shm prefix: several servers (or test runs) on one machine never collide
                f"--backend-config=python,shm-region-prefix-name={shm_prefix}"]
        out = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115 - closed below
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=tritonserver_env(), cwd=work)
        try:
            wait_ready(f"http://{host}:{http_port}", ready_timeout_s, proc)
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(stop_timeout_s + 10)  # Triton itself gives up on open connections after stop_timeout_s
                except subprocess.TimeoutExpired:
                    log.warning("tritonserver did not stop within %.0f s; killing it", stop_timeout_s + 10)
                    proc.kill()
                    proc.wait(10)
            for region in Path("/dev/shm").glob(f"{shm_prefix}*"):  # left behind only by a killed server
                region.unlink(missing_ok=True)
            if log_file:
                out.close()


# --------------------------------------------------------------------------- pvlm-serve (PyTriton)


def check_listen(host: str, ports: dict[str, int]) -> bool:
    """ValueError (one line) unless ``host`` is an address of this machine and every port is distinct and free.

    ``ports``: endpoint name -> port. Run before starting Triton, which otherwise waits out its 120 s
    start-up timeout on such mistakes. Returns True when ``host`` is a loopback address.
    """
    seen: dict[int, str] = {}
    for name, port in ports.items():
        if port in seen:
            raise ValueError(f"--{seen[port]}-port and --{name}-port are both {port}; each endpoint needs its own port")
        seen[port] = name
    if re.fullmatch(r"[\d.]+", host):  # looks numeric: must be a valid IPv4 address, never a DNS name
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(f"--host {host}: not a valid IPv4 address") from None
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise ValueError(f"--host {host}: unknown host ({getattr(e, 'strerror', None) or e})") from None
    family, addr = infos[0][0], infos[0][4][0]
    for name, port in ports.items():
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Triton does: TIME_WAIT is no conflict
            try:
                sock.bind((addr, port))
            except OSError as e:
                raise ValueError(f"--{name}-port {port}: cannot listen on {host}:{port} "
                                 f"({e.strerror or type(e).__name__})") from None
    return all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)




def _as_bytes(value: Any) -> bytes:
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value)
    if isinstance(value, np.ndarray):
        return value.tobytes()
    if isinstance(value, str):
        return value.encode("latin-1", "replace")
    return bytes(value)


def make_infer_fn(describer: Any, max_image_bytes: int = MAX_IMAGE_BYTES) -> Any:
    """PyTriton ``@batch`` function: IMAGE (B, 1) bytes -> TEXT, ATTRIBUTES, ERROR (B, 1)."""
    from pytriton.decorators import batch

    max_pixels = getattr(describer, "max_pixels", DEFAULT_MAX_PIXELS)

    @batch
    def infer(IMAGE: np.ndarray) -> dict[str, np.ndarray]:  # noqa: N803 - Triton tensor name
        rows = IMAGE.reshape(IMAGE.shape[0], -1)
        texts, attrs, errors = [""] * len(rows), ["{}"] * len(rows), [""] * len(rows)
        good, images = [], []
        for i, row in enumerate(rows):
            try:
                if row.size != 1:
                    raise InputError(f"input {i}: expected one encoded image per row, got {row.size}")
                images.append(image_from_bytes(_as_bytes(row[0]), i, max_image_bytes, max_pixels))
                good.append(i)
            except InputError as e:
                errors[i] = str(e)
        if images:
            for i, d in zip(good, describer.describe(images)):
                if d.ok:
                    texts[i], attrs[i] = d.text, json.dumps(d.attributes, sort_keys=True)
                else:
                    errors[i] = d.error or "could not describe this image"
        if any(errors):
            log.warning("%d of %d images in this batch failed: %s", sum(map(bool, errors)), len(rows),
                        "; ".join(e for e in errors if e))

        def column(values: list[str]) -> np.ndarray:
            return np.array([[v.encode("utf-8")] for v in values], dtype=np.object_)

        return {"TEXT": column(texts), "ATTRIBUTES": column(attrs), "ERROR": column(errors)}

    return infer


@contextlib.contextmanager
def _stub_environment() -> Iterator[None]:
    """PATH and LD_LIBRARY_PATH of :func:`tritonserver_env` while PyTriton starts tritonserver."""
    keys = ("PATH", "LD_LIBRARY_PATH")
    saved = {k: os.environ.get(k) for k in keys}
    env = tritonserver_env()
    os.environ.update({k: env[k] for k in keys if k in env})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def serve(bundle: str | Path, host: str = "127.0.0.1", http_port: int = 8000, grpc_port: int = 8001,
          metrics_port: int = 8002, max_batch: int = 8, queue_delay_ms: float = 50, backend: str = "auto",
          threads: int | None = None, max_image_bytes: int = MAX_IMAGE_BYTES, model_name: str = MODEL_NAME,
          exit_timeout_s: int = 10, log_file: str | Path | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> Any:
    """Start a PyTriton server describing with ``bundle``; returns the running ``pytriton.triton.Triton``.

    Use it as a context manager (``with serve(...) as triton:``) or call ``triton.stop()``.
    ``max_batch`` is Triton's ``max_batch_size`` (at most the bundle's limit); ``queue_delay_ms``
    the dynamic batcher's ``max_queue_delay_microseconds`` / 1000. tritonserver's own log goes to
    ``log_file`` (default: this process's stdout, as PyTriton does). ``exit_timeout_s``: on stop,
    how long tritonserver keeps finishing queued and running requests (it accepts no new ones).
    Host and ports are checked first (:func:`check_listen`): ValueError, nothing started.
    """
    if not check_listen(host, {"http": http_port, "grpc": grpc_port, "metrics": metrics_port}):
        log.warning("listening on %s, not a loopback address: inference and metrics have NO authentication; "
                    "put a TLS + authentication proxy in front (docs/serving.md, security)", host)
    try:
        from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
        from pytriton.triton import Triton, TritonConfig
    except ImportError:
        raise RuntimeError("pvlm-serve needs PyTriton: pip install nvidia-pytriton (or pip install -e '.[serve]')") \
            from None
    from .describer import Describer

    if queue_delay_ms < 0:
        raise ValueError(f"queue_delay_ms must be >= 0, got {queue_delay_ms}")
    describer = Describer(bundle, backend=backend, threads=threads, max_batch=max_batch,  # checks max_batch
                          max_pixels=max_pixels)
    config = TritonConfig(http_address=host, http_port=http_port, grpc_address=host, grpc_port=grpc_port,
                          metrics_address=host, metrics_port=metrics_port, allow_gpu_metrics=False,
                          exit_timeout_secs=exit_timeout_s, log_file=Path(log_file) if log_file else None)
    triton = Triton(config=config)
    try:
        triton.bind(
            model_name=model_name,
            infer_func=make_infer_fn(describer, max_image_bytes),
            inputs=[Tensor(name="IMAGE", dtype=np.bytes_, shape=(1,))],
            outputs=[Tensor(name="TEXT", dtype=np.bytes_, shape=(1,)),
                     Tensor(name="ATTRIBUTES", dtype=np.bytes_, shape=(1,)),
                     Tensor(name="ERROR", dtype=np.bytes_, shape=(1,))],
            config=ModelConfig(max_batch_size=max_batch,
                               batcher=DynamicBatcher(max_queue_delay_microseconds=int(round(queue_delay_ms * 1000)))),
            strict=True,
        )
        with _stub_environment():
            triton.run()  # tritonserver (and its Python backend stubs) inherit the environment here
    except BaseException:
        triton.stop()
        raise
    log.info("serving %s (%s) as model %r: http://%s:%d, grpc %s:%d, metrics http://%s:%d/metrics",
             bundle, describer.backend_name, model_name, host, http_port, host, grpc_port, host, metrics_port)
    return triton


# SystemExit subclasses: no library's `except Exception` eats them, and when the signal lands in gevent's hub
# (tritonclient's HTTP wait for readiness) the hub passes a SystemExit to the main greenlet without printing
# a traceback, as it did for a plain BaseException.
class _Interrupted(SystemExit):
    """SIGINT/SIGTERM while the server was starting."""


class _StartTimeout(SystemExit):
    """--start-timeout elapsed before the server was ready."""


def main(argv: list[str] | None = None) -> None:
    """Console script ``pvlm-serve`` (errors: one line on stderr, exit 2 for bad usage or input)."""
    import click

    from .backends import NAMES
    from .cli_common import CONTEXT_SETTINGS, Command, CommandError, CommandFailure, common_options, first_line

    @click.command(cls=Command, context_settings=CONTEXT_SETTINGS)
    @click.argument("bundle", type=click.Path())
    @click.option("--host", default="127.0.0.1", help="Address to listen on (0.0.0.0 for every interface).")
    @click.option("--http-port", type=click.IntRange(1, 65535), default=8000, help="Triton HTTP/REST port.")
    @click.option("--grpc-port", type=click.IntRange(1, 65535), default=8001, help="Triton gRPC port.")
    @click.option("--metrics-port", type=click.IntRange(1, 65535), default=8002, help="Prometheus metrics port.")
    @click.option("--max-batch", type=click.IntRange(min=1), default=8, help="Triton max_batch_size.")
    @click.option("--queue-delay-ms", type=click.FloatRange(min=0), default=50.0,
                  help="Dynamic batcher: run a batch when full or after this delay.")
    @click.option("--backend", type=click.Choice(NAMES), default="auto", help="Runtime backend.")
    @click.option("--threads", type=click.IntRange(min=1), help="Intra-op threads.")
    @click.option("--max-image-bytes", type=click.IntRange(min=1), default=MAX_IMAGE_BYTES,
                  show_default=f"{MAX_IMAGE_BYTES / 2**20:g} MiB", help="Largest encoded image accepted, in bytes.")
    @click.option("--max-pixels", type=click.IntRange(min=1), default=DEFAULT_MAX_PIXELS,
                  help="Refuse images with more pixels (decompression-bomb guard).")
    @click.option("--drain-timeout", type=click.FloatRange(min=0), default=30.0,
                  help="On SIGTERM/SIGINT: seconds to finish queued and running requests (new ones are refused).")
    @click.option("--start-timeout", type=click.FloatRange(min=1), default=120.0,
                  help="Give up if the server is not ready within this many seconds.")
    @click.option("--triton-log", type=click.Path(dir_okay=False),
                  help="tritonserver's log file (default: a file in the temp directory; stdout with -v).")
    @common_options(default_level=logging.INFO, log_format="%(asctime)s %(name)s: %(message)s")
    def cli(bundle: str, host: str, http_port: int, grpc_port: int, metrics_port: int, max_batch: int,
            queue_delay_ms: float, backend: str, threads: int | None, max_image_bytes: int, max_pixels: int,
            drain_timeout: float, start_timeout: float, triton_log: str | None, verbose: int) -> None:
        """Serve BUNDLE with Triton's HTTP/gRPC protocol (model "pvlm") until SIGINT or SIGTERM.

        \b
        No authentication: keep the default loopback --host, or put a TLS and
        authentication proxy in front (docs/serving.md). On SIGTERM/SIGINT the
        server refuses new requests, finishes queued ones for up to
        --drain-timeout seconds, then exits 0. Exit 2: bad usage, bundle, host or
        port (checked before starting, within seconds).

        -v also logs PyTriton's and tritonserver's messages (tritonserver's to stdout unless --triton-log).
        """
        from .backends import BackendUnavailable
        from .bundle import BundleError

        if not verbose:
            logging.getLogger("pytriton").setLevel(logging.WARNING)
        stop = threading.Event()
        starting = True

        def on_signal(signum: int, _frame: Any) -> None:
            log.info("signal %d received: stopping", signum)
            stop.set()
            if starting:  # PyTriton's start-up blocks; leave it now rather than after its timeout
                raise _Interrupted

        def on_alarm(_signum: int, _frame: Any) -> None:
            if starting:
                raise _StartTimeout

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, on_signal)
        signal.signal(signal.SIGALRM, on_alarm)

        if triton_log is None and not verbose:
            triton_log = str(Path(tempfile.gettempdir()) / f"pvlm-serve-{os.getpid()}-tritonserver.log")
        signal.setitimer(signal.ITIMER_REAL, start_timeout)
        try:
            triton = serve(bundle, host=host, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port,
                           max_batch=max_batch, queue_delay_ms=queue_delay_ms, backend=backend, threads=threads,
                           max_image_bytes=max_image_bytes, log_file=triton_log, max_pixels=max_pixels,
                           exit_timeout_s=max(1, math.ceil(drain_timeout)))
            starting = False
        except _Interrupted:
            click.echo("stopped before the server was ready", err=True)
            return
        except _StartTimeout:
            raise CommandFailure(f"the server was not ready within {start_timeout:g} s (--start-timeout)"
                                       + (f"; see {triton_log}" if triton_log else "")) from None
        except (BundleError, BackendUnavailable, ValueError) as e:
            raise CommandError(first_line(e)) from None
        except (RuntimeError, TimeoutError) as e:
            raise CommandFailure(first_line(e)) from None
        finally:
            starting = False
            signal.setitimer(signal.ITIMER_REAL, 0)
        with triton:
            click.echo(f"ready: http://{host}:{http_port}/v2/models/{MODEL_NAME} (grpc {host}:{grpc_port}, "
                       f"metrics http://{host}:{metrics_port}/metrics)"
                       + (f"; tritonserver log: {triton_log}" if triton_log else ""), err=True)
            while not stop.wait(1.0):
                if not triton.is_alive():
                    raise CommandFailure("Triton stopped unexpectedly")
            click.echo(f"draining: new requests are refused, queued ones get up to {drain_timeout:g} s", err=True)
            t0 = time.monotonic()
        click.echo(f"stopped ({time.monotonic() - t0:.1f} s to drain and stop)", err=True)

    cli.main(args=argv, prog_name="pvlm-serve")


if __name__ == "__main__":
    main()


__all__ = ["MAX_IMAGE_BYTES", "MODEL_NAME", "main", "make_infer_fn", "run_repository", "serve",
           "shipped_tritonserver", "tritonserver_env", "wait_ready"]
