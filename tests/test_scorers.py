"""udfs/scorers.py without Spark: the ONNX adapters on models the tests build, the contract checks, the cache.

Expected scores come from ``onnx_factory.Models``' numpy reference (the mean
colour of a uniformly coloured image, the vocabulary lookup), not from
udfs.scorers, so a preprocessing or pooling mistake shows up as a mismatch.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from onnx_factory import CLIP_MEAN, CLIP_STD, Models, build_models, image_encoder, text_encoder
from PIL import Image

from jobs.config import load_config
from jobs.errors import ConfigError
from udfs import scorers
from udfs.scorers import (
    ModelFile,
    OnnxClassifierSpec,
    OnnxClipSpec,
    OpenClipSpec,
    PluginSpec,
    ScorerError,
    ScorerOutputError,
)

WORDS = "a red car blue sky photo of the cat green field dog on grass".split()
COLOURS = [(200, 30, 30), (10, 200, 90), (128, 128, 128), (30, 60, 220), (240, 240, 20), (90, 10, 120), (5, 5, 5)]
CAPTIONS = ["a red car", "blue sky", "the cat photo", "a dog on grass", "green field", "unknown words here", "a"]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    return build_models(tmp_path_factory.mktemp("models"), WORDS)


def clip_spec(m: Models, **kw) -> OnnxClipSpec:
    return OnnxClipSpec(
        "t",
        ModelFile("score.clip_image_model", str(kw.pop("image", m.image))),
        ModelFile("score.clip_text_model", str(kw.pop("text", m.text))),
        ModelFile("score.clip_tokenizer", str(kw.pop("tokenizer", m.tokenizer))),
        **kw,
    )


def nsfw_spec(path: Path) -> OnnxClassifierSpec:
    return OnnxClassifierSpec("nsfw_score_t", ModelFile("score.nsfw_model", str(path)))


def jpeg(colour: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def decoded_mean(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float64).reshape(-1, 3).mean(axis=0)


# --- preprocessing ------------------------------------------------------------------------------


def test_preprocess_is_clip_normalised_nchw_at_the_model_size() -> None:
    imgs = [Image.new("RGB", (64, 48), (200, 30, 30)), Image.new("L", (30, 90), 128)]
    out = scorers.preprocess(imgs, 32, 24, "clip")
    assert out.shape == (2, 3, 32, 24) and out.dtype == np.float32
    expected = (np.array([200, 30, 30]) / 255.0 - CLIP_MEAN) / CLIP_STD
    np.testing.assert_allclose(out[0].mean(axis=(1, 2)), expected, atol=1e-5)
    np.testing.assert_allclose(out[1, :, 5, 5], (128 / 255.0 - CLIP_MEAN) / CLIP_STD, atol=1e-5)
    none = scorers.preprocess(imgs[:1], 8, 8, "none")
    np.testing.assert_allclose(none[0, :, 0, 0], np.array([200, 30, 30]) / 255.0, atol=1e-6)


def test_preprocess_centre_crops_what_does_not_fit() -> None:
    img = Image.new("RGB", (300, 100), (0, 0, 0))
    img.paste((255, 255, 255), (100, 0, 200, 100))  # the middle third is white
    out = scorers.preprocess([img], 10, 10, "none")
    assert out.shape == (1, 3, 10, 10)
    assert out[0, :, :, 2:8].min() > 0.99  # the crop is the white middle


# --- the ONNX adapters against the numpy reference -----------------------------------------------


def test_clip_and_classifier_match_the_reference(models: Models) -> None:
    data = [jpeg(c) for c in COLOURS]
    clip, nsfw = scorers.get_scorer(clip_spec(models)), scorers.get_scorer(nsfw_spec(models.nsfw))
    got = scorers.score_batch([("clip", clip), ("nsfw", nsfw)], data, CAPTIONS)
    assert got.failures == [None] * len(COLOURS)
    for i, blob in enumerate(data):
        mean = decoded_mean(blob)
        assert got.values["clip_similarity_t"][i] == pytest.approx(models.similarity(mean, CAPTIONS[i]), abs=2e-3)
        assert got.values["nsfw_score_t"][i] == pytest.approx(models.nsfw_score(mean), abs=2e-3)
    assert len(set(np.round(got.values["clip_similarity_t"], 3))) == len(COLOURS)  # the test can tell rows apart


def test_a_batch_scores_as_its_rows_do_alone(models: Models) -> None:
    clip = scorers.get_scorer(clip_spec(models))
    data = [jpeg(c, (40 + 9 * i, 90 - 7 * i)) for i, c in enumerate(COLOURS)]
    batch = scorers.score_batch([("clip", clip)], data, CAPTIONS).values["clip_similarity_t"]
    alone = [
        scorers.score_batch([("clip", clip)], [d], [c]).values["clip_similarity_t"][0]
        for d, c in zip(data, CAPTIONS, strict=True)
    ]
    np.testing.assert_allclose(batch, alone, atol=1e-6)


def test_scorer_is_built_once_per_process(models: Models) -> None:
    spec = nsfw_spec(models.nsfw)
    before = scorers.LOADS[spec.label]
    first = scorers.get_scorer(spec)
    assert scorers.get_scorer(spec) is first
    assert scorers.get_scorer(nsfw_spec(models.nsfw)) is first  # equal specs share the cache entry
    assert scorers.LOADS[spec.label] == max(before, 1)


# --- start-up errors: clear, naming the key, the model and the shapes ------------------------------


def test_missing_model_names_the_key(models: Models) -> None:
    with pytest.raises(ScorerError, match=r"score\.nsfw_model: model file not found: .*nope\.onnx"):
        scorers.probe(nsfw_spec(models.folder / "nope.onnx"))


def test_corrupt_model_names_the_key_and_the_file(models: Models) -> None:
    with pytest.raises(ScorerError, match=r"score\.nsfw_model: .*corrupt\.onnx is not a loadable ONNX model"):
        scorers.probe(nsfw_spec(models.corrupt))
    with pytest.raises(ScorerError, match=r"score\.clip_text_model: .*corrupt\.onnx is not a loadable"):
        scorers.probe(clip_spec(models, text=models.corrupt))


def test_wrong_output_shape_names_the_model_and_both_shapes(models: Models) -> None:
    with pytest.raises(ScorerOutputError) as info:
        scorers.probe(nsfw_spec(models.wrong_shape))
    message = str(info.value)
    assert "score.nsfw_model" in message and "nsfw-wrong-shape.onnx" in message
    assert "shape (2, 3)" in message and "expected (2,), (2, 1) or (2, 2)" in message


def test_clip_encoders_of_different_widths_are_refused(models: Models, tmp_path: Path) -> None:
    narrow = text_encoder(tmp_path / "text6.onnx", np.ones((len(models.vocab), 6)), models.length)
    with pytest.raises(ScorerOutputError, match=r"embeds in 8 dimensions but score\.clip_text_model .* in 6"):
        scorers.probe(clip_spec(models, text=narrow))


def test_an_image_model_with_an_open_size_is_refused(models: Models, tmp_path: Path) -> None:
    import onnx

    path = image_encoder(tmp_path / "open.onnx", models.w_image)
    model = onnx.load(str(path))
    for d in model.graph.input[0].type.tensor_type.shape.dim[2:]:
        d.dim_param = "side"
    onnx.save(model, str(path))
    with pytest.raises(ScorerError, match="fixed height and width"):
        scorers.probe(clip_spec(models, image=path))


def test_the_text_model_is_not_an_image_model(models: Models) -> None:
    with pytest.raises(ScorerError, match=r"score\.nsfw_model: .*clip-text\.onnx input 'input_ids'"):
        scorers.probe(nsfw_spec(models.text))


def test_cuda_without_onnxruntime_gpu_says_what_to_install() -> None:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime here has the CUDA provider, so the missing-onnxruntime-gpu error cannot occur")
    with pytest.raises(ScorerError, match="onnxruntime-gpu"):
        scorers.onnx_providers("cuda", 0)
    assert scorers.onnx_providers("cpu", None) == ["CPUExecutionProvider"]


def test_open_clip_without_torch_is_a_clear_error(tmp_path: Path) -> None:
    try:
        import open_clip  # noqa: F401
        import torch  # noqa: F401

        pytest.skip("torch and open_clip are installed here, so the missing-torch error cannot occur")
    except ImportError:
        pass
    spec = OpenClipSpec("b32", "ViT-B-32", ModelFile("score.open_clip_checkpoint", str(tmp_path / "ckpt.bin")))
    with pytest.raises(ScorerError, match="needs PyTorch and open_clip"):
        scorers.probe(spec)


# --- plug-ins ------------------------------------------------------------------------------------


class Toy:
    """A plug-in scorer: the red channel's mean; raises on "boom", NaN on "nan", wrong shape on "shape"."""

    columns = ["nsfw_score_toy"]

    def __init__(self, scale: str = "1") -> None:
        self.scale = float(scale)

    def __call__(self, images, captions):
        if any("boom" in c for c in captions):
            raise RuntimeError("boom")
        if any("shape" in c for c in captions):
            return {"nsfw_score_toy": np.zeros((len(images), 2))}
        red = np.array([np.asarray(img)[..., 0].mean() / 255.0 * self.scale for img in images])
        red[[i for i, c in enumerate(captions) if "nan" in c]] = np.nan
        return {"nsfw_score_toy": red}


