"""Model scorers for the score stage: the plug-in contract, the built-in adapters, one load per worker.

The contract
------------
A scorer is an object with

    columns: list[str]                      the float columns it produces
    __call__(images: list[PIL.Image.Image], captions: list[str]) -> dict[str, numpy.ndarray]

called with a batch of n decoded 8-bit RGB images and their n captions (a
missing caption is ""), returning one array of shape (n,) per column, in
batch order. It is built once per Python worker and called again and again.
A plug-in is a factory ``package.module:callable`` called with the options of
``score.plugin_options`` as keyword arguments (strings) that returns such an
object. Column names are lower-case identifiers; the stage's filters read
``nsfw_score_*`` and ``clip_similarity_*`` columns (COYO's names).

What happens to what a scorer returns (``score_batch``):

- an exception on a batch: each row of it is scored alone, and the rows that
  still raise are ``score-failed`` with the exception in ``detail``;
- NaN or infinity for a row: that row is ``score-failed``;
- a missing column or an array of another shape: ``ScorerOutputError`` naming
  the scorer, the expected and the actual shape. This is a broken model, not
  a bad row: it stops the job (the driver's probe at start-up catches it
  before any data is read).

Built-in adapters (ONNX Runtime, nothing downloaded: the operator gives the files)
----------------------------------------------------------------------------------
- ``OnnxClipSpec``: an exported image encoder and text encoder -> the cosine
  similarity of their embeddings, ``clip_similarity_<name>``. The image
  encoder takes one float NCHW input of fixed size (read from the model);
  images are resized (bicubic) to cover it and centre-cropped, scaled to
  [0, 1] and normalised (CLIP's mean and std by default). The text encoder
  takes ``input_ids`` (N, L) int64 or int32 (and ``attention_mask`` when it has
  that input), from a HuggingFace ``tokenizer.json`` (``tokenizers``) or a
  tokenizer plug-in ``module:callable`` (``captions -> int array (n, L)``);
  L is the model's, or ``context_length`` when the model leaves it open.
- ``OnnxClassifierSpec``: an image classifier with the same image input whose
  first output is (N,) or (N, 1) (the score) or (N, 2) (two-class
  probabilities, the second column taken: export the softmax into the graph).
- ``OpenClipSpec``: ``open_clip`` with a local checkpoint, for users with
  PyTorch; torch and open_clip are imported only when it is used.

Model paths: a plain path is read as is on every node (a shared mount, or the
same path in the cluster image); a URI (``hdfs://``, ``s3a://``, ``file://``)
is shipped by the driver with ``SparkContext.addFile`` and found on each node
with ``SparkFiles.get`` (``ModelFile.local``).
"""

from __future__ import annotations

import collections
import functools
import importlib
import io
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from PIL import Image

from udfs.image import to_rgb

# Normalisations of the image input (mean, std per RGB channel after scaling to [0, 1]).
NORMALIZATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),  # OpenAI CLIP
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # torchvision / timm classifiers
    "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}
PROVIDERS = ("cpu", "cuda")
# Larger decoded images are refused per row (the image stage's default pixel limit, Pillow's own).
MAX_PIXELS = 89_478_485
COLUMN_NAME = re.compile(r"[a-z][a-z0-9_]*")
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")  # Pillow names the BytesIO object: not useful in a detail
_CALLABLE_PATH = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")
# What the driver's probe feeds every scorer: two images of different sizes and shapes.
PROBE_CAPTIONS = ["a photo of a red square", "a grey picture"]


class ScorerError(RuntimeError):
    """A scorer cannot be built or breaks its contract; the message names the config key or model."""


class ScorerOutputError(ScorerError):
    """A scorer returned a missing column or an array of the wrong shape."""


class Scorer(Protocol):
    columns: list[str]

    def __call__(self, images: list[Image.Image], captions: list[str]) -> dict[str, np.ndarray]: ...


# --- model files ----------------------------------------------------------------------------------------------------


def is_uri(path: str) -> bool:
    """``hdfs://...``, ``s3a://...``, ``file:///...``: shipped with addFile, not read in place."""
    return re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", path) is not None


