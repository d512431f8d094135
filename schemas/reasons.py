"""Reject reason codes, one per rule.

A rejected row carries ``stage`` (one of ``STAGES``) and ``reason`` (one of the
codes below). The codes are part of the output contract: dashboards and
downstream jobs group by them, so a code is never renamed, only added.

The grounding stage also judges rows of a second input, the Boxes table: those
verdicts are not pair rejects, so their codes live in ``BOX_REASONS``, apart
from ``REASONS``, and a box it could use gets one of the ``BOX_OUTCOMES``. The
detector job (``winnow detect``) and the blocklist job (``winnow blocklist``)
count their failed rows by the codes of ``DETECT_FAILURES`` and
``BLOCKLIST_REASONS``.

A comment names the config key a rule reads, never its default: the defaults
are the config sections' fields (docs/config.md lists them).
"""

from __future__ import annotations

INGEST = "ingest"
TEXT = "text"
IMAGE = "image"
DEDUP = "dedup"
GROUND = "ground"
SCORE = "score"
STAGES = (INGEST, TEXT, IMAGE, SCORE, DEDUP, GROUND)  # pipeline order

# ingest: the row cannot become a pair at all
# a jsonl line that is not JSON; a webdataset tar that cannot be read (one row for the
# whole file, detail says why) or a sample whose .txt / .json is not UTF-8 / a JSON object
MALFORMED_RECORD = "malformed-record"
MISSING_URL = "missing-url"
MISSING_CAPTION = "missing-caption"
MISSING_ID = "missing-id"
NO_IMAGE = "no-image"  # TaiSu: a caption entry whose image id has no member in the image tars

# text (COYO text-level rules, in the order they are applied)
TOO_SHORT = "text-too-short"  # fewer than text.min_chars characters after normalisation
TOO_LONG = "text-too-long"  # more than text.max_chars characters
TOO_FEW_WORDS = "text-too-few-words"  # fewer than text.min_words words
TOO_MANY_WORDS = "text-too-many-words"  # more than text.max_words words
NSFW_WORD = "text-nsfw-word"  # a word from the NSFW word lists
WRONG_LANGUAGE = "text-wrong-language"  # CLD3's top language is not text.language
TOO_FREQUENT = "text-too-frequent"  # the text occurs more than text.max_occurrences times in the input
NO_NOUN = "text-no-noun"  # spaCy finds no noun

# image: obtaining the bytes (HTTP fetch, local file, or bytes in the source row)
URL_INVALID = "url-invalid"  # not a parseable URL (or longer than udfs.fetch.MAX_URL_CHARS)
UNSUPPORTED_SCHEME = "unsupported-scheme"  # not http(s); file:// and paths only when enabled
PATH_OUTSIDE_ROOT = "path-outside-root"  # a local path that resolves outside fetch.local_root
FILE_MISSING = "file-missing"  # a local file that does not exist or cannot be read
IMAGE_MISSING = "image-missing"  # the source row should carry image bytes and has none
DNS = "dns"  # the host name does not resolve (or resolving timed out)
SSRF_REFUSED = "ssrf-refused"  # resolves to a private / loopback / link-local / multicast / metadata address
CONNECT = "connect"  # connection refused or reset, after retries
TIMEOUT = "timeout"  # the total deadline per request passed
TLS = "tls"  # TLS handshake or certificate failure
HTTP_3XX = "http-3xx"  # a redirect without a usable Location
HTTP_4XX = "http-4xx"  # final status 4xx (429 after retries included); detail has the status
HTTP_5XX = "http-5xx"  # final status 5xx after retries
TOO_MANY_REDIRECTS = "too-many-redirects"  # more than fetch.max_redirects hops, or a loop
TOO_LARGE = "too-large"  # more than fetch.max_bytes (declared or streamed)
TRUNCATED = "truncated"  # the body ended before its Content-Length, or the connection broke mid-body
ROBOTS_OPTOUT = "robots-optout"  # X-Robots-Tag: noai / noimageai (fetch.robots_optout_tokens)