def toy(scale: str = "1") -> Toy:
    return Toy(scale)


def not_a_scorer() -> int:
    return 3


def test_plugin_rows_fail_alone_and_nan_fails_the_row() -> None:
    scorer = PluginSpec("test_scorers:toy", (("scale", "2"),)).build(None)
    data = [jpeg((255, 0, 0)), b"not an image", None, jpeg((0, 0, 0)), jpeg((100, 0, 0))]
    got = scorers.score_batch([("toy", scorer)], data, ["fine", "fine", "fine", "a boom here", "nan please"])
    values, failures = got.values["nsfw_score_toy"], got.failures
    assert values[0] == pytest.approx(2.0, abs=0.02)
    assert failures[0] is None
    assert failures[1].startswith("image undecodable: UnidentifiedImageError") and "0x" not in failures[1]
    assert failures[2].startswith("no image bytes")
    assert failures[3] == "toy raised RuntimeError: boom"
    assert failures[4] == "nsfw_score_toy is nan (not a finite number)"
    assert np.isnan(values[1:]).all()


def test_plugin_output_of_the_wrong_shape_stops_the_batch() -> None:
    scorer = toy()
    with pytest.raises(ScorerOutputError, match=r"toy: column 'nsfw_score_toy' has shape \(2, 2\), expected \(2,\)"):
        scorers.score_batch([("toy", scorer)], [jpeg((1, 2, 3)), jpeg((4, 5, 6))], ["shape", "x"])