@dataclass(frozen=True)
class ModelFile:
    """A file the operator named in ``key``; ``local()`` is where this process reads it."""

    key: str  # the config key, for messages (score.nsfw_model)
    path: str

    @property
    def name(self) -> str:
        """The name addFile registers it under (its base name)."""
        return os.path.basename(self.path.rstrip("/"))

    def local(self) -> str:
        if not is_uri(self.path):
            return self.path
        from pyspark import SparkFiles  # the driver's addFile put it in this process's SparkFiles root

        return SparkFiles.get(self.name)

    def checked(self) -> str:
        """``local()``, or a ScorerError naming the key when it is not a readable file here."""
        path = self.local()
        if not os.path.isfile(path):
            where = f" (shipped from {self.path})" if is_uri(self.path) else ""
            raise ScorerError(f"{self.key}: model file not found: {path}{where}")
        return path


def import_callable(path: str, key: str) -> Callable[..., Any]:
    """The callable named by ``"package.module:attribute"``; ScorerError naming ``key`` otherwise."""
    if not isinstance(path, str) or _CALLABLE_PATH.fullmatch(path) is None:
        raise ScorerError(f"{key}: must look like 'package.module:callable', got {path!r}")
    module_name, _, attr = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ScorerError(f"{key}: cannot import module {module_name!r} ({exc})") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ScorerError(f"{key}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ScorerError(f"{key}: {path!r} is a {type(obj).__name__}, not a callable")
    return obj


# --- ONNX Runtime ---------------------------------------------------------------------------------------------------


def onnx_providers(provider: str, device: int | None) -> list[Any]:
    """ONNX Runtime's provider list: CPU, or CUDA on ``device`` (the task's GPU) with CPU as fallback."""
    import onnxruntime as ort

    if provider == "cpu":
        return ["CPUExecutionProvider"]
    if provider == "cuda":
        available = ort.get_available_providers()
        if "CUDAExecutionProvider" not in available:
            raise ScorerError(
                "score.provider = cuda, but this onnxruntime has no CUDAExecutionProvider "
                f"(available: {', '.join(available)}): install onnxruntime-gpu on the GPU executors"
            )
        return [("CUDAExecutionProvider", {"device_id": int(device or 0)}), "CPUExecutionProvider"]
    raise ScorerError(f"score.provider: {provider!r} is not one of {', '.join(PROVIDERS)}")


def onnx_session(model: ModelFile, provider: str, device: int | None, threads: int) -> Any:
    """An InferenceSession of ``model``; a missing or unloadable file is a ScorerError naming the key."""
    import onnxruntime as ort

    path = model.checked()
    options = ort.SessionOptions()
    # One Spark task per core already: more intra-op threads would oversubscribe the executor.
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    providers = onnx_providers(provider, device)
    try:
        return ort.InferenceSession(path, sess_options=options, providers=providers)
    except Exception as exc:  # InvalidProtobuf, Fail, NoSuchFile ... from the C++ side
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ScorerError(f"{model.key}: {model.path} is not a loadable ONNX model ({first[:300]})") from None


_ONNX_FLOATS = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}
_ONNX_INTS = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}


@dataclass(frozen=True)
class ImageInput:
    """The image input of an ONNX model: its name, dtype and fixed height and width."""

    name: str
    dtype: Any
    height: int
    width: int

    @classmethod
    def of(cls, session: Any, model: ModelFile) -> ImageInput:
        inputs = session.get_inputs()
        if len(inputs) != 1:
            names = ", ".join(i.name for i in inputs)
            raise ScorerError(f"{model.key}: {model.path} has inputs {names}; an image model takes one NCHW input")
        inp = inputs[0]
        shape = list(inp.shape)
        ok = len(shape) == 4 and shape[1] == 3 and all(isinstance(d, int) and d > 0 for d in shape[2:])
        if not ok or inp.type not in _ONNX_FLOATS:
            raise ScorerError(
                f"{model.key}: {model.path} input {inp.name!r} is {inp.type} {shape}; expected a float "
                "[batch, 3, height, width] input with a fixed height and width"
            )
        return cls(inp.name, _ONNX_FLOATS[inp.type], shape[2], shape[3])


