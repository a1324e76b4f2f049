"""``runtime.Describer`` against the PyTorch reference: tokens, text, batching, early EOS, threads, bundle checks,
and the lifecycle (close, ``with``, a ready backend)."""

from __future__ import annotations

import copy
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from runtime.decoding import DecodingOptions

MAX_NEW = 24
# The reference (pvlm.generate) has no repetition guard; the random-weight tiny model loops, so parity runs without it.
UNGUARDED = DecodingOptions(no_repeat_ngram_size=0)
SIZES = ((96, 48), (128, 64), (80, 40), (64, 32))


# --------------------------------------------------------------------------- fixtures


def make_crops(n: int, seed: int) -> list:
    """``n`` synthetic PIL person crops of assorted sizes (none at the model's own input size only)."""
    from pvlm.synth import render_person, sample_attributes

    rng = np.random.default_rng(seed)
    return [render_person(sample_attributes(rng), rng, size=SIZES[i % len(SIZES)]) for i in range(n)]


def reference(model, images, max_new_tokens: int = MAX_NEW) -> list[list[int]]:
    """pvlm.generate on pvlm.data.preprocess, trimmed at EOS."""
    import pvlm
    from pvlm.data import preprocess

    pixels = torch.stack([preprocess(im, model.cfg) for im in images])
    return [pvlm.trim(row) for row in pvlm.generate(model, pixels, max_new_tokens=max_new_tokens)]


@pytest.fixture(scope="module")
def loaded(tiny_checkpoint):
    import pvlm

    model, vocab, _ = pvlm.load_checkpoint(tiny_checkpoint)
    return model.eval(), vocab


@pytest.fixture(scope="module")
def crops() -> list:
    return make_crops(12, seed=5)


@pytest.fixture(scope="module")
def describer(tiny_bundle):
    from runtime import Describer

    return Describer(tiny_bundle, backend="onnxruntime-cpu", decoding=UNGUARDED)


@pytest.fixture(scope="module")
def ref_ids(loaded, crops):
    return reference(loaded[0], crops)


def _eos_and_best_other(model, pixels, steps: int):
    """Along the greedy path that never picks EOS: EOS logit E and the best other logit M, each (B, steps)."""
    b = pixels.shape[0]
    with torch.no_grad():
        ck, cv = model.cross_kv(model.encode_image(pixels))
        cache_k, cache_v = model.empty_cache(b, steps)
        tok = torch.full((b, 1), model.cfg.bos_id)
        E, M = [], []
        for t in range(steps):
            logits, k, v = model.decode_step(tok, torch.full((b, 1), t), ck, cv, cache_k, cache_v)
            cache_k[:, :, :, t], cache_v[:, :, :, t] = k[:, :, :, 0], v[:, :, :, 0]
            E.append(logits[:, model.cfg.eos_id].clone().numpy())
            logits[:, model.cfg.eos_id] = -torch.inf
            best, nxt = logits.max(-1)
            M.append(best.numpy())
            tok = nxt[:, None]
    return np.stack(E, 1), np.stack(M, 1)


def _lengths(E, M, s: float):
    """Generated lengths when the EOS embedding (tied head row) is scaled by ``s``; and the smallest margin."""
    win = s * E > M
    L = np.where(win.any(1), win.argmax(1), E.shape[1])
    margin = min(np.abs(s * E[i, :L[i] + 1] - M[i, :L[i] + 1]).min() for i in range(len(L)))
    return L, float(margin)