# image: COYO image-level rules, in the order they are applied
FILE_TOO_SMALL = "image-file-too-small"  # fewer than image.min_bytes bytes
UNDECODABLE = "image-undecodable"  # Pillow cannot identify or fully decode it
TOO_MANY_PIXELS = "image-too-many-pixels"  # width x height above image.max_pixels (decompression bomb)
LOW_RESOLUTION = "image-low-resolution"  # min(width, height) < image.min_side
ASPECT_RATIO = "image-aspect-ratio"  # long side / short side > image.max_aspect_ratio
IMAGE_ERROR = "image-error"  # an unexpected error while handling this row; detail has it

# score: model scores over the kept images (udfs.scorers), in the order they are applied
SCORE_FAILED = "score-failed"  # no or undecodable image bytes, a scorer raised on the row, or NaN; detail says why
SCORE_NSFW = "score-nsfw"  # an nsfw_score_* column >= score.max_nsfw_score (the image stage checks the input's first)
SCORE_WATERMARK = "score-watermark"  # the watermark column >= score.max_watermark
SCORE_LOW_AESTHETIC = "score-low-aesthetic"  # the aesthetic column < score.min_aesthetic
SCORE_LOW_SIMILARITY = "score-low-similarity"  # the similarity column < score.min_similarity
SCORE_BELOW_QUANTILE = "score-below-quantile"  # the similarity column below the top score.top_fraction (DataComp)

# dedup, in the order they are applied
PHASH_INVALID = "phash-invalid"  # no pHash, or not 16 hex digits (a source's own column)
EVAL_OVERLAP = "eval-overlap"  # within dedup.blocklist_distance of an eval-set blocklist hash; detail names it
DUPLICATE_PAIR = "duplicate-pair"  # same (pHash, caption) as an earlier pair; detail has the winner's id
HISTORY_DUPLICATE = "history-duplicate"  # same (pHash, caption) as an accepted pair of an earlier dump
NEAR_DUPLICATE = "near-duplicate"  # pHash within dedup.near_distance of a pair kept instead

# ground: pair rows (GRIT / Kosmos-2 section 2)
NO_GROUNDING = "no-grounding"  # no noun chunk of the caption keeps a box (or the row has no boxes)
GROUND_ERROR = "ground-error"  # the row's spans do not fit its caption, or another bug; detail has it

# ground: rows of the Boxes table (the stage's box verdicts), in the order they are checked
BOX_NO_PAIR = "box-no-pair"  # no accepted pair has the box's id (or the id is null)
BOX_SPAN_INVALID = "box-span-invalid"  # start/end missing, start < 0, end > caption length, or start >= end
BOX_SCORE_INVALID = "box-score-invalid"  # score missing, NaN, or outside [0, 1]
BOX_NO_IMAGE_SIZE = "box-no-image-size"  # pixel box, but the pair has no positive width/height
BOX_NOT_FINITE = "box-not-finite"  # a coordinate is missing, NaN or infinite
BOX_OUTSIDE_IMAGE = "box-outside-image"  # a normalised coordinate outside [0, 1] (beyond udfs.grounding.BOX_EPSILON)
BOX_DEGENERATE = "box-degenerate"  # x_min >= x_max or y_min >= y_max: inverted or zero area
BOX_TOO_MANY = "box-too-many"  # beyond udfs.grounding.MAX_BOXES_PER_ROW valid boxes for one pair (lowest scores)

# ground: what became of a box that passed the checks (BOX_VERDICT.outcome)
KEPT = "kept"  # grounded: in the pair's noun_chunks / ref_exps
ABSTRACT = "abstract"  # on a chunk whose root lemma is one of ground.abstract_nouns
UNMATCHED = "unmatched"  # its span is no noun chunk of the caption
BELOW_SCORE = "below-score"  # score not above ground.min_score
SUPPRESSED = "suppressed"  # removed by NMS (ground.nms_iou)
CONTAINED = "contained"  # ground.drop_contained: its expression lies inside a higher-ranked one
ERROR = "error"  # its pair row failed (ground-error)

