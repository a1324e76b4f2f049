"""``pvlm-serve``: a Triton Inference Server on one machine through PyTriton, bound to ``Describer``.

Triton's dynamic batcher groups concurrent requests (batch full or ``queue_delay_ms`` elapsed);
the bound function decodes each row and shrinks it to the model's input before decoding the next
(a batch holds one full-size image at most), then runs the whole batch through the
:class:`runtime.Describer`'s model at once. The HTTP/gRPC inference protocol, health endpoints and
Prometheus metrics (``/metrics``) are Triton's own; the model describes a warm-up image before
Triton starts, so ``/v2/models/pvlm/ready`` never says ready for a model that cannot answer.
PyTriton (``pip install nvidia-pytriton``, the ``serve`` extra) is imported only inside functions:
``import runtime`` never loads it.

Model ``pvlm`` (see docs/serving.md):
  IMAGE        BYTES [1]  one encoded JPEG/PNG image per request row
  TEXT         BYTES [1]  the description (UTF-8)
  ATTRIBUTES   BYTES [1]  the parsed attributes as JSON
  ALTERNATIVES BYTES [1]  every returned sequence, best first, as JSON [{text, score, attributes}]
  ERROR        BYTES [1]  empty, or one line saying why this row could not be described

Each request may choose its decoding with request parameters (``runtime.decoding.REQUEST_PARAMETERS``:
``beams``, ``n_best``, ``sample``, ``temperature``, ``top_k``, ``top_p``, ``seed``, ``length_penalty``,
``no_repeat_ngram_size``, or ``decoding`` = ``beams3``/``original``/...); without them the server's
decoding applies (greedy unless ``pvlm-serve`` was given decoding flags). Requests of a batch with the
same decoding run together; a bad parameter fails its own request's rows in ERROR.

PyTriton fails a whole batch, and sends the client a traceback, when its function raises, so a bad
image is reported in its row's ERROR and never costs the requests it was batched with their answers.

Also here: :func:`run_repository`, which runs the tritonserver binary shipped in nvidia-pytriton on a
repository written by ``pvlm-export triton --flavor python`` (no Docker needed).
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import json
import logging
import math
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import click
import numpy as np
from PIL import Image

from ..attributes import parse_attributes
from ..backends import NAMES
from ..backends.base import BackendUnavailable
from ..bundle import BundleError, Preprocessing
from ..cli_common import CONTEXT_SETTINGS, Command, CommandError, CommandFailure, common_options, first_line
from ..decoding import DecodingOptions, decoding_from_parameters
from ..decoding_cli import decoding_from_flags, decoding_options
from ..describer import Describer, detokenize
from ..preprocess import MAX_IMAGE_BYTES, InputError, image_from_bytes, preprocess

log = logging.getLogger(__name__)

MODEL_NAME = "pvlm"
# pvlm-serve's pixel limit. Rows are decoded one at a time, and decoding one image peaks at about 4 bytes
# a pixel for RGB, 20 for RGBA and 28 for 16-bit grey (Pillow's and runtime.preprocess's conversions):
# 16.8 Mpx costs ~65 MB for a photo and ~470 MB at worst. Phone photos (12 Mpx) and 4K frames (8.3 Mpx)
# pass; the library's 64 Mpx default is for offline use, where nobody else waits on the memory.
SERVE_MAX_PIXELS = 4096 * 4096


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


def _column(values: list[str]) -> np.ndarray:
    return np.array([[v.encode("utf-8")] for v in values], dtype=np.object_)


def _pixels_from_bytes(data: bytes, index: int, pre: Preprocessing, max_image_bytes: int,
                       max_pixels: int) -> np.ndarray:
    """Encoded image -> the model's float32 (3, H, W) input; the decoded full-size image is freed on return.

    Decoding (limits, EXIF orientation, colour modes) and resizing are runtime.preprocess's, as for the
    local ``Describer``.
    """
    image = image_from_bytes(data, index, max_image_bytes, max_pixels)
    return preprocess(image, pre.height, pre.width, list(pre.mean), list(pre.std))


def _describe_pixels(describer: Any, pixels: list[np.ndarray], decoding: DecodingOptions | None = None,
                     indices: Sequence[int] | None = None) -> list[tuple[str, str, str]]:
    """Preprocessed rows -> (text, attributes as JSON, alternatives as JSON) each, with ``decoding`` (default: the
    describer's). ``indices``: each row's place in its own request (the sampling seed's image index)."""
    out = []
    index = list(range(len(pixels))) if indices is None else list(indices)
    for start in range(0, len(pixels), describer.max_batch):
        end = start + describer.max_batch
        hyps, _ = describer.generate(np.stack(pixels[start:end]), decoding, image_index=index[start:end])
        for ranked in hyps:
            alts = []
            for h in ranked:
                text = detokenize(h.tokens, describer.bundle.tokens)
                alts.append({"text": text, "score": None if h.score is None else round(h.score, 6),
                             "attributes": parse_attributes(text)})
            out.append((alts[0]["text"], json.dumps(alts[0]["attributes"], sort_keys=True),
                        json.dumps(alts, sort_keys=True)))
    return out


def describe_rows(describer: Any, rows: Sequence[np.ndarray], max_image_bytes: int = MAX_IMAGE_BYTES,
                  max_pixels: int = SERVE_MAX_PIXELS, indices: Sequence[int] | None = None,
                  decoding: DecodingOptions | None = None) -> tuple[list[str], list[str], list[str], list[str]]:
    """Rows of one encoded image each -> per-row texts, attributes (JSON), errors (empty, or one line) and
    alternatives (JSON: every returned sequence, best first), all decoded with ``decoding`` (default: the
    describer's).

    Each row is decoded and shrunk to the model's input before the next one is decoded, so a batch
    holds at most one decoded full-size image. A row that cannot be decoded fails alone; a model
    failure fails the batch's rows with a one-line error, its traceback goes to the log only.
    ``indices``: the input number each row's error names (its place in its own request); default 0, 1, ...
    """
    n = len(rows)
    names = list(range(n)) if indices is None else list(indices)
    texts, attrs, errors, alts = [""] * n, ["{}"] * n, [""] * n, ["[]"] * n
    pre = describer.bundle.preprocessing
    good, pixels = [], []
    for j, (row, i) in enumerate(zip(rows, names)):
        try:
            if row.size != 1:
                raise InputError(f"input {i}: expected one encoded image per row, got {row.size}")
            pixels.append(_pixels_from_bytes(_as_bytes(row.flat[0]), i, pre, max_image_bytes, max_pixels))
            good.append(j)
        except InputError as e:
            errors[j] = str(e)
        except Exception:  # noqa: BLE001 - a decoder bug costs this row only, and the client one line
            log.exception("input %d: unexpected error while decoding", i)
            errors[j] = f"input {i}: the server could not decode this image (details in the server log)"
    if good:
        try:
            described = _describe_pixels(describer, pixels, decoding, [names[j] for j in good])
            for j, (text, attributes, alternatives) in zip(good, described):
                texts[j], attrs[j], alts[j] = text, attributes, alternatives
        except Exception as e:  # noqa: BLE001 - PyTriton would send the traceback to every client of the batch
            log.exception("describing a batch of %d failed", len(good))
            for j in good:
                errors[j] = (f"input {names[j]}: the model failed on this batch ({type(e).__name__}; "
                             "details in the server log)")
    if any(errors):
        log.warning("%d of %d images in this batch failed: %s", sum(map(bool, errors)), n,
                    "; ".join(e for e in errors if e))
    return texts, attrs, errors, alts


def _request_decoding(request: Any, base: DecodingOptions) -> DecodingOptions | str:
    """The request's decoding from its parameters, or the one-line reason they are refused."""
    try:
        return decoding_from_parameters(getattr(request, "parameters", None) or {}, base)
    except ValueError as e:
        return f"request parameters: {first_line(e)}"


def make_infer_fn(describer: Any, max_image_bytes: int = MAX_IMAGE_BYTES, max_pixels: int | None = None) -> Any:
    """PyTriton function: requests of IMAGE (k, 1) bytes -> TEXT, ATTRIBUTES, ERROR, ALTERNATIVES (k, 1) each.

    The requests of the batch that decode alike (their parameters, else the describer's decoding) go through
    one :func:`describe_rows` call; an error names the row's place in its own request, and a request whose
    decoding parameters are refused gets that line in every row's ERROR.
    """
    limit = describer.max_pixels if max_pixels is None else max_pixels

    def infer(requests: list[Any]) -> list[dict[str, np.ndarray]]:
        images = [r["IMAGE"].reshape(r["IMAGE"].shape[0], -1) for r in requests]
        decodings = [_request_decoding(r, describer.decoding) for r in requests]
        results: list[tuple[list[str], ...] | None] = [None] * len(requests)
        for opts in dict.fromkeys(d for d in decodings if isinstance(d, DecodingOptions)):
            members = [i for i, d in enumerate(decodings) if d == opts]
            rows = [row for i in members for row in images[i]]
            texts, attrs, errors, alts = describe_rows(
                describer, rows, max_image_bytes, limit, indices=[k for i in members for k in range(len(images[i]))],
                decoding=opts)
            start = 0
            for i in members:
                end = start + len(images[i])
                results[i] = (texts[start:end], attrs[start:end], errors[start:end], alts[start:end])
                start = end
        out = []
        for image, decoding, result in zip(images, decodings, results):
            if result is None:  # refused parameters: every row of the request says why
                k = len(image)
                result = ([""] * k, ["{}"] * k, [str(decoding)] * k, ["[]"] * k)
            texts, attrs, errors, alts = result
            out.append({"TEXT": _column(texts), "ATTRIBUTES": _column(attrs), "ERROR": _column(errors),
                        "ALTERNATIVES": _column(alts)})
        return out

    return infer


class WarmUpError(RuntimeError):
    """The model could not describe the warm-up image, so the server would not answer: nothing was started."""


def _warm_up(describer: Any) -> tuple[bytes, str]:
    """Describe a 1x1 grey PNG the way requests are described; returns (its bytes, the text). Raises on failure."""
    buf = io.BytesIO()
    Image.new("RGB", (1, 1), (128, 128, 128)).save(buf, "PNG")
    data = buf.getvalue()
    pixels = _pixels_from_bytes(data, 0, describer.bundle.preprocessing, len(data), 1)
    return data, _describe_pixels(describer, [pixels], describer.decoding)[0][0]


def _url_host(host: str) -> str:
    """How this machine reaches a server listening on ``host`` (a wildcard address means loopback)."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"[{host}]" if ":" in host else host


def _infer_http(url: str, images: Sequence[bytes], model_name: str = MODEL_NAME,
               timeout_s: float = 60) -> list[dict[str, str]]:
    """Encoded images, one request of ``len(images)`` rows, to a ``pvlm-serve`` model over HTTP.

    Returns ``{"TEXT", "ATTRIBUTES", "ERROR"}`` strings per row. Uses Triton's binary tensor extension
    (no tritonclient needed); urllib's errors otherwise.
    """
    tensor = b"".join(struct.pack("<I", len(image)) + image for image in images)
    header = json.dumps({"inputs": [{"name": "IMAGE", "shape": [len(images), 1], "datatype": "BYTES",
                                     "parameters": {"binary_data_size": len(tensor)}}],
                         "outputs": [{"name": name, "parameters": {"binary_data": False}}
                                     for name in ("TEXT", "ATTRIBUTES", "ERROR")]}).encode()
    req = urllib.request.Request(f"{url}/v2/models/{model_name}/infer", method="POST", data=header + tensor,
                                 headers={"Inference-Header-Content-Length": str(len(header)),
                                          "Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(req, timeout=timeout_s) as r:
        outputs = json.loads(r.read())["outputs"]
    return [{o["name"]: o["data"][i] for o in outputs} for i in range(len(images))]


def _check_answers(url: str, model_name: str, image: bytes, want: str, rows: int) -> None:
    """RuntimeError (one line) unless the running server describes ``rows`` copies of ``image`` as ``want``.

    A full batch (``rows`` = max_batch) runs at once instead of waiting out the batcher's queue delay.
    """
    try:
        got = _infer_http(url, [image] * rows, model_name)
    except urllib.error.HTTPError as e:
        body = e.read().decode("utf-8", "replace")
        with contextlib.suppress(ValueError, AttributeError):
            body = json.loads(body).get("error", body)  # Triton's {"error": "..."}
        raise RuntimeError(f"{url}: the warm-up request failed (HTTP {e.code}: {first_line(RuntimeError(body))})") \
            from None
    except (urllib.error.URLError, OSError, ValueError, KeyError, IndexError) as e:
        raise RuntimeError(f"{url}: the warm-up request failed ({type(e).__name__}: {first_line(e)})") from None
    wrong = [row for row in got if row.get("ERROR") or row.get("TEXT") != want]
    if wrong:
        raise RuntimeError(f"{url}: the warm-up request was answered {wrong[0]!r}, not {want!r}")


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


def _warm_describer(bundle: str | Path, **options: Any) -> tuple[Any, bytes, str]:
    """A Describer that has described the warm-up image, the image and its text; WarmUpError otherwise."""
    describer = Describer(bundle, **options)
    try:
        image, text = _warm_up(describer)
    except Exception as e:  # noqa: BLE001 - whatever the cause, the server must not start
        describer.close()
        raise WarmUpError(f"{bundle}: the warm-up description failed, so the model cannot answer "
                          f"({type(e).__name__}: {first_line(e)})") from None
    return describer, image, text


def serve(bundle: str | Path, host: str = "127.0.0.1", http_port: int = 8000, grpc_port: int = 8001,
          metrics_port: int = 8002, max_batch: int = 8, queue_delay_ms: float = 50, backend: str = "auto",
          threads: int | None = None, max_image_bytes: int = MAX_IMAGE_BYTES, model_name: str = MODEL_NAME,
          exit_timeout_s: int = 10, log_file: str | Path | None = None, max_pixels: int = SERVE_MAX_PIXELS,
          decoding: DecodingOptions | None = None) -> Any:
    """Start a PyTriton server describing with ``bundle``; returns the running ``pytriton.triton.Triton``.

    Use it as a context manager (``with serve(...) as triton:``) or call ``triton.stop()``.
    ``max_batch`` is Triton's ``max_batch_size`` (at most the bundle's limit); ``queue_delay_ms``
    the dynamic batcher's ``max_queue_delay_microseconds`` / 1000. tritonserver's own log goes to
    ``log_file`` (default: this process's stdout, as PyTriton does). ``exit_timeout_s``: on stop,
    how long tritonserver keeps finishing queued and running requests (it accepts no new ones).
    ``max_pixels``: images with more pixels are refused from their header (default 4096 x 4096).
    ``decoding``: the decoding of requests that name none in their parameters (default greedy; beam search
    and sampling need an ONNX Runtime backend). Host and ports are checked first (:func:`check_listen`): ValueError, nothing started. The model
    describes a warm-up image before Triton starts (:class:`WarmUpError`, nothing started) and the
    running server answers it over HTTP before this returns (RuntimeError, server stopped).
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

    if queue_delay_ms < 0:
        raise ValueError(f"queue_delay_ms must be >= 0, got {queue_delay_ms}")
    describer, image, text = _warm_describer(bundle, backend=backend, threads=threads, max_batch=max_batch,
                                             max_pixels=max_pixels, decoding=decoding)  # checks max_batch
    config = TritonConfig(http_address=host, http_port=http_port, grpc_address=host, grpc_port=grpc_port,
                          metrics_address=host, metrics_port=metrics_port, allow_gpu_metrics=False,
                          exit_timeout_secs=exit_timeout_s, log_file=Path(log_file) if log_file else None)
    triton = Triton(config=config)
    try:
        triton.bind(
            model_name=model_name,
            infer_func=make_infer_fn(describer, max_image_bytes, max_pixels),
            inputs=[Tensor(name="IMAGE", dtype=np.bytes_, shape=(1,))],
            outputs=[Tensor(name="TEXT", dtype=np.bytes_, shape=(1,)),
                     Tensor(name="ATTRIBUTES", dtype=np.bytes_, shape=(1,)),
                     Tensor(name="ERROR", dtype=np.bytes_, shape=(1,)),
                     Tensor(name="ALTERNATIVES", dtype=np.bytes_, shape=(1,))],
            config=ModelConfig(max_batch_size=max_batch,
                               batcher=DynamicBatcher(max_queue_delay_microseconds=int(round(queue_delay_ms * 1000)))),
            strict=True,
        )
        with _stub_environment():
            triton.run()  # tritonserver (and its Python backend stubs) inherit the environment here
        _check_answers(f"http://{_url_host(host)}:{http_port}", model_name, image, text, max_batch)
    except BaseException:
        triton.stop()
        raise
    log.info("serving %s (%s) as model %r: http://%s:%d, grpc %s:%d, metrics http://%s:%d/metrics",
             bundle, describer.backend_name, model_name, host, http_port, host, grpc_port, host, metrics_port)
    return triton


# --------------------------------------------------------------------------- the pvlm-serve command


# SystemExit subclasses: no library's `except Exception` eats them, and when the signal lands in gevent's hub
# (tritonclient's HTTP wait for readiness) the hub passes a SystemExit to the main greenlet without printing
# a traceback, as it did for a plain BaseException.
class _Interrupted(SystemExit):
    """SIGINT/SIGTERM while the server was starting."""


class _StartTimeout(SystemExit):
    """--start-timeout elapsed before the server was ready."""


class _Signals:
    """One run's SIGINT/SIGTERM (set ``stop``) and start-up alarm; while starting, both interrupt the start-up."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.starting = True

    def install(self, start_timeout: float) -> None:
        """Handle SIGINT, SIGTERM and SIGALRM; the alarm rings after ``start_timeout`` seconds."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)
        signal.signal(signal.SIGALRM, self._on_alarm)
        signal.setitimer(signal.ITIMER_REAL, start_timeout)

    def started(self) -> None:
        """Start-up is over: signals only set ``stop``, the alarm is off."""
        self.starting = False
        signal.setitimer(signal.ITIMER_REAL, 0)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        log.info("signal %d received: stopping", signum)
        self.stop.set()
        if self.starting:  # PyTriton's start-up blocks; leave it now rather than after its timeout
            raise _Interrupted

    def _on_alarm(self, _signum: int, _frame: Any) -> None:
        if self.starting:
            raise _StartTimeout


def _start(signals: _Signals, start_timeout: float, triton_log: str | None, **options: Any) -> Any | None:
    """:func:`serve` within ``start_timeout``; None if a signal stopped the start-up. Errors: one line."""
    signals.install(start_timeout)
    try:
        return serve(log_file=triton_log, **options)
    except _Interrupted:
        click.echo("stopped before the server was ready", err=True)
        return None
    except _StartTimeout:
        raise CommandFailure(f"the server was not ready within {start_timeout:g} s (--start-timeout)"
                             + (f"; see {triton_log}" if triton_log else "")) from None
    except (BundleError, BackendUnavailable, ValueError) as e:
        raise CommandError(first_line(e)) from None
    except (RuntimeError, TimeoutError) as e:
        raise CommandFailure(first_line(e)) from None
    finally:
        signals.started()


def _serve_until_stopped(triton: Any, signals: _Signals, host: str, ports: tuple[int, int, int],
                         drain_timeout: float, triton_log: str | None) -> None:
    """Print ready, serve until SIGINT/SIGTERM, then drain and stop."""
    http_port, grpc_port, metrics_port = ports
    with triton:
        click.echo(f"ready: http://{host}:{http_port}/v2/models/{MODEL_NAME} (grpc {host}:{grpc_port}, "
                   f"metrics http://{host}:{metrics_port}/metrics)"
                   + (f"; tritonserver log: {triton_log}" if triton_log else ""), err=True)
        while not signals.stop.wait(1.0):
            if not triton.is_alive():
                raise CommandFailure("Triton stopped unexpectedly")
        click.echo(f"draining: new requests are refused, queued ones get up to {drain_timeout:g} s", err=True)
        t0 = time.monotonic()
    click.echo(f"stopped ({time.monotonic() - t0:.1f} s to drain and stop)", err=True)


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
@click.option("--max-pixels", type=click.IntRange(min=1), default=SERVE_MAX_PIXELS,
              show_default=f"{SERVE_MAX_PIXELS}, 4096x4096",
              help="Refuse images with more pixels, from the header before decoding (memory bound and "
                   "decompression-bomb guard).")
@click.option("--drain-timeout", type=click.FloatRange(min=0), default=30.0,
              help="On SIGTERM/SIGINT: seconds to finish queued and running requests (new ones are refused).")
@click.option("--start-timeout", type=click.FloatRange(min=1), default=120.0,
              help="Give up if the server is not ready within this many seconds.")
@click.option("--triton-log", type=click.Path(dir_okay=False),
              help="tritonserver's log file (default: a file in the temp directory; stdout with -v).")
@decoding_options
@common_options(default_level=logging.INFO, log_format="%(asctime)s %(name)s: %(message)s")
def serve_command(bundle: str, host: str, http_port: int, grpc_port: int, metrics_port: int, max_batch: int,
                  queue_delay_ms: float, backend: str, threads: int | None, max_image_bytes: int, max_pixels: int,
                  drain_timeout: float, start_timeout: float, triton_log: str | None, verbose: int,
                  **decoding: Any) -> None:
    """Serve BUNDLE with Triton's HTTP/gRPC protocol (model "pvlm") until SIGINT or SIGTERM.

    \b
    No authentication: keep the default loopback --host, or put a TLS and
    authentication proxy in front (docs/serving.md). "ready" is printed (and
    /v2/models/pvlm/ready answers 200) only once the model has described a
    warm-up image. On SIGTERM/SIGINT the server refuses new requests, finishes
    queued ones for up to --drain-timeout seconds, then exits 0. Exit 2: bad
    usage, bundle, host or port (checked before starting, within seconds).
    Exit 1: the warm-up description failed, or the server did not start.

    The decoding flags set the decoding of requests that name none in their
    parameters (greedy by default); a request may ask for its own (docs/decoding.md).

    -v also logs PyTriton's and tritonserver's messages (tritonserver's to stdout unless --triton-log).
    """
    try:
        default_decoding = decoding_from_flags(**decoding)
    except ValueError as e:
        raise CommandError(first_line(e)) from None
    if not verbose:
        logging.getLogger("pytriton").setLevel(logging.WARNING)
    if triton_log is None and not verbose:
        triton_log = str(Path(tempfile.gettempdir()) / f"pvlm-serve-{os.getpid()}-tritonserver.log")
    signals = _Signals()
    triton = _start(signals, start_timeout, triton_log, bundle=bundle, host=host, http_port=http_port,
                    grpc_port=grpc_port, metrics_port=metrics_port, max_batch=max_batch,
                    queue_delay_ms=queue_delay_ms, backend=backend, threads=threads, max_image_bytes=max_image_bytes,
                    max_pixels=max_pixels, exit_timeout_s=max(1, math.ceil(drain_timeout)), decoding=default_decoding)
    if triton is not None:
        _serve_until_stopped(triton, signals, host, (http_port, grpc_port, metrics_port), drain_timeout, triton_log)


def main(argv: list[str] | None = None) -> None:
    """Console script ``pvlm-serve`` (errors: one line on stderr, exit 2 for bad usage or input)."""
    serve_command.main(args=argv, prog_name="pvlm-serve")


if __name__ == "__main__":
    main()


__all__ = ["MAX_IMAGE_BYTES", "MODEL_NAME", "SERVE_MAX_PIXELS", "WarmUpError", "describe_rows", "main", "make_infer_fn",
           "run_repository", "serve", "serve_command", "shipped_tritonserver", "tritonserver_env", "wait_ready"]