@pytest.fixture(scope="module")
def eos_setup(loaded, crops, tmp_path_factory):
    """A derived model whose rows finish at different, image-dependent lengths, exported to its own bundle.

    The random-init projector output is dominated by its image-independent position embedding, so the
    projector MLP is scaled up (images then matter), and the EOS row of the tied embedding is scaled by a
    factor picked so that EOS wins at different steps for different crops, with a clear logit margin.
    """
    import pvlm
    from export import export_onnx
    from pvlm.data import preprocess

    base, vocab = loaded
    pixels = torch.stack([preprocess(im, base.cfg) for im in crops])
    chosen = None
    for amp in (30.0, 100.0, 300.0):
        m = copy.deepcopy(base)
        with torch.no_grad():
            m.projector.mlp[0].weight *= amp**0.5
            m.projector.mlp[3].weight *= amp**0.5
        E, M = _eos_and_best_other(m, pixels, MAX_NEW)
        for s in np.linspace(1.5, 60.0, 1171):
            L, margin = _lengths(E, M, s)
            if margin < 5e-3 or L.min() >= MAX_NEW:
                continue
            if all(L[i:i + 5].max() >= MAX_NEW for i in range(0, len(L), 5)):
                continue  # the tests below need a chunk of 5 (max_batch) that stops before the limit
            # most distinct lengths; then prefer having rows that never finish
            key = (len(set(L.tolist())), int((L == MAX_NEW).any()))
            if chosen is None or key > chosen[0]:
                chosen = (key, m, s, L)
    assert chosen is not None and chosen[0][0] >= 3, "could not derive a model whose rows finish at different lengths"
    _, model, scale, predicted = chosen
    with torch.no_grad():
        model.tok_emb.weight[model.cfg.eos_id] *= scale
    ref = reference(model, crops)
    assert [len(r) for r in ref] == predicted.tolist()
    ckpt = pvlm.save_checkpoint(tmp_path_factory.mktemp("eos") / "eos.pt", model, vocab, {"note": "eos-biased"})
    # parity for this model is checked by the tests below (and more cheaply by test_export_parity_with_early_eos)
    bundle = export_onnx(ckpt, ckpt.with_suffix(""), max_batch=8, max_new_tokens=MAX_NEW, verify=False)
    return bundle, model, ref


# --------------------------------------------------------------------------- parity with pvlm.generate


def test_batched_matches_reference_in_order(describer, crops, ref_ids, loaded):
    vocab = loaded[1]
    out = describer.describe(crops)
    assert len(out) == len(crops)
    assert [d.tokens for d in out] == ref_ids
    for d in out:
        assert d.ok and d.error is None
        assert d.text == vocab.decode(d.tokens)
        assert all(isinstance(t, int) for t in d.tokens)
    # max_batch 8: 12 inputs run as a batch of 8 then a batch of 4
    assert [d.timings["batch"] for d in out] == [8] * 8 + [4] * 4
    assert describer.backend_name == "onnxruntime-cpu"


def test_default_guard_ends_a_looping_row(describer, tiny_bundle, crops, ref_ids):
    """The default repetition guard ends a row where it would repeat a 10-gram; up to there it is the reference."""
    from runtime import Describer
    from runtime.decoding import DEFAULT_NO_REPEAT_NGRAM, banned_tokens

    assert DEFAULT_NO_REPEAT_NGRAM == 10
    looping = [i for i, r in enumerate(ref_ids) if any(r[j] in banned_tokens(r[:j], 10) for j in range(len(r)))]
    assert looping, "the random tiny model should repeat itself"
    with Describer(tiny_bundle, backend="onnxruntime-cpu") as guarded:
        out = guarded.describe([crops[i] for i in looping])
    for i, d in zip(looping, out):
        ref = ref_ids[i]
        cut = next(j for j in range(len(ref)) if ref[j] in banned_tokens(ref[:j], 10))
        assert d.tokens == ref[:cut] and cut < len(ref)


def test_batch_of_one_matches_reference(tiny_bundle, crops, ref_ids):
    from runtime import Describer

    d1 = Describer(tiny_bundle, backend="onnxruntime-cpu", max_batch=1, decoding=UNGUARDED)
    out = d1.describe(crops)
    assert [d.tokens for d in out] == ref_ids
    assert {d.timings["batch"] for d in out} == {1}
    # and one at a time through single-input calls
    singles = [d1.describe(x) for x in crops[:3]]
    assert [len(s) for s in singles] == [1, 1, 1]
    assert [s[0].tokens for s in singles] == ref_ids[:3]


@pytest.mark.parametrize("n", [1, 5])
def test_max_new_tokens_override(describer, crops, loaded, n):
    """Per-call limits, including a one-slot cache (the exporter's example used two)."""
    out = describer.describe(crops[:5], max_new_tokens=n)
    assert [d.tokens for d in out] == reference(loaded[0], crops[:5], max_new_tokens=n)
    assert all(len(d.tokens) <= n for d in out)