@pytest.mark.parametrize(
    "path, message",
    [
        ("test_scorers", "must look like"),
        ("no_such_module_xyz:f", "cannot import module"),
        ("test_scorers:nothing", "has no attribute"),
        ("test_scorers:WORDS", "not a callable"),
        ("test_scorers:not_a_scorer", "non-empty `columns`"),
    ],
)
def test_bad_plugins_are_start_up_errors(path: str, message: str) -> None:
    with pytest.raises(ScorerError, match=message):
        scorers.probe(PluginSpec(path))


def test_tokenizer_plugin(models: Models) -> None:
    spec = clip_spec(models, tokenizer="test_scorers:ids_of")
    clip = spec.build(None)
    got = scorers.score_batch([("clip", clip)], [jpeg(COLOURS[0])], ["a red car"])
    mean = decoded_mean(jpeg(COLOURS[0]))
    assert got.values["clip_similarity_t"][0] == pytest.approx(models.similarity(mean, "a red car"), abs=2e-3)


def ids_of(captions: list[str]) -> np.ndarray:
    """A tokenizer plug-in over the test vocabulary (what word_tokenizer's tokenizer.json does)."""
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", *dict.fromkeys(w.lower() for w in WORDS)])}
    rows = []
    for c in captions:
        ids = [vocab.get(w, 1) for w in c.lower().split()][:16]
        rows.append(ids + [0] * (16 - len(ids)))
    return np.array(rows)


# --- config ---------------------------------------------------------------------------------------


def test_score_needs_the_kept_images() -> None:
    sets = ["run.stages=text,image,score", "score.nsfw_model=/m.onnx"]
    with pytest.raises(ConfigError, match=r"^image\.keep_bytes: the score stage's models read the kept images"):
        load_config(sets=sets)
    with pytest.raises(ConfigError, match=r"^image\.keep_bytes"):
        load_config(sets=["run.stages=text,score", "score.nsfw_model=/m.onnx", "image.keep_bytes=true"])
    cfg = load_config(sets=sets + ["image.keep_bytes=true"])
    assert cfg.score.nsfw_model == "/m.onnx" and cfg.score.max_nsfw_score == 0.5


@pytest.mark.parametrize(
    "sets, start",
    [
        # no scorer, or a similarity filter without a CLIP model, may read the input's own columns:
        # checked against the pairs' columns before any data is read (tests/test_score_columns.py)
        (["score.clip_image_model=/i.onnx"], "score.clip_image_model: CLIP similarity needs all three"),
        (["score.nsfw_model=/m.onnx", "score.top_fraction=0"], "score.top_fraction: must be within (0, 1]"),
        (["score.nsfw_model=/m.onnx", "score.provider=rocm"], "score.provider: 'rocm' is not one of cpu, cuda"),
        (["score.nsfw_model=/m.onnx", "score.nsfw_name=Bad-Name"], "score.nsfw_name: 'Bad-Name' is not"),
        (["score.nsfw_model=/m.onnx", "score.batch_size=0"], "score.batch_size: must be at least 1"),
        (["score.nsfw_model=/m.onnx", "score.gpu_executor_amount=1"], "score.gpu_executor_amount: needs score.gpu"),
        (["score.plugin=nocolon"], "score.plugin: 'nocolon' must look like"),
        (["score.plugin=a:b", "score.plugin_options=novalue"], "score.plugin_options: 'novalue' is not key=value"),
        (["score.nsfw_model=/m.onnx", "score.clip_normalize=bgr"], "score.clip_normalize: 'bgr' is not one of"),
    ],
)
def test_score_config_errors_name_the_key(sets: list[str], start: str) -> None:
    base = ["run.stages=text,image,score", "image.keep_bytes=true"]
    with pytest.raises(ConfigError) as info:
        load_config(sets=base + sets)
    assert str(info.value).startswith(start), str(info.value)
