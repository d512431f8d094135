"""Reject reason codes, one per rule.

A rejected row carries ``stage`` (one of ``STAGES``) and ``reason`` (one of the
codes below). The codes are part of the output contract: dashboards and
downstream jobs group by them, so a code is never renamed, only added.

The grounding stage also judges rows of a second input, the Boxes table: those
verdicts are not pair rejects, so their codes live in ``BOX_REASONS``, apart
from ``REASONS``.
"""

from __future__ import annotations

from udfs import grounding

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
TOO_SHORT = "text-too-short"  # length <= 5 characters after normalisation
TOO_LONG = "text-too-long"  # length > 1000 characters
TOO_FEW_WORDS = "text-too-few-words"  # fewer than 3 words
TOO_MANY_WORDS = "text-too-many-words"  # more than 256 words
NSFW_WORD = "text-nsfw-word"  # a word from the NSFW word lists
WRONG_LANGUAGE = "text-wrong-language"  # CLD3's top language is not text.language (en)
TOO_FREQUENT = "text-too-frequent"  # the text occurs more than 10 times in the input
NO_NOUN = "text-no-noun"  # spaCy finds no noun

# image: obtaining the bytes (HTTP fetch, local file, or bytes in the source row)
URL_INVALID = "url-invalid"  # not a parseable URL (or longer than 8,192 characters)
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
NSFW_SCORE = "image-nsfw-score"  # an NSFW score column >= image.max_nsfw_score (checked before fetching)
FILE_TOO_SMALL = "image-file-too-small"  # fewer than image.min_bytes bytes (5 KiB)
UNDECODABLE = "image-undecodable"  # Pillow cannot identify or fully decode it
TOO_MANY_PIXELS = "image-too-many-pixels"  # width x height above image.max_pixels (decompression bomb)
LOW_RESOLUTION = "image-low-resolution"  # min(width, height) < 200
ASPECT_RATIO = "image-aspect-ratio"  # long side / short side > 3.0
IMAGE_ERROR = "image-error"  # an unexpected error while handling this row; detail has it

# score: model scores over the kept images (udfs.scorers), in the order they are applied
SCORE_FAILED = "score-failed"  # no or undecodable image bytes, a scorer raised on the row, or NaN; detail says why
SCORE_NSFW = "score-nsfw"  # an nsfw_score_* column >= score.max_nsfw_score (COYO: 0.5)
SCORE_LOW_SIMILARITY = "score-low-similarity"  # clip similarity < score.min_similarity (LAION: 0.28, ViT-B/32)
SCORE_BELOW_QUANTILE = "score-below-quantile"  # clip similarity below the top score.top_fraction (DataComp)

# dedup, in the order they are applied
PHASH_INVALID = "phash-invalid"  # no pHash, or not 16 hex digits (a source's own column)
EVAL_OVERLAP = "eval-overlap"  # within dedup.blocklist_distance of an eval-set blocklist hash; detail names it
DUPLICATE_PAIR = "duplicate-pair"  # same (pHash, caption) as an earlier pair; detail has the winner's id
HISTORY_DUPLICATE = "history-duplicate"  # same (pHash, caption) as an accepted pair of an earlier dump
NEAR_DUPLICATE = "near-duplicate"  # pHash within dedup.near_distance of a pair kept instead

# ground: pair rows (GRIT / Kosmos-2 section 2)
NO_GROUNDING = grounding.NO_GROUNDING  # no noun chunk of the caption keeps a box (or the row has no boxes)
GROUND_ERROR = "ground-error"  # the row's spans do not fit its caption, or another bug; detail has it

# ground: rows of the Boxes table (the stage's box_verdicts), one definition in udfs.grounding
BOX_SPAN_INVALID = grounding.BOX_SPAN_INVALID  # start/end missing, start < 0, end > caption length, or start >= end
BOX_SCORE_INVALID = grounding.BOX_SCORE_INVALID  # score missing, NaN, or outside [0, 1]
BOX_NO_IMAGE_SIZE = grounding.BOX_NO_IMAGE_SIZE  # pixel box, but the pair has no positive width/height
BOX_NOT_FINITE = grounding.BOX_NOT_FINITE  # a coordinate is missing, NaN or infinite
BOX_OUTSIDE_IMAGE = grounding.BOX_OUTSIDE_IMAGE  # a normalised coordinate outside [0, 1]
BOX_DEGENERATE = grounding.BOX_DEGENERATE  # x_min >= x_max or y_min >= y_max
BOX_NO_PAIR = "box-no-pair"  # no accepted pair has the box's id (or the id is null)
BOX_TOO_MANY = "box-too-many"  # beyond jobs.ground.MAX_BOXES_PER_ROW valid boxes for one pair (lowest scores)

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
    NSFW_SCORE,
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
    SCORE: (SCORE_FAILED, SCORE_NSFW, SCORE_LOW_SIMILARITY, SCORE_BELOW_QUANTILE),
    DEDUP: (PHASH_INVALID, EVAL_OVERLAP, DUPLICATE_PAIR, HISTORY_DUPLICATE, NEAR_DUPLICATE),
    GROUND: (NO_GROUNDING, GROUND_ERROR),
}

# Reasons of the Boxes table's rows, in the order they are checked: the pair first, then
# udfs.grounding.check_box's order, then the per-pair cap.
BOX_REASONS = (BOX_NO_PAIR, *grounding.BOX_REASONS, BOX_TOO_MANY)