@pytest.mark.parametrize("n", [0, 65])
def test_max_new_tokens_out_of_range_is_a_clear_error(describer, crops, n):
    """Beyond the model's position table (64) the decoder would fail deep inside ONNX Runtime after 64 steps."""
    with pytest.raises(ValueError, match=r"max_new_tokens must be in \[1, 64\]"):
        describer.describe(crops[:2], max_new_tokens=n)
    with pytest.raises(ValueError, match="max_new_tokens"):
        describer.generate_ids(np.zeros((1, 3, 64, 32), np.float32), max_new_tokens=n)


@pytest.mark.parametrize("decoder", ["auto", "portable"])
def test_rows_finishing_early(eos_setup, crops, decoder):
    from pvlm import Vocabulary
    from runtime import Describer

    bundle, _, ref = eos_setup
    lengths = [len(r) for r in ref]
    assert len(set(lengths)) >= 2 and min(lengths) < MAX_NEW
    d = Describer(bundle, backend="onnxruntime-cpu", max_batch=5, decoder=decoder, decoding=UNGUARDED)
    assert d.backend.decoder_graph == ("decoder_ort" if decoder == "auto" else "decoder")
    out = d.describe(crops)
    assert [x.tokens for x in out] == ref
    vocab = Vocabulary(d.bundle.tokens)
    assert [x.text for x in out] == [vocab.decode(r) for r in ref]
    # chunks of 5, 5, 2; each stops one step after its longest row emits EOS (or at the limit)
    chunk_steps = []
    for start in range(0, len(crops), 5):
        chunk = out[start:start + 5]
        want_steps = min(MAX_NEW, max(lengths[start:start + 5]) + 1)
        assert {x.timings["steps"] for x in chunk} == {want_steps}
        assert {x.timings["batch"] for x in chunk} == {len(chunk)}
        chunk_steps.append(want_steps)
    assert min(chunk_steps) < MAX_NEW, f"no chunk finished early: lengths {lengths}"


def test_rows_finishing_early_batch_of_one(eos_setup, crops):
    from runtime import Describer

    bundle, _, ref = eos_setup
    out = Describer(bundle, backend="onnxruntime-cpu", max_batch=1, decoding=UNGUARDED).describe(crops)
    assert [x.tokens for x in out] == ref
    assert [x.timings["steps"] for x in out] == [min(MAX_NEW, len(r) + 1) for r in ref]


def test_export_parity_with_early_eos(eos_setup):
    """export.validate.check_parity on a model whose rows stop early (finished rows leave the comparison)."""
    from export.validate import check_parity

    bundle, model, _ = eos_setup
    rep, failures = check_parity(model, bundle / "encoder.onnx", bundle / "decoder.onnx", MAX_NEW, batches=(1, 5),
                                 ort_paths=(bundle / "cross_ort.onnx", bundle / "decoder_ort.onnx"))
    assert failures == []
    dec, ort_dec = rep.decoders["decoder"], rep.decoders["decoder_ort"]
    assert rep.images == 6 and dec.sequences_identical == 6 and dec.token_agreement == 1.0
    assert ort_dec.sequences_identical == 6 and ort_dec.logits_max_abs_diff < 1e-4
    assert dec.logits_max_abs_diff < 1e-4 and rep.encoder_max_abs_diff < 1e-4
    assert 0 < dec.steps_compared <= 2 * MAX_NEW


def test_generate_ids_fixed_work_matches_reference(eos_setup, crops):
    """stop_at_eos=False decodes every row to the limit, EOS included, as pvlm.generate does."""
    import pvlm
    from pvlm.data import preprocess
    from runtime import Describer

    bundle, model, _ = eos_setup
    d = Describer(bundle, backend="onnxruntime-cpu")
    pixels = torch.stack([preprocess(im, model.cfg) for im in crops[:6]])
    ids, timings = d.generate_ids(pixels.numpy(), stop_at_eos=False)
    ref = pvlm.generate(model, pixels, max_new_tokens=MAX_NEW, stop_at_eos=False).tolist()
    assert ids == ref
    assert timings["steps"] == MAX_NEW and all(len(r) == MAX_NEW for r in ids)
    with pytest.raises(ValueError, match="max_batch"):
        d.generate_ids(np.zeros((9, 3, 64, 32), np.float32))


