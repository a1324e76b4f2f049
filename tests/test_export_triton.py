"""``pvlm-export triton``: the model repository, checked statically and served by a real tritonserver.

The python-flavor repository runs on the tritonserver binary shipped in nvidia-pytriton (CPU,
loopback, free ports); its answers must equal the local ``Describer``'s and its statistics must
show that the dynamic batcher really batched. The native flavor (ONNX Runtime backend) cannot run
here, so its configs are parsed with Triton's own protobuf definitions and checked against the
bundle manifest.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import io
import json
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("onnxruntime")

N_IMAGES = 24  # parity set: mixed sizes, PNG and JPEG
LOAD_REQUESTS, LOAD_THREADS, LOAD_BUDGET_S = 200, 8, 150


# --------------------------------------------------------------------------- shared helpers (test_runtime_serve imports them)


def build_lively_bundle(checkpoint: Path, out: Path) -> Path:
    """A bundle whose greedy output depends on the image and whose rows stop at different steps.

    The random-init tiny model says the same thing for every image and never emits EOS, which would
    make parity trivial and never drop a finished row; larger decoder weights and an EOS embedding
    that shadows a token some rows emit (tied head: EOS wins wherever that token would) fix both.
    """
    import torch
    from PIL import Image

    import pvlm
    from export import export_onnx
    from runtime.preprocess import preprocess

    if (out / "manifest.json").is_file():
        return out
    model, vocab, _ = pvlm.load_checkpoint(checkpoint)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "backbone" not in name and p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
        h, w = model.cfg.image_size
        pixels = torch.from_numpy(np.stack([preprocess(Image.open(io.BytesIO(b)).convert("RGB"), h, w, model.cfg.mean,
                                                       model.cfg.std) for b in make_images(24, seed=99)]))
        rows = pvlm.generate(model.eval(), pixels, max_new_tokens=24).tolist()

        def stops(t: int) -> set[int]:  # where each row would end if EOS won wherever t would
            return {row.index(t) if t in row else len(row) for row in rows}

        candidates = sorted({t for row in rows for t in row if t >= 4 and min(stops(t)) >= 2})
        shadow = max(candidates, key=lambda t: len(stops(t)))
        model.tok_emb.weight[model.cfg.eos_id] = model.tok_emb.weight[shadow] * 1.05
    ckpt = pvlm.save_checkpoint(out.parent / "lively.pt", model, vocab, {"note": "serving tests"})
    return export_onnx(ckpt, out, max_batch=8, max_new_tokens=24, verify=False, force=True)


def make_images(n: int, seed: int = 0) -> list[bytes]:
    """``n`` encoded images (PNG and JPEG, mixed sizes and content)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = (int(v) for v in rng.integers(24, 160, 2))
        kind = i % 3
        if kind == 0:
            a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        elif kind == 1:
            a = np.full((h, w, 3), rng.integers(0, 256, 3), np.uint8)
        else:
            a = np.zeros((h, w, 3), np.uint8)
            a[: h // 2], a[h // 2:] = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, "PNG" if i % 2 else "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def local_texts(bundle: Path, images: list[bytes]) -> list[str]:
    """What the in-process ``Describer`` (ONNX Runtime CPU) says for each encoded image."""
    from PIL import Image

    from runtime import Describer

    d = Describer(bundle, backend="onnxruntime-cpu")
    results = d.describe([Image.open(io.BytesIO(b)) for b in images])
    assert all(r.ok for r in results)
    return [r.text for r in results]


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (bound to port 0 together, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def run_load(call, payloads: list, threads: int, budget_s: float) -> dict:
    """``call(client_index, payload) -> result`` from ``threads`` threads over every payload, bounded in time.

    Returns results (None where the budget ran out), errors (message per failed index), latencies (s) and wall time.
    """
    results: list = [None] * len(payloads)
    errors: dict[int, str] = {}
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.monotonic() + budget_s
    start = threading.Barrier(threads)

    def worker(k: int) -> None:
        start.wait(timeout=30)
        for i in range(k, len(payloads), threads):
            if time.monotonic() > deadline:
                return
            t0 = time.perf_counter()
            try:
                res = call(k, payloads[i])
            except Exception as e:  # noqa: BLE001 - every failure is recorded with its message
                with lock:
                    errors[i] = f"{type(e).__name__}: {e}"
                continue
            with lock:
                latencies.append(time.perf_counter() - t0)
                results[i] = res

    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, range(threads)))
    return {"results": results, "errors": errors, "latencies": latencies, "wall_s": time.perf_counter() - t0}