def preprocess(images: Sequence[Image.Image], height: int, width: int, normalize: str, dtype: Any = np.float32):
    """CLIP's preprocessing as a batch: resize (bicubic) to cover height x width, centre crop, [0, 1], normalise.

    Returns an (n, 3, height, width) array of ``dtype``.
    """
    mean, std = (np.asarray(v, dtype=np.float32).reshape(3, 1, 1) for v in NORMALIZATIONS[normalize])
    out = np.empty((len(images), 3, height, width), dtype=np.float32)
    for i, img in enumerate(images):
        img = to_rgb(img)
        w, h = img.size
        scale = max(width / w, height / h)
        size = (max(width, round(w * scale)), max(height, round(h * scale)))
        if size != (w, h):
            img = img.resize(size, Image.Resampling.BICUBIC)
        left, top = (size[0] - width) // 2, (size[1] - height) // 2
        if size != (width, height):
            img = img.crop((left, top, left + width, top + height))
        pixels = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0
        out[i] = (pixels - mean) / std
    return out if dtype == np.float32 else out.astype(dtype)


def shape_error(label: str, expected: str, got: Any) -> ScorerOutputError:
    return ScorerOutputError(f"{label}: output has shape {tuple(np.shape(got))}, expected {expected}")


def embeddings(out: Any, n: int, label: str) -> np.ndarray:
    arr = np.asarray(out)
    if arr.ndim != 2 or arr.shape[0] != n or arr.shape[1] < 1:
        raise shape_error(label, f"({n}, D) embeddings", arr)
    return arr.astype(np.float64, copy=False)


def class_scores(out: Any, n: int, label: str) -> np.ndarray:
    """(n,) or (n, 1) -> the scores; (n, 2) -> the second column (the positive class)."""
    arr = np.asarray(out)
    if arr.ndim == 1 and arr.shape[0] == n:
        return arr.astype(np.float64)
    if arr.ndim == 2 and arr.shape[0] == n and arr.shape[1] in (1, 2):
        return arr[:, -1].astype(np.float64)
    raise shape_error(label, f"({n},), ({n}, 1) or ({n}, 2)", arr)


def _output_name(session: Any, preferred: str) -> str:
    names = [o.name for o in session.get_outputs()]
    return preferred if preferred in names else names[0]


class OnnxClassifier:
    """An ONNX image classifier as a scorer with one column."""

    def __init__(self, spec: OnnxClassifierSpec, device: int | None, provider: str | None = None) -> None:
        self.columns = [spec.column]
        self.label = f"{spec.model.key} ({spec.model.path})"
        self.normalize = spec.normalize
        self.session = onnx_session(spec.model, provider or spec.provider, device, spec.threads)
        self.input = ImageInput.of(self.session, spec.model)
        self.output = self.session.get_outputs()[0].name

    def __call__(self, images: list[Image.Image], captions: list[str]) -> dict[str, np.ndarray]:
        pixels = preprocess(images, self.input.height, self.input.width, self.normalize, self.input.dtype)
        (out,) = self.session.run([self.output], {self.input.name: pixels})
        return {self.columns[0]: class_scores(out, len(images), self.label)}


class HfTokenizer:
    """A HuggingFace ``tokenizer.json``, truncated and padded to ``length`` tokens."""

    def __init__(self, model: ModelFile, length: int) -> None:
        from tokenizers import Tokenizer

        path = model.checked()
        try:
            self.tokenizer = Tokenizer.from_file(path)
        except Exception as exc:
            raise ScorerError(f"{model.key}: {model.path} is not a tokenizers tokenizer.json ({exc})") from None
        self.tokenizer.enable_truncation(max_length=length)
        padding = self.tokenizer.padding or {}
        self.tokenizer.enable_padding(
            length=length, pad_id=padding.get("pad_id", 0), pad_token=padding.get("pad_token", "[PAD]")
        )

    def __call__(self, captions: list[str]) -> tuple[np.ndarray, np.ndarray]:
        encoded = self.tokenizer.encode_batch(captions)
        ids = np.asarray([e.ids for e in encoded], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in encoded], dtype=np.int64)
        return ids, mask