# --------------------------------------------------------------------------- preprocessing parity


def _images_for_preprocess():
    from PIL import Image

    rng = np.random.default_rng(3)
    rgb = Image.fromarray(rng.integers(0, 256, (173, 59, 3), dtype=np.uint8), "RGB")
    gray = Image.fromarray(rng.integers(0, 256, (40, 90), dtype=np.uint8), "L")
    rgba = Image.fromarray(rng.integers(0, 256, (64, 32, 4), dtype=np.uint8), "RGBA")
    return {"rgb-173x59": rgb, "gray": gray, "rgba": rgba}


@pytest.mark.parametrize("kind", ["rgb-173x59", "gray", "rgba"])
def test_preprocess_matches_training_transform(describer, loaded, kind):
    from pvlm.data import preprocess

    img = _images_for_preprocess()[kind]
    got = describer.preprocess(img)
    want = preprocess(img, loaded[0].cfg).numpy()
    assert got.shape == want.shape == (3, 64, 32) and got.dtype == np.float32
    assert np.abs(got - want).max() < 1e-5


# --------------------------------------------------------------------------- attributes


def test_attributes_have_all_keys(describer, crops):
    from runtime.attribute_schema import ATTRIBUTE_KEYS
    from runtime.attributes import parse_attributes

    for d in describer.describe(crops[:4]):
        assert isinstance(d.attributes, dict)
        assert set(d.attributes) == set(ATTRIBUTE_KEYS)
        assert d.attributes == parse_attributes(d.text)


# --------------------------------------------------------------------------- thread safety


def test_concurrent_describe_equals_sequential(eos_setup):
    """One Describer shared by 4 threads, each describing its own list 3 times."""
    from runtime import Describer

    bundle = eos_setup[0]
    d = Describer(bundle, backend="onnxruntime-cpu", max_batch=3)
    pool = make_crops(16, seed=9)
    lists = [pool[i::4] + pool[:i] for i in range(4)]  # different contents and lengths per thread
    sequential = [[x.tokens for x in d.describe(lst)] for lst in lists]

    def work(i: int):
        return [[x.tokens for x in d.describe(lists[i])] for _ in range(3)]

    with ThreadPoolExecutor(max_workers=4) as ex:
        results = list(ex.map(work, range(4)))
    for i, runs in enumerate(results):
        assert runs == [sequential[i]] * 3


# --------------------------------------------------------------------------- bundle integrity



def test_copied_bundle_loads(bundle_copy):
    from runtime import Describer

    d = Describer(bundle_copy, backend="onnxruntime-cpu")
    assert d.describe(np.zeros((64, 32, 3), np.uint8), channel_order="rgb")[0].ok


def test_missing_decoder(bundle_copy):
    from runtime import BundleError, Describer

    (bundle_copy / "decoder.onnx").unlink()
    with pytest.raises(BundleError, match="decoder.onnx"):
        Describer(bundle_copy, backend="onnxruntime-cpu")


def test_flipped_byte_in_encoder(bundle_copy):
    from runtime import BundleError, Describer

    p = bundle_copy / "encoder.onnx"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256") as info:
        Describer(bundle_copy, backend="onnxruntime-cpu")
    assert "encoder.onnx" in str(info.value)


def test_unsupported_manifest_version(bundle_copy):
    from runtime import BundleError, Describer

    path = bundle_copy / "manifest.json"
    m = json.loads(path.read_text())
    m["version"] = 99
    path.write_text(json.dumps(m))
    with pytest.raises(BundleError, match="version") as info:
        Describer(bundle_copy, backend="onnxruntime-cpu")
    assert "99" in str(info.value)