def load_with_clients(new_client, call, payloads: list, threads: int, budget_s: float) -> dict:
    """:func:`run_load` with one client per thread, closed afterwards; ``call(client, payload)``."""
    clients = [new_client() for _ in range(threads)]
    try:
        return run_load(lambda k, payload: call(clients[k], payload), payloads, threads, budget_s)
    finally:
        for c in clients:
            c.close()


def check_load_nothing_lost(new_client, describe, images: list, expected: list, name: str) -> None:
    """LOAD_REQUESTS requests from LOAD_THREADS clients: every one answered, each answer the local one."""
    payloads = [i % len(images) for i in range(LOAD_REQUESTS)]
    load = load_with_clients(new_client, lambda c, i: describe(c, images[i])[0], payloads, LOAD_THREADS,
                             LOAD_BUDGET_S)
    report_load(name, load, LOAD_REQUESTS)
    assert not load["errors"], list(load["errors"].values())[:3]
    assert all(r is not None for r in load["results"]), "the time budget ran out before every request was sent"
    assert load["results"] == [expected[i] for i in payloads]


def report_load(name: str, load: dict, n: int) -> str:
    """One line: answered/failed counts, p50/p99 latency and throughput (printed into the test output)."""
    lat = np.asarray(load["latencies"]) * 1e3
    ok = len(lat)
    line = (f"{name}: {n} requests, {ok} answered, {len(load['errors'])} failed, wall {load['wall_s']:.2f} s, "
            f"p50 {np.percentile(lat, 50):.1f} ms, p99 {np.percentile(lat, 99):.1f} ms, "
            f"throughput {ok / load['wall_s']:.1f} img/s")
    print(line)
    return line


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def lively_bundle(tiny_checkpoint, tmp_path_factory) -> Path:
    """The serving tests' bundle (built once per session, shared with test_runtime_serve.py)."""
    return build_lively_bundle(tiny_checkpoint, tmp_path_factory.getbasetemp() / "lively-bundle" / "bundle")


@pytest.fixture(scope="module")
def native_repo(tiny_bundle, tmp_path_factory) -> Path:
    from export.triton import write_triton_repo

    return write_triton_repo(tiny_bundle, tmp_path_factory.mktemp("triton") / "native", max_batch=8,
                             queue_delay_ms=50, instances=2, kind="gpu", flavor="native")


@pytest.fixture(scope="module")
def python_repo(lively_bundle, tmp_path_factory) -> Path:
    from export.triton import write_triton_repo

    return write_triton_repo(lively_bundle, tmp_path_factory.mktemp("triton") / "python", max_batch=8,
                             queue_delay_ms=50, flavor="python")


@pytest.fixture(scope="module")
def images() -> list[bytes]:
    return make_images(N_IMAGES)


@pytest.fixture(scope="module")
def expected(lively_bundle, images) -> list[str]:
    texts = local_texts(lively_bundle, images)
    assert len(set(texts)) > 1, "the serving bundle should describe different images differently"
    return texts


class _Server:
    def __init__(self, http: int, grpc: int, metrics: int, log: Path):
        self.http, self.grpc, self.metrics, self.log = http, grpc, metrics, log

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else "(no log)"