class OnnxClip:
    """Exported CLIP image and text encoders as a scorer: the cosine similarity of the two embeddings."""

    def __init__(self, spec: OnnxClipSpec, device: int | None, provider: str | None = None) -> None:
        self.columns = [spec.column]
        self.spec = spec
        provider = provider or spec.provider
        self.image_session = onnx_session(spec.image_model, provider, device, spec.threads)
        self.text_session = onnx_session(spec.text_model, provider, device, spec.threads)
        self.image_input = ImageInput.of(self.image_session, spec.image_model)
        self.image_output = _output_name(self.image_session, "image_embeds")
        self.text_output = _output_name(self.text_session, "text_embeds")
        inputs = {i.name: i for i in self.text_session.get_inputs()}
        ids = inputs.get("input_ids") or next(iter(inputs.values()))
        unknown = set(inputs) - {ids.name, "attention_mask"}
        shape = list(ids.shape)
        if unknown or len(shape) != 2 or ids.type not in _ONNX_INTS:
            raise ScorerError(
                f"{spec.text_model.key}: {spec.text_model.path} inputs are "
                f"{', '.join(f'{i.name} {i.type} {list(i.shape)}' for i in inputs.values())}; expected token ids "
                "[batch, length] int64 or int32 (and optionally attention_mask)"
            )
        self.ids_name, self.ids_dtype = ids.name, _ONNX_INTS[ids.type]
        self.length = shape[1] if isinstance(shape[1], int) and shape[1] > 0 else spec.context_length
        self.has_mask = "attention_mask" in inputs
        if _CALLABLE_PATH.fullmatch(spec.tokenizer.path) and not os.path.exists(spec.tokenizer.path):
            self.plugin_tokenizer: Callable[[list[str]], Any] | None = import_callable(
                spec.tokenizer.path, spec.tokenizer.key
            )
            self.tokenizer = None
        else:
            self.plugin_tokenizer = None
            self.tokenizer = HfTokenizer(spec.tokenizer, self.length)

    def tokens(self, captions: list[str]) -> tuple[np.ndarray, np.ndarray]:
        if self.tokenizer is not None:
            return self.tokenizer(captions)
        ids = np.asarray(self.plugin_tokenizer(captions))  # type: ignore[misc]
        if ids.ndim != 2 or ids.shape != (len(captions), self.length):
            raise shape_error(
                f"{self.spec.tokenizer.key} ({self.spec.tokenizer.path})", f"({len(captions)}, {self.length})", ids
            )
        return ids, (ids != 0).astype(np.int64)

    def __call__(self, images: list[Image.Image], captions: list[str]) -> dict[str, np.ndarray]:
        n = len(images)
        pixels = preprocess(
            images, self.image_input.height, self.image_input.width, self.spec.normalize, self.image_input.dtype
        )
        (image_out,) = self.image_session.run([self.image_output], {self.image_input.name: pixels})
        ids, mask = self.tokens(captions)
        feed = {self.ids_name: ids.astype(self.ids_dtype)}
        if self.has_mask:
            feed["attention_mask"] = mask.astype(self.ids_dtype)
        (text_out,) = self.text_session.run([self.text_output], feed)
        a = embeddings(image_out, n, f"{self.spec.image_model.key} ({self.spec.image_model.path})")
        b = embeddings(text_out, n, f"{self.spec.text_model.key} ({self.spec.text_model.path})")
        if a.shape[1] != b.shape[1]:
            raise ScorerOutputError(
                f"{self.spec.image_model.key} ({self.spec.image_model.path}) embeds in {a.shape[1]} dimensions but "
                f"{self.spec.text_model.key} ({self.spec.text_model.path}) in {b.shape[1]}: output shapes "
                f"{a.shape} and {b.shape}, expected the same D"
            )
        return {self.columns[0]: cosine(a, b)}


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity; NaN for a zero vector (the row then fails)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


class OpenClip:
    """open_clip with a local checkpoint (PyTorch). Not exercised by the tests: torch is not installed here."""

    def __init__(self, spec: OpenClipSpec, device: int | None, provider: str | None = None) -> None:
        try:
            import open_clip
            import torch
        except ImportError as exc:
            raise ScorerError(
                f"score.open_clip_model = {spec.model!r} needs PyTorch and open_clip "
                f"(pip install torch open_clip_torch) on the driver and every executor ({exc})"
            ) from None
        self.torch = torch
        self.columns = [spec.column]
        use_cuda = (provider or spec.provider) == "cuda"
        self.device = f"cuda:{int(device or 0)}" if use_cuda else "cpu"
        checkpoint = spec.checkpoint.checked()
        model, _, self.preprocess = open_clip.create_model_and_transforms(spec.model, pretrained=checkpoint)
        self.model = model.to(self.device).eval()
        self.tokenizer = open_clip.get_tokenizer(spec.model)

    def __call__(self, images: list[Image.Image], captions: list[str]) -> dict[str, np.ndarray]:
        torch = self.torch
        with torch.no_grad():
            pixels = torch.stack([self.preprocess(to_rgb(img)) for img in images]).to(self.device)
            a = self.model.encode_image(pixels).float().cpu().numpy()
            b = self.model.encode_text(self.tokenizer(captions).to(self.device)).float().cpu().numpy()
        return {self.columns[0]: cosine(a.astype(np.float64), b.astype(np.float64))}