def test_no_manifest(bundle_copy):
    from runtime import BundleError, Describer

    (bundle_copy / "manifest.json").unlink()
    with pytest.raises(BundleError, match="manifest"):
        Describer(bundle_copy, backend="onnxruntime-cpu")


def test_corrupt_manifest_and_wrong_format(bundle_copy):
    from runtime import BundleError, Describer

    path = bundle_copy / "manifest.json"
    good = json.loads(path.read_text())
    path.write_text("{not json")
    with pytest.raises(BundleError, match="corrupt"):
        Describer(bundle_copy, backend="onnxruntime-cpu")
    path.write_text(json.dumps({**good, "format": "something-else"}))
    with pytest.raises(BundleError, match="format"):
        Describer(bundle_copy, backend="onnxruntime-cpu")


def test_nonexistent_bundle_dir(tmp_path):
    from runtime import BundleError, Describer

    with pytest.raises(BundleError, match="does not exist"):
        Describer(tmp_path / "nowhere", backend="onnxruntime-cpu")


@pytest.mark.parametrize("kwargs,match", [
    ({"backend": "no-such-backend"}, "unknown backend"),
    ({"max_new_tokens": 65}, "max_new_tokens"),
    ({"max_new_tokens": 0}, "max_new_tokens"),
    ({"max_batch": 0}, "max_batch"),
    ({"max_batch": 9}, "max_batch"),
    ({"channel_order": "rgba"}, "channel_order"),
    ({"on_error": "ignore"}, "on_error"),
])
def test_bad_describer_options(tiny_bundle, kwargs, match):
    from runtime import Describer

    kwargs = {"backend": "onnxruntime-cpu", **kwargs}
    with pytest.raises(ValueError, match=match):
        Describer(tiny_bundle, **kwargs)


# --------------------------------------------------------------------------- lifecycle: close, with, a ready backend


@pytest.mark.parametrize("decoder", ["auto", "portable"])
def test_with_describer_closes_its_backend(tiny_bundle, crops, decoder):
    from runtime import Describer
    from runtime.backends import BackendClosed

    with Describer(tiny_bundle, backend="onnxruntime-cpu", decoder=decoder) as d:
        assert d.describe(crops[:2])[0].ok
    assert d.backend.closed
    with pytest.raises(BackendClosed, match="the onnxruntime-cpu backend is closed"):
        d.describe(crops[:1])
    d.close()  # closing twice is harmless


@pytest.mark.parametrize("decoder", ["ort", "portable"])
def test_closed_backend_refuses_every_call(describer, crops, decoder):
    from runtime.backends import BackendClosed, create_backend

    pixels = np.stack([describer.preprocess(c) for c in crops[:3]])
    tokens = np.full((3, 1), describer.bundle.special["bos"], np.int64)
    with create_backend("onnxruntime-cpu", describer.bundle, decoder=decoder) as backend:
        assert backend.decoder_graph == {"ort": "decoder_ort", "portable": "decoder"}[decoder]
        state = backend.encode(pixels, 4)
        assert backend.step(state, tokens, 0).shape == (3,)
    assert backend.closed
    for call in (lambda: backend.step(state, tokens, 1), lambda: backend.keep(state, np.array([0, 2])),
                 lambda: backend.encode(pixels, 4)):
        with pytest.raises(BackendClosed, match="the onnxruntime-cpu backend is closed"):
            call()


def test_describer_around_a_ready_backend(tiny_bundle, describer, crops):
    from runtime import Describer
    from runtime.backends import create_backend
    from runtime.bundle import Bundle

    bundle = Bundle.load(tiny_bundle)
    backend = create_backend("onnxruntime-cpu", bundle, decoder="portable")
    with Describer(bundle, backend, max_batch=5, decoding=UNGUARDED) as d:
        assert d.backend is backend and d.backend_name == "onnxruntime-cpu"
        assert [x.tokens for x in d.describe(crops)] == [x.tokens for x in describer.describe(crops)]
    assert backend.closed  # the Describer closes the backend it was given
    with pytest.raises(ValueError, match="threads, decoder: options for building a backend"):
        Describer(bundle, create_backend("onnxruntime-cpu", bundle), threads=2, decoder="portable")