@pytest.fixture(scope="module")
def server(python_repo, tmp_path_factory):
    """The real tritonserver from nvidia-pytriton on the python-flavor repository (stopped at module end)."""
    pytest.importorskip("pytriton", reason="needs nvidia-pytriton (pip install -e '.[serve]')")
    pytest.importorskip("tritonclient.grpc", reason="needs tritonclient[all] (pip install -e '.[serve]')")
    from runtime.serving.server import run_repository

    http, grpc, metrics = free_ports(3)
    srv = _Server(http, grpc, metrics, tmp_path_factory.mktemp("tritonlog") / "tritonserver.log")
    try:
        with run_repository(python_repo, http_port=http, grpc_port=grpc, metrics_port=metrics, log_file=srv.log,
                            ready_timeout_s=90, stop_timeout_s=20):
            yield srv
    except (RuntimeError, TimeoutError) as e:
        pytest.fail(f"tritonserver: {e}\n{srv.log_tail()}")


def _grpc_client(srv: _Server):
    import tritonclient.grpc as grpcclient

    return grpcclient.InferenceServerClient(f"127.0.0.1:{srv.grpc}")


def _image_input(data: bytes, dtype: str = "UINT8"):
    import tritonclient.grpc as grpcclient

    arr = np.frombuffer(data, np.uint8)[None]
    if dtype == "FP32":
        arr = arr.astype(np.float32)
    inp = grpcclient.InferInput("IMAGE", list(arr.shape), dtype)
    inp.set_data_from_numpy(arr)
    return inp


def _describe(client, data: bytes, timeout_s: float = 60) -> tuple[str, dict]:
    res = client.infer("pvlm_describer", [_image_input(data)], client_timeout=timeout_s)
    return res.as_numpy("TEXT")[0, 0].decode(), json.loads(res.as_numpy("ATTRIBUTES")[0, 0])


# --------------------------------------------------------------------------- static: the repository on disk


def _configs(repo: Path) -> dict:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    out = {}
    for path in sorted(repo.glob("*/config.pbtxt")):
        cfg = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
        assert cfg.name == path.parent.name
        out[cfg.name] = cfg
    return out


def test_native_repository_matches_manifest(native_repo, tiny_bundle):
    pytest.importorskip("tritonclient.grpc", reason="needs tritonclient[all] for Triton's protobuf definitions")
    from tritonclient.grpc import model_config_pb2 as pb

    from export.triton import triton_dims

    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    cfgs = _configs(native_repo)
    assert set(cfgs) == {"pvlm_encoder", "pvlm_decoder", "pvlm_describer"}
    dtypes = {"float32": pb.TYPE_FP32, "int64": pb.TYPE_INT64}
    for model, graph in (("pvlm_encoder", "encoder"), ("pvlm_decoder", "decoder")):
        cfg, spec = cfgs[model], manifest["graphs"][graph]
        assert cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == 0
        for section, entries in ((cfg.input, spec["inputs"]), (cfg.output, spec["outputs"])):
            assert [t.name for t in section] == list(entries)
            for t in section:
                assert t.data_type == dtypes[entries[t.name]["dtype"]], t.name
                assert list(t.dims) == triton_dims(entries[t.name]["shape"]), t.name
                assert list(t.dims).count(-1) == sum(isinstance(d, str) for d in entries[t.name]["shape"])
        assert [(g.count, g.kind) for g in cfg.instance_group] == [(2, pb.ModelInstanceGroup.KIND_GPU)]
        onnx_file = native_repo / model / "1" / "model.onnx"
        digest = hashlib.sha256(onnx_file.read_bytes()).hexdigest()
        assert digest == manifest["artifacts"][spec["file"]]["sha256"]
    # the decoder's KV cache is explicit: in and out, batch on axis 1, dynamic cache length
    dec = {t.name: list(t.dims) for t in cfgs["pvlm_decoder"].input}
    assert dec["cache_k"][1] == -1 and dec["cache_k"][3] == -1 and {"cache_k", "cache_v"} <= set(dec)
    assert {t.name for t in cfgs["pvlm_decoder"].output} >= {"next_ids", "new_k", "new_v"}

    desc = cfgs["pvlm_describer"]
    assert desc.backend == "python" and desc.max_batch_size == 8
    assert desc.dynamic_batching.max_queue_delay_microseconds == 50_000
    inputs = {t.name: t for t in desc.input}
    assert inputs["IMAGE"].data_type == pb.TYPE_UINT8 and list(inputs["IMAGE"].dims) == [-1]
    assert inputs["IMAGE"].allow_ragged_batch and inputs["IMAGE"].optional
    assert list(inputs["RAW"].dims) == [-1, -1, 3]
    assert {t.name: (t.data_type, list(t.dims)) for t in desc.output} == {
        "TEXT": (pb.TYPE_STRING, [1]), "ATTRIBUTES": (pb.TYPE_STRING, [1]), "ALTERNATIVES": (pb.TYPE_STRING, [1])}
    assert desc.parameters["encoder_model"].string_value == "pvlm_encoder"
    assert desc.parameters["decoder_model"].string_value == "pvlm_decoder"
    version = native_repo / "pvlm_describer" / "1"
    assert (version / "model.py").is_file() and (version / "manifest.json").is_file()
    assert (version / "runtime" / "describer.py").is_file()
    assert (version / "runtime" / "backends" / "triton_bls.py").is_file()
    assert not list(version.rglob("__pycache__"))