# --- specs: what the config says, hashable so the per-worker cache can key on it ------------------------------------


@dataclass(frozen=True)
class OnnxClipSpec:
    name: str
    image_model: ModelFile
    text_model: ModelFile
    tokenizer: ModelFile  # a tokenizer.json, or a plug-in "module:callable" in .path
    normalize: str = "clip"
    context_length: int = 77
    provider: str = "cpu"
    threads: int = 1

    @property
    def column(self) -> str:
        return f"clip_similarity_{self.name}"

    @property
    def label(self) -> str:
        return f"clip {self.name} ({self.image_model.path}, {self.text_model.path})"

    def files(self) -> list[ModelFile]:
        tok = (
            []
            if _CALLABLE_PATH.fullmatch(self.tokenizer.path) and not os.path.exists(self.tokenizer.path)
            else [self.tokenizer]
        )
        return [self.image_model, self.text_model, *tok]

    def build(self, device: int | None, provider: str | None = None) -> Scorer:
        return OnnxClip(self, device, provider)


@dataclass(frozen=True)
class OnnxClassifierSpec:
    column: str
    model: ModelFile
    normalize: str = "clip"
    provider: str = "cpu"
    threads: int = 1

    @property
    def label(self) -> str:
        return f"{self.column} ({self.model.path})"

    def files(self) -> list[ModelFile]:
        return [self.model]

    def build(self, device: int | None, provider: str | None = None) -> Scorer:
        return OnnxClassifier(self, device, provider)


@dataclass(frozen=True)
class OpenClipSpec:
    name: str
    model: str  # open_clip architecture name, e.g. ViT-B-32
    checkpoint: ModelFile
    provider: str = "cpu"

    @property
    def column(self) -> str:
        return f"clip_similarity_{self.name}"

    @property
    def label(self) -> str:
        return f"open_clip {self.model} ({self.checkpoint.path})"

    def files(self) -> list[ModelFile]:
        return [self.checkpoint]

    def build(self, device: int | None, provider: str | None = None) -> Scorer:
        return OpenClip(self, device, provider)


@dataclass(frozen=True)
class PluginSpec:
    path: str  # "package.module:factory"
    options: tuple[tuple[str, str], ...] = field(default=())

    @property
    def label(self) -> str:
        return f"plug-in {self.path}"

    def files(self) -> list[ModelFile]:
        return []

    def build(self, device: int | None, provider: str | None = None) -> Scorer:
        factory = import_callable(self.path, "score.plugin")
        kwargs = dict(self.options)
        if device is not None:
            kwargs.setdefault("device", str(device))
        try:
            scorer = factory(**kwargs)
        except ScorerError:
            raise
        except Exception as exc:
            raise ScorerError(f"score.plugin: {self.path}(**{kwargs}) raised {type(exc).__name__}: {exc}") from None
        columns = getattr(scorer, "columns", None)
        if not callable(scorer) or not isinstance(columns, (list, tuple)) or not columns:
            raise ScorerError(
                f"score.plugin: {self.path} returned a {type(scorer).__name__}; expected a callable with a "
                "non-empty `columns` list (udfs/scorers.py: the contract)"
            )
        for c in columns:
            if not isinstance(c, str) or COLUMN_NAME.fullmatch(c) is None:
                raise ScorerError(f"score.plugin: {self.path} column {c!r} is not a lower-case identifier")
        return scorer


ScorerSpec = OnnxClipSpec | OnnxClassifierSpec | OpenClipSpec | PluginSpec


# --- one load per Python worker ------------------------------------------------------------------------------------

LOADS: collections.Counter[str] = collections.Counter()


@functools.cache
def get_scorer(spec: ScorerSpec, device: int | None = None) -> Scorer:
    """``spec.build(device)``, once per Python worker and device (Spark reuses workers across tasks)."""
    scorer = spec.build(device)
    LOADS[spec.label] += 1
    return scorer


# --- scoring a batch -----------------------------------------------------------------------------------------------


