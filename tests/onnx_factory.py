"""Small ONNX models and a tokenizer, built by the tests and the score benchmark (nothing downloaded).

- ``image_encoder``: pixels [N, 3, S, S] -> GlobalAveragePool -> Flatten -> MatMul W (3, D) -> [N, D]:
  the embedding of an image is its mean normalised colour times W.
- ``text_encoder``: input_ids [N, L] int64 -> Gather (embedding table E, V x D) -> ReduceMean over L -> [N, D].
- ``classifier``: pixels -> GlobalAveragePool -> Flatten -> MatMul w (3, k) + b -> Sigmoid -> [N, k]
  (k = 1 is a score per image; k = 3 is a deliberately wrong output shape).
- ``word_tokenizer``: a ``tokenizers`` WordLevel tokenizer.json (lower case, whitespace split, [PAD] = 0, [UNK] = 1).

``Reference`` recomputes what the models give with numpy alone (mean colour of the
decoded image, the vocabulary lookup), so tests compare the stage with numbers
computed without udfs.scorers.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # readable by every onnxruntime this project allows
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711])


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="winnow-tests")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _pixels_input(size: int) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch", 3, size, size])


def image_encoder(path: Path, w: np.ndarray, size: int = 32) -> Path:
    nodes = [
        helper.make_node("GlobalAveragePool", ["pixel_values"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "W"], ["image_embeds"]),
    ]
    out = helper.make_tensor_value_info("image_embeds", TensorProto.FLOAT, ["batch", w.shape[1]])
    graph = helper.make_graph(
        nodes, "image_encoder", [_pixels_input(size)], [out], [numpy_helper.from_array(w.astype(np.float32), "W")]
    )
    return _save(graph, path)


def text_encoder(path: Path, table: np.ndarray, length: int = 16) -> Path:
    nodes = [
        helper.make_node("Gather", ["E", "input_ids"], ["tokens"], axis=0),
        helper.make_node("ReduceMean", ["tokens"], ["text_embeds"], axes=[1], keepdims=0),
    ]
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", length])
    out = helper.make_tensor_value_info("text_embeds", TensorProto.FLOAT, ["batch", table.shape[1]])
    graph = helper.make_graph(
        nodes, "text_encoder", [ids], [out], [numpy_helper.from_array(table.astype(np.float32), "E")]
    )
    return _save(graph, path)


def classifier(path: Path, w: np.ndarray, b: np.ndarray, size: int = 32) -> Path:
    nodes = [
        helper.make_node("GlobalAveragePool", ["pixel_values"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "w"], ["logit0"]),
        helper.make_node("Add", ["logit0", "b"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["score"]),
    ]
    out = helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", w.shape[1]])
    inits = [numpy_helper.from_array(w.astype(np.float32), "w"), numpy_helper.from_array(b.astype(np.float32), "b")]
    graph = helper.make_graph(nodes, "classifier", [_pixels_input(size)], [out], inits)
    return _save(graph, path)


def word_tokenizer(path: Path, words: list[str]) -> Path:
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel

    vocab = {"[PAD]": 0, "[UNK]": 1}
    for word in words:
        vocab.setdefault(word.lower(), len(vocab))
    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(str(path))
    return path


def corrupt(path: Path, size: int = 4096, seed: int = 0) -> Path:
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes())
    return path


@dataclass
class Models:
    """One set of test models in a folder, with the weights to recompute their outputs."""

    folder: Path
    w_image: np.ndarray
    table: np.ndarray
    w_nsfw: np.ndarray
    b_nsfw: np.ndarray
    vocab: dict[str, int]
    length: int = 16
    size: int = 32

    @property
    def image(self) -> Path:
        return self.folder / "clip-image.onnx"

    @property
    def text(self) -> Path:
        return self.folder / "clip-text.onnx"

    @property
    def tokenizer(self) -> Path:
        return self.folder / "tokenizer.json"

    @property
    def nsfw(self) -> Path:
        return self.folder / "nsfw.onnx"

    @property
    def wrong_shape(self) -> Path:
        return self.folder / "nsfw-wrong-shape.onnx"

    @property
    def corrupt(self) -> Path:
        return self.folder / "corrupt.onnx"

    # --- the reference: numpy only ---

    def tokens(self, caption: str) -> np.ndarray:
        ids = [self.vocab.get(w, 1) for w in re.split(r"\s+", caption.lower().strip()) if w][: self.length]
        return np.array(ids + [0] * (self.length - len(ids)))

    def image_features(self, rgb_mean: np.ndarray) -> np.ndarray:
        """The pooled normalised colour of an image whose mean RGB (0..255) is ``rgb_mean``."""
        return (np.asarray(rgb_mean, dtype=np.float64) / 255.0 - CLIP_MEAN) / CLIP_STD

    def similarity(self, rgb_mean: np.ndarray, caption: str) -> float:
        a = self.image_features(rgb_mean) @ self.w_image
        b = self.table[self.tokens(caption)].mean(axis=0)
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

    def nsfw_score(self, rgb_mean: np.ndarray) -> float:
        logit = self.image_features(rgb_mean) @ self.w_nsfw[:, 0] + self.b_nsfw[0]
        return float(1.0 / (1.0 + np.exp(-logit)))


def build_models(folder: Path, words: list[str], dim: int = 8, seed: int = 0, size: int = 32) -> Models:
    """The CLIP pair, its tokenizer, an NSFW classifier, a wrongly shaped classifier and a corrupt file."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    vocab = {"[PAD]": 0, "[UNK]": 1}
    for word in words:
        vocab.setdefault(word.lower(), len(vocab))
    m = Models(
        folder,
        w_image=rng.normal(size=(3, dim)),
        table=rng.normal(size=(len(vocab), dim)),
        w_nsfw=rng.normal(size=(3, 1)) * 2.0,
        b_nsfw=np.array([0.0]),
        vocab=vocab,
        size=size,
    )
    image_encoder(m.image, m.w_image, m.size)
    text_encoder(m.text, m.table, m.length)
    word_tokenizer(m.tokenizer, words)
    classifier(m.nsfw, m.w_nsfw, m.b_nsfw, m.size)
    classifier(m.wrong_shape, rng.normal(size=(3, 3)), np.zeros(3), m.size)
    corrupt(m.corrupt)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    return m