def test_native_onnx_files_agree_with_configs(native_repo):
    """What ONNX Runtime reads from model.onnx is what config.pbtxt declares (names, element types, ranks)."""
    pytest.importorskip("tritonclient.grpc")
    import onnxruntime as ort
    from tritonclient.grpc import model_config_pb2 as pb

    ort_types = {"tensor(float)": pb.TYPE_FP32, "tensor(int64)": pb.TYPE_INT64}
    for model, cfg in _configs(native_repo).items():
        if model == "pvlm_describer":
            continue
        sess = ort.InferenceSession(str(native_repo / model / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
        for declared, actual in ((cfg.input, sess.get_inputs()), (cfg.output, sess.get_outputs())):
            assert [t.name for t in declared] == [a.name for a in actual]
            for t, a in zip(declared, actual):
                assert t.data_type == ort_types[a.type] and len(t.dims) == len(a.shape), t.name


def test_python_flavor_layout(python_repo, lively_bundle):
    pytest.importorskip("tritonclient.grpc")
    cfgs = _configs(python_repo)
    for model, graph in (("pvlm_encoder", "encoder"), ("pvlm_decoder", "decoder")):
        assert cfgs[model].backend == "python" and cfgs[model].max_batch_size == 0
        version = python_repo / model / "1"
        assert (version / "model.py").is_file()
        onnx_name = cfgs[model].parameters["onnx_file"].string_value
        assert (version / onnx_name).read_bytes() == (lively_bundle / f"{graph}.onnx").read_bytes()


def test_tensorrt_plans_used_when_listed(tiny_bundle, tmp_path):
    pytest.importorskip("tritonclient.grpc")
    from export.manifest import artifact_entry, write_manifest
    from export.triton import write_triton_repo
    from runtime.bundle import Bundle
    from runtime.engines import Engine

    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    plans = []
    for graph in ("encoder", "decoder"):
        (bundle / f"{graph}.plan").write_bytes(b"not really an engine")  # only copied, never parsed
        entry = artifact_entry(bundle, f"{graph}.plan")
        plans.append(Engine("tensorrt-plan", graph, f"{graph}.plan", "fp16", entry["sha256"], entry["bytes"],
                            {"tensorrt": "10.x", "gpu": "test"}))
    manifest = Bundle.load(bundle).manifest
    write_manifest(bundle, manifest.with_artifacts({e.file: {"sha256": e.sha256, "bytes": e.bytes} for e in plans})
                   .with_engines(plans))
    gpu = _configs(write_triton_repo(bundle, tmp_path / "gpu", kind="gpu"))
    assert gpu["pvlm_encoder"].platform == gpu["pvlm_decoder"].platform == "tensorrt_plan"
    assert (tmp_path / "gpu" / "pvlm_encoder" / "1" / "model.plan").read_bytes() == b"not really an engine"
    cpu = _configs(write_triton_repo(bundle, tmp_path / "cpu", kind="cpu"))  # engines cannot run on CPU
    assert cpu["pvlm_encoder"].platform == "onnxruntime_onnx"


def test_tensorrt_plans_of_one_precision_for_both_graphs(tiny_bundle, tmp_path):
    from export.manifest import artifact_entry
    from export.triton import write_triton_repo
    from runtime.engines import Engine

    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    for graph, precision in (("encoder", "fp16"), ("encoder", "fp32"), ("decoder", "fp32")):
        file = f"{graph}.{precision}.plan"
        (bundle / file).write_bytes(f"{precision} plan".encode())
        manifest["artifacts"][file] = artifact_entry(bundle, file)
        manifest["engines"].append(Engine("tensorrt-plan", graph, file, precision, **artifact_entry(bundle, file),
                                          target={"tensorrt": "10.x", "gpu": "test"}).to_dict())
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))
    repo = write_triton_repo(bundle, tmp_path / "gpu", kind="gpu")  # FP16 lacks a decoder plan: FP32 for both
    for model in ("pvlm_encoder", "pvlm_decoder"):
        assert (repo / model / "1" / "model.plan").read_bytes() == b"fp32 plan"