def probe_images() -> list[Image.Image]:
    return [Image.new("RGB", (64, 48), (200, 30, 30)), Image.new("L", (30, 90), 128)]


def probe(spec: ScorerSpec) -> list[str]:
    """Build ``spec`` here (on the CPU) and score a probe batch: its columns, or a ScorerError.

    The driver runs this before reading any data, so a missing, corrupt or
    wrongly shaped model stops the job at once.
    """
    scorer = spec.build(None, provider="cpu")
    columns = list(scorer.columns)
    try:
        result = scorer(probe_images(), list(PROBE_CAPTIONS))
    except ScorerError:
        raise
    except Exception as exc:
        raise ScorerError(f"{spec.label}: failed on the probe batch: {type(exc).__name__}: {exc}"[:800]) from None
    checked_output(result, columns, len(PROBE_CAPTIONS), spec.label)
    return columns


def checked_output(result: Any, columns: Sequence[str], n: int, label: str) -> dict[str, np.ndarray]:
    """``result`` as {column: float64 (n,)}, or a ScorerOutputError naming the scorer and the shapes."""
    if not isinstance(result, dict):
        raise ScorerOutputError(f"{label}: returned a {type(result).__name__}, expected a dict of its columns")
    out = {}
    for c in columns:
        if c not in result:
            raise ScorerOutputError(f"{label}: output lacks column {c!r} (has {sorted(result)})")
        try:
            arr = np.asarray(result[c], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ScorerOutputError(f"{label}: column {c!r} is not numbers ({exc})") from None
        if arr.shape != (n,):
            raise ScorerOutputError(f"{label}: column {c!r} has shape {arr.shape}, expected ({n},)")
        out[c] = arr
    return out


def decode(data: bytes | None) -> tuple[Image.Image | None, str | None]:
    """The decoded image, or None and why not."""
    if data is None:
        return None, "no image bytes (the image stage keeps them with image.keep_bytes = true)"
    try:
        img = Image.open(io.BytesIO(data))
        if img.width * img.height > MAX_PIXELS:
            return None, f"image has {img.width}x{img.height} pixels (limit {MAX_PIXELS})"
        img.load()
        return img, None
    except Exception as exc:  # Pillow raises OSError, ValueError, SyntaxError ... on bad bytes
        return None, f"image undecodable: {type(exc).__name__}: {_ADDRESS.sub('', str(exc))}"[:500]


def _run(scorer: Scorer, label: str, images: list[Image.Image], captions: list[str]) -> dict[str, np.ndarray]:
    return checked_output(scorer(images, captions), scorer.columns, len(images), label)


@dataclass
class BatchScores:
    """Per column a float64 array (NaN where not scored), and per row the failure detail (None = scored)."""

    values: dict[str, np.ndarray]
    failures: list[str | None]


def score_batch(
    scorers: Sequence[tuple[str, Scorer]], data: Sequence[bytes | None], captions: Sequence[str | None]
) -> BatchScores:
    """Decode and score one batch with each ``(label, scorer)``; never raises for a row, only for a broken scorer."""
    n = len(data)
    failures: list[str | None] = [None] * n
    images: list[Image.Image] = []
    rows: list[int] = []
    for i, blob in enumerate(data):
        img, why = decode(blob)
        if img is None:
            failures[i] = why
        else:
            images.append(to_rgb(img))
            rows.append(i)
    texts = [captions[i] or "" for i in rows]
    values: dict[str, np.ndarray] = {}
    for label, scorer in scorers:
        for c in scorer.columns:
            values[c] = np.full(n, np.nan)
        if not rows:
            continue
        try:
            got = _run(scorer, label, images, texts)
            for c, arr in got.items():
                values[c][rows] = arr
        except ScorerOutputError:
            raise
        except Exception:
            # Find the rows it fails on: each row alone.
            for k, i in enumerate(rows):
                try:
                    one = _run(scorer, label, [images[k]], [texts[k]])
                except ScorerOutputError:
                    raise
                except Exception as exc:
                    failures[i] = failures[i] or f"{label} raised {type(exc).__name__}: {exc}"[:500]
                    continue
                for c, arr in one.items():
                    values[c][i] = arr[0]
    for c, arr in values.items():
        for i in np.flatnonzero(~np.isfinite(arr)):
            if failures[i] is None:
                failures[i] = f"{c} is {arr[i]} (not a finite number)"
    return BatchScores(values, failures)
