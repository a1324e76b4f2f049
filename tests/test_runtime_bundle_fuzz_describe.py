"""End-to-end fuzzing (Hypothesis) of bundle manifests: load, then describe. Whatever ``Bundle.load`` accepts
must describe an image without an exception; whatever it refuses is one BundleError line. Half the mutated
manifests get their content hash recomputed, as a determined editor would, so the checks behind the hash
(schema, limits, graph contract, the ONNX files' own inputs and outputs) are what is fuzzed. Derandomised."""

from __future__ import annotations

import copy
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis", reason="fuzzing needs hypothesis (pip install -e '.[dev]')")
pytest.importorskip("onnxruntime")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from PIL import Image  # noqa: E402

from runtime.bundle import MAX_BATCH, Bundle, BundleError, Manifest  # noqa: E402

EXAMPLES = 150
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])
OUTCOMES: Counter = Counter()

# Values near the bounds and the sizes of the tiny model, besides arbitrary JSON.
edge_ints = st.sampled_from([0, 1, 2, 3, 4, 8, 24, 31, 32, 63, 64, 65, 128, 255, 256, 257, 1024, 1025, MAX_BATCH,
                             MAX_BATCH + 1, 10**9, 10**12, 2**53 + 1, -1])
edge_floats = st.sampled_from([0.0, -0.0, 1e-3, 1e-4, 0.5, 1.0, 255.0, 1e3, 1e4, 1e300, -1e3, 1 / 255])
json_values = st.recursive(
    st.none() | st.booleans() | edge_ints | edge_floats | st.integers(-2**40, 2**40) | st.floats(allow_nan=False)
    | st.text(max_size=8) | st.sampled_from(["batch", "cache", "float32", "int64", "RGB", "stretch", "encoder.onnx"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=8)
# The sections the runtime computes with are drawn more often than the free-form ones.
SECTIONS = ["model"] * 4 + ["preprocess"] * 4 + ["limits"] * 3 + ["graphs"] * 3 + ["vocab", "special_tokens",
                                                                                      "artifacts", "verification",
                                                                                      "engines", "source", "format"]


def _like(value):
    """A replacement of the same JSON type most of the time (a size for a size), else anything."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return json_values
    same = edge_ints if isinstance(value, int) else edge_floats if isinstance(value, float) else st.text(max_size=8)
    return st.one_of(same, same, same, json_values)


@pytest.fixture(scope="module")
def fuzz_bundle(tiny_bundle, tmp_path_factory) -> Path:
    b = tmp_path_factory.mktemp("fuzz-describe") / "b"
    shutil.copytree(tiny_bundle, b)
    return b


@pytest.fixture(scope="module")
def crop(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("crop") / "crop.png"
    Image.new("RGB", (40, 90), (30, 90, 200)).save(path)
    return path


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, (*prefix, i))


def _mutate(good: dict, data) -> dict:
    """One or two nodes replaced (mostly by a value of the same JSON type) or deleted; the section is drawn first,
    so the small ones the runtime computes with are hit as often as the many graph entries."""
    paths = [p for p in _paths(good) if p and not (p[:2] == ("vocab", "tokens") and len(p) == 3 and p[2] > 8)]
    m = copy.deepcopy(good)
    for _ in range(data.draw(st.integers(1, 2))):
        section = data.draw(st.sampled_from([s for s in SECTIONS if s in good]))
        path = data.draw(st.sampled_from([p for p in paths if p[0] == section]))
        node = m
        try:
            for k in path[:-1]:
                node = node[k]
            if data.draw(st.integers(0, 5)) == 0 and isinstance(node, dict):
                del node[path[-1]]
            else:
                node[path[-1]] = data.draw(_like(node[path[-1]]))
        except (KeyError, IndexError, TypeError):  # the first mutation removed or replaced this path
            continue
    return m


def _reseal(m: dict) -> dict:
    try:
        return Manifest.from_dict(m).sealed().to_dict()
    except BundleError:
        return m  # not a manifest the schema accepts: load refuses it anyway


@FUZZ
@given(data=st.data())
def test_fuzz_what_load_accepts_describes(fuzz_bundle, tiny_bundle, crop, data):
    from runtime import Describer

    good = json.loads((tiny_bundle / "manifest.json").read_text())
    m = _mutate(good, data)
    if data.draw(st.booleans()):
        m = _reseal(m)
    (fuzz_bundle / "manifest.json").write_text(json.dumps(m))
    try:
        bundle = Bundle.load(fuzz_bundle, verify=True)
    except BundleError as e:
        assert "\n" not in str(e) and str(e)
        OUTCOMES["refused"] += 1
        return
    decoder = data.draw(st.sampled_from(["auto", "portable"]))
    with Describer(bundle, backend="onnxruntime-cpu", decoder=decoder) as d:
        out = d.describe([crop], max_new_tokens=min(4, bundle.limits.max_new_tokens))
    assert len(out) == 1 and out[0].ok and isinstance(out[0].text, str), out
    OUTCOMES["described"] += 1


def test_fuzz_describe_report():
    """Both outcomes occurred (run with -s for the counts): the fuzzing reached describe, not only refusals."""
    print(f"fuzz manifest -> describe: {dict(OUTCOMES)}")
    if OUTCOMES:
        assert OUTCOMES["described"] > 0 and OUTCOMES["refused"] > 0, OUTCOMES
        assert sum(OUTCOMES.values()) >= EXAMPLES