def test_write_errors_and_atomicity(tiny_bundle, tmp_path, monkeypatch):
    from export import triton as tr
    from runtime.bundle import BundleError

    with pytest.raises(BundleError, match="does not exist"):
        tr.write_triton_repo(tmp_path / "missing", tmp_path / "repo")
    with pytest.raises(ValueError, match=r"max_batch must be in \[1, 8\]"):
        tr.write_triton_repo(tiny_bundle, tmp_path / "repo", max_batch=9)
    with pytest.raises(ValueError, match="flavor"):
        tr.write_triton_repo(tiny_bundle, tmp_path / "repo", flavor="tensorflow")
    repo = tr.write_triton_repo(tiny_bundle, tmp_path / "repo", queue_delay_ms=5)
    with pytest.raises(FileExistsError, match="--force"):
        tr.write_triton_repo(tiny_bundle, repo)
    before = (repo / "pvlm_describer" / "config.pbtxt").read_text()

    def boom(*_a, **_k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(tr, "_write_describer", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        tr.write_triton_repo(tiny_bundle, repo, force=True)
    assert (repo / "pvlm_describer" / "config.pbtxt").read_text() == before  # old repository untouched
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp dir left behind


def test_cli(tiny_bundle, tmp_path):
    from export.cli import main

    runner = CliRunner()
    out = tmp_path / "repo"
    res = runner.invoke(main, ["triton", str(tiny_bundle), "--out", str(out), "--flavor", "python",
                               "--max-batch", "4", "--queue-delay-ms", "20", "--instances", "2"])
    assert res.exit_code == 0, res.output
    text = (out / "pvlm_describer" / "config.pbtxt").read_text()
    assert "max_batch_size: 4" in text and "max_queue_delay_microseconds: 20000" in text and "count: 2" in text
    res = runner.invoke(main, ["triton", str(tiny_bundle), "--out", str(out)])
    assert res.exit_code == 2 and "error:" in res.output and "--force" in res.output
    assert runner.invoke(main, ["triton", str(tiny_bundle), "--out", str(out), "--force"]).exit_code == 0
    res = runner.invoke(main, ["triton", str(tmp_path / "nope"), "--out", str(tmp_path / "r2")])
    assert res.exit_code == 2 and "does not exist" in res.output


# --------------------------------------------------------------------------- the BLS backend without a server


class _FakePbUtils:
    """Just enough of ``triton_python_backend_utils`` for BLS calls, routed to ONNX Runtime sessions."""

    class Tensor:
        def __init__(self, name: str, array: np.ndarray):
            self._name, self._array = name, array

        def name(self) -> str:
            return self._name

        def as_numpy(self) -> np.ndarray:
            return self._array

    class _Response:
        def __init__(self, outputs: dict, error: str | None = None):
            self.outputs, self._error = outputs, error

        def has_error(self) -> bool:
            return self._error is not None

        def error(self):
            msg = self._error

            class E:
                def message(self) -> str:
                    return msg

            return E()

    def __init__(self, sessions: dict):
        self.sessions, self.calls = sessions, []
        fake = self

        class InferenceRequest:
            def __init__(self, model_name, requested_output_names, inputs, **_):
                self.model, self.names, self.inputs = model_name, requested_output_names, inputs

            def exec(self):
                fake.calls.append((self.model, {t.name(): t.as_numpy().shape for t in self.inputs}))
                if self.model not in fake.sessions:
                    return fake._Response({}, f"model {self.model} is not loaded")
                values = fake.sessions[self.model].run(self.names, {t.name(): t.as_numpy() for t in self.inputs})
                return fake._Response(dict(zip(self.names, values)))

        self.InferenceRequest = InferenceRequest

    def get_output_tensor_by_name(self, response, name):
        return self.Tensor(name, response.outputs[name]) if name in response.outputs else None


def test_bls_backend_drives_the_shared_greedy_loop(lively_bundle):
    import onnxruntime as ort
    from PIL import Image

    from runtime import Describer
    from runtime.backends.triton_bls import BlsError, TritonBlsBackend
    from runtime.describer import greedy_decode

    local = Describer(lively_bundle, backend="onnxruntime-cpu")
    pixels = np.stack([local.preprocess(Image.open(io.BytesIO(b))) for b in make_images(8, seed=1)])
    want, _ = local.generate_ids(pixels)
    sessions = {"pvlm_encoder": ort.InferenceSession(str(lively_bundle / "encoder.onnx")),
                "pvlm_decoder": ort.InferenceSession(str(lively_bundle / "decoder.onnx"))}
    fake = _FakePbUtils(sessions)
    backend = TritonBlsBackend(local.bundle.model_config, pb_utils=fake)
    got, _ = greedy_decode(backend, pixels, local.bundle.special["bos"], local.bundle.special["eos"], 24)
    assert got == want
    lengths = sorted(len(r) for r in want)
    assert lengths[0] < lengths[-1], "rows should finish at different steps"
    batches = [shape["tokens"][0] for model, shape in fake.calls if model == "pvlm_decoder"]
    assert batches[0] == 8 and batches[-1] < 8 and batches == sorted(batches, reverse=True)  # finished rows dropped
    with pytest.raises(BlsError, match="pvlm_nope: model pvlm_nope is not loaded"):
        TritonBlsBackend(local.bundle.model_config, encoder_model="pvlm_nope", pb_utils=fake).encode(pixels, 24)


def test_describer_around_the_bls_backend(lively_bundle):
    """The describer model's set-up: a Describer given the BLS backend says what the local one says."""
    import onnxruntime as ort
    from PIL import Image

    from runtime import Describer
    from runtime.backends import BackendClosed
    from runtime.backends.triton_bls import TritonBlsBackend
    from runtime.bundle import Bundle

    images = [Image.open(io.BytesIO(b)) for b in make_images(8, seed=1)]
    want = [(d.text, d.attributes) for d in Describer(lively_bundle, backend="onnxruntime-cpu").describe(images)]
    sessions = {"pvlm_encoder": ort.InferenceSession(str(lively_bundle / "encoder.onnx")),
                "pvlm_decoder": ort.InferenceSession(str(lively_bundle / "decoder.onnx"))}
    bundle = Bundle.load(lively_bundle, verify=False)
    with Describer(bundle, TritonBlsBackend(bundle.model_config, pb_utils=_FakePbUtils(sessions)), max_batch=5) as d:
        assert [(x.text, x.attributes) for x in d.describe(images)] == want
    with pytest.raises(BackendClosed, match="the triton-bls backend is closed"):
        d.describe(images[:1])


def test_bls_backend_beam_search_and_sampling(lively_bundle):
    """Beam search and sampling over BLS (the decoder model's logits) say what the local portable decoder says."""
    import onnxruntime as ort
    from PIL import Image

    from runtime import Describer
    from runtime.backends.triton_bls import TritonBlsBackend
    from runtime.bundle import Bundle
    from runtime.decoding import DecodingOptions

    images = [Image.open(io.BytesIO(b)) for b in make_images(6, seed=2)]
    sessions = {"pvlm_encoder": ort.InferenceSession(str(lively_bundle / "encoder.onnx")),
                "pvlm_decoder": ort.InferenceSession(str(lively_bundle / "decoder.onnx"))}
    bundle = Bundle.load(lively_bundle, verify=False)
    fake = _FakePbUtils(sessions)
    with Describer(lively_bundle, backend="onnxruntime-cpu", decoder="portable") as local, \
            Describer(bundle, TritonBlsBackend(bundle.model_config, pb_utils=fake), max_batch=4) as bls:
        for opts in (DecodingOptions(beams=3, n_best=2), DecodingOptions(sample=True, n_best=2, seed=3)):
            want = [[(a.text, a.score) for a in d.alternatives] for d in local.describe(images, decoding=opts)]
            got = [[(a.text, a.score) for a in d.alternatives] for d in bls.describe(images, decoding=opts)]
            assert [[t for t, _ in x] for x in got] == [[t for t, _ in x] for x in want] and len(got[0]) == 2
            np.testing.assert_allclose([[s for _, s in x] for x in got], [[s for _, s in x] for x in want], rtol=1e-6)
    assert any(model == "pvlm_decoder" and shape["tokens"][0] == 12 for model, shape in fake.calls)  # 4 images x 3 beams


# --------------------------------------------------------------------------- a real tritonserver


def test_concurrent_requests_match_local_describer_and_batch(server, images, expected):
    import tritonclient.http as httpclient

    from runtime import parse_attributes

    garbage = {5: b"this is not an image", 13: b"\x89PNG\r\n\x1a\n truncated"}
    payloads = [garbage.get(i, img) for i, img in enumerate(images)]
    load = load_with_clients(lambda: _grpc_client(server), _describe, payloads, threads=8, budget_s=120)
    assert set(load["errors"]) == set(garbage), load["errors"]  # bad requests fail alone, not their batch
    assert all("not a readable image" in msg for msg in load["errors"].values()), load["errors"]
    for i, res in enumerate(load["results"]):
        if i not in garbage:
            text, attrs = res
            assert text == expected[i], f"image {i}"
            assert attrs == json.loads(json.dumps(parse_attributes(text)))
    with httpclient.InferenceServerClient(f"127.0.0.1:{server.http}") as c:
        stats = c.get_inference_statistics("pvlm_describer")["model_stats"][0]
    sizes = {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats["batch_stats"]}
    print(f"pvlm_describer executions by batch size: {dict(sorted(sizes.items()))}")
    assert max(sizes) > 1, f"no execution had more than one request: {sizes}"
    assert sum(sizes.values()) < int(stats["inference_count"])  # fewer executions than requests


def test_raw_pixels_and_multi_image_requests(server, lively_bundle):
    import tritonclient.grpc as grpcclient

    from runtime import Describer

    rng = np.random.default_rng(7)
    raw = rng.integers(0, 256, (2, 90, 45, 3), dtype=np.uint8)
    want = [r.text for r in Describer(lively_bundle, backend="onnxruntime-cpu").describe(list(raw), channel_order="rgb")]
    inp = grpcclient.InferInput("RAW", list(raw.shape), "UINT8")
    inp.set_data_from_numpy(raw)
    with _grpc_client(server) as c:
        res = c.infer("pvlm_describer", [inp], client_timeout=60)
    assert [t.decode() for t in res.as_numpy("TEXT")[:, 0]] == want


def test_malformed_requests_get_clear_errors_and_server_keeps_serving(server, images, expected):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    from runtime.serving.server import MAX_IMAGE_BYTES

    def fails(inputs: list) -> str:
        with pytest.raises(InferenceServerException) as info:
            c.infer("pvlm_describer", inputs, client_timeout=60)
        return str(info.value)

    with _grpc_client(server) as c:
        message = fails([_image_input(b"GIF89a but not really")])
        assert "not a readable image" in message and "INVALID_ARGUMENT" in message  # the client's fault, not ours
        assert "FP32" in fails([_image_input(images[0], dtype="FP32")])
        empty = grpcclient.InferInput("IMAGE", [1, 0], "UINT8")
        empty.set_data_from_numpy(np.zeros((1, 0), np.uint8))
        assert "empty" in fails([empty]).lower()
        big = images[0] + bytes(MAX_IMAGE_BYTES)  # a valid JPEG header followed by 20 MiB
        assert f"{MAX_IMAGE_BYTES} byte limit" in fails([_image_input(big)])
        raw = grpcclient.InferInput("RAW", [1, 4, 4, 3], "UINT8")
        raw.set_data_from_numpy(np.zeros((1, 4, 4, 3), np.uint8))
        assert "exactly one of IMAGE" in fails([_image_input(images[0]), raw])
        assert _describe(c, images[1])[0] == expected[1]  # still serving, still right
        assert c.is_server_live() and c.is_model_ready("pvlm_describer")


def _local_alternatives(bundle: Path, images: list[bytes], opts) -> list[list[str]]:
    """Every returned sequence of the local Describer, per image of one request (its index within the request)."""
    from PIL import Image

    from runtime import Describer

    with Describer(bundle, backend="onnxruntime-cpu") as d:
        return [[a.text for a in x.alternatives] for x in d.describe([Image.open(io.BytesIO(b)) for b in images],
                                                                     decoding=opts)]


def test_decoding_per_request(server, images, expected, lively_bundle):
    """Request parameters choose beam search or sampling per request; others keep greedy; bad ones: INVALID_ARG."""
    from tritonclient.utils import InferenceServerException

    from runtime.decoding import DecodingOptions

    beams, sample = DecodingOptions(beams=3, n_best=2), DecodingOptions.parse("original", n_best=2, seed=5)
    want_beams = _local_alternatives(lively_bundle, images[:6], beams)
    want_sample = [_local_alternatives(lively_bundle, [img], sample)[0] for img in images[:6]]  # index 0 each

    def call(client, i: int):
        params = [{"beams": 3, "n_best": 2}, {"decoding": "original", "n_best": "2", "seed": 5}, {}][i % 3]
        res = client.infer("pvlm_describer", [_image_input(images[i])], parameters=params, client_timeout=60)
        return res.as_numpy("TEXT")[0, 0].decode(), json.loads(res.as_numpy("ALTERNATIVES")[0, 0])

    load = load_with_clients(lambda: _grpc_client(server), call, list(range(6)), threads=6, budget_s=120)
    assert not load["errors"], load["errors"]
    for i, (text, alts) in enumerate(load["results"]):
        want = [want_beams[i], want_sample[i], [expected[i]]][i % 3]
        assert [a["text"] for a in alts] == want and text == want[0], i
        assert (alts[0]["score"] is None) == (i % 3 == 2)
    with _grpc_client(server) as c:
        for bad, msg in (({"beams": 0}, "beams must be an integer >= 1"), ({"top_p": "1.5", "sample": True},
                         "top_p must be in (0, 1]"), ({"beams": 64}, "at most 16")):
            with pytest.raises(InferenceServerException) as info:
                c.infer("pvlm_describer", [_image_input(images[0])], parameters=bad, client_timeout=60)
            assert msg in str(info.value) and "INVALID_ARGUMENT" in str(info.value)
        assert _describe(c, images[1])[0] == expected[1]


def test_load_nothing_lost(server, images, expected):
    check_load_nothing_lost(lambda: _grpc_client(server), _describe, images, expected,
                            "tritonserver python-flavor repository")