# winnow detect: why a pair row got no boxes from the detector (beyond the image codes above)
SPAN_INVALID = "span-invalid"  # a noun chunk outside its caption, or no caption
ID_MISSING = "id-missing"  # the row has no id: its boxes could not be joined to it
DETECTOR_ERROR = "detector-error"  # the detector raised on this row
DETECTOR_BAD_OUTPUT = "detector-bad-output"  # not one list per phrase, or a box check_box refuses

FETCH_REASONS = (
    URL_INVALID,
    UNSUPPORTED_SCHEME,
    PATH_OUTSIDE_ROOT,
    FILE_MISSING,
    IMAGE_MISSING,
    DNS,
    SSRF_REFUSED,
    CONNECT,
    TIMEOUT,
    TLS,
    HTTP_3XX,
    HTTP_4XX,
    HTTP_5XX,
    TOO_MANY_REDIRECTS,
    TOO_LARGE,
    TRUNCATED,
    ROBOTS_OPTOUT,
)
IMAGE_RULE_REASONS = (
    SCORE_NSFW,  # the input's own NSFW scores, before fetching (the score stage's rule, udfs.score_filters)
    FILE_TOO_SMALL,
    UNDECODABLE,
    TOO_MANY_PIXELS,
    LOW_RESOLUTION,
    ASPECT_RATIO,
    IMAGE_ERROR,
)

REASONS = {
    INGEST: (MALFORMED_RECORD, MISSING_URL, MISSING_CAPTION, MISSING_ID),
    TEXT: (
        TOO_SHORT,
        TOO_LONG,
        TOO_FEW_WORDS,
        TOO_MANY_WORDS,
        NSFW_WORD,
        WRONG_LANGUAGE,
        TOO_FREQUENT,
        NO_NOUN,
    ),
    IMAGE: FETCH_REASONS + IMAGE_RULE_REASONS,
    SCORE: (
        SCORE_FAILED,
        SCORE_NSFW,
        SCORE_WATERMARK,
        SCORE_LOW_AESTHETIC,
        SCORE_LOW_SIMILARITY,
        SCORE_BELOW_QUANTILE,
    ),
    DEDUP: (PHASH_INVALID, EVAL_OVERLAP, DUPLICATE_PAIR, HISTORY_DUPLICATE, NEAR_DUPLICATE),
    GROUND: (NO_GROUNDING, GROUND_ERROR),
}

# Reasons of the Boxes table's rows, in the order they are checked: the pair first, then
# udfs.grounding.check_box's order, then the per-pair cap.
BOX_REASONS = (
    BOX_NO_PAIR,
    BOX_SPAN_INVALID,
    BOX_SCORE_INVALID,
    BOX_NO_IMAGE_SIZE,
    BOX_NOT_FINITE,
    BOX_OUTSIDE_IMAGE,
    BOX_DEGENERATE,
    BOX_TOO_MANY,
)
BOX_OUTCOMES = (KEPT, ABSTRACT, UNMATCHED, BELOW_SCORE, SUPPRESSED, CONTAINED, ERROR)

DETECT_FAILURES = (
    IMAGE_MISSING,
    UNDECODABLE,
    TOO_MANY_PIXELS,
    SPAN_INVALID,
    ID_MISSING,
    DETECTOR_ERROR,
    DETECTOR_BAD_OUTPUT,
)
# Always in a blocklist's manifest (0 when none); any other code that occurs is added.
BLOCKLIST_REASONS = (UNDECODABLE, TOO_MANY_PIXELS, PHASH_INVALID, IMAGE_MISSING)
