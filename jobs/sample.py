"""The built-in sample used by `winnow demo` / `make demo`: generated, never downloaded.

Synthetic scenes described in plain English ("a small red circle above a blue
square on a wooden table"), mixed with rows that each COYO text rule should
reject, laid out as two crawl dumps (``dump=<name>/`` folders) of parquet.
The URLs point at 127.0.0.1, where the image stage's demo will serve them.
"""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

COLORS = ("red", "blue", "green", "yellow", "orange", "purple", "white", "black")
SHAPES = ("circle", "square", "triangle", "star", "rectangle")
SIZES = ("small", "large", "tiny", "big")
RELATIONS = ("above", "below", "next to", "to the left of", "to the right of")
BACKGROUNDS = ("a grey background", "a sandy beach", "a wooden table", "a white wall", "green grass")

# One kind of bad row per rule, each with the reason the demo should report.
BAD_ROWS = (
    ("text-too-short", "red"),
    ("text-too-short", "a cat"),
    ("text-too-long", "a red circle on a white wall " * 40),
    ("text-too-few-words", "red circle"),
    ("text-too-many-words", "a cat " * 130),  # 260 words in 780 characters
    ("text-nsfw-word", "a porn magazine next to a red circle"),
    ("text-wrong-language", "ein kleiner roter Kreis über einem blauen Quadrat auf einem Holztisch"),
    ("text-wrong-language", "un petit cercle rouge au-dessus d'un carré bleu sur une table en bois"),
    ("text-wrong-language", "un pequeño círculo rojo encima de un cuadrado azul sobre una mesa de madera"),
    # Chinese has no spaces: one "word", so the word-count rule fires before CLD3.
    ("text-too-few-words", "一个红色的圆圈在蓝色方块的上面"),
    ("text-no-noun", "very quickly and very quietly"),
    ("missing-caption", ""),
    ("missing-caption", None),
    ("missing-url", "a small green triangle next to a yellow star"),
)
SPAM = "click here to see the best deals on red circles today"  # appears 12 times: > 10


def scene_caption(rnd: random.Random) -> str:
    """One English description of a two-shape scene."""
    return (
        f"a {rnd.choice(SIZES)} {rnd.choice(COLORS)} {rnd.choice(SHAPES)} {rnd.choice(RELATIONS)} "
        f"a {rnd.choice(COLORS)} {rnd.choice(SHAPES)} on {rnd.choice(BACKGROUNDS)}"
    )


def sample_rows(n: int, seed: int = 0) -> list[dict]:
    """``n`` rows (n >= 100): about 90% scenes, the rest the bad rows above, shuffled."""
    rnd = random.Random(seed)
    rows: list[dict] = []
    copies = min(10, max(1, n // 200))  # at most 10 copies each: not "too frequent"
    for kind, caption in BAD_ROWS * copies:
        url = None if kind == "missing-url" else "placeholder"
        rows.append({"url": url, "caption": caption, "expect": kind})
    rows += [{"url": "placeholder", "caption": SPAM, "expect": "text-too-frequent"} for _ in range(12)]
    # Scenes with messy whitespace, tabs and zero-width spaces normalise to clean text.
    for _ in range(copies):
        rows.append(
            {"url": "placeholder", "caption": "  a big\tblue\u200b star\n\nnext to a red circle  ", "expect": ""}
        )
    while len(rows) < n:
        rows.append({"url": "placeholder", "caption": scene_caption(rnd), "expect": ""})
    rnd.shuffle(rows)
    for i, row in enumerate(rows):
        row["key"] = f"{i:06d}"
        if row["url"] is not None:
            row["url"] = f"http://127.0.0.1:8765/sample/{i:06d}.png"
    return rows[:n]


def write_sample(folder: str | Path, n: int = 2000, seed: int = 0) -> Path:
    """Write the sample as ``folder/dump=2026-01/`` and ``folder/dump=2026-02/`` parquet; return ``folder``."""
    folder = Path(folder)
    rows = sample_rows(n, seed)
    half = len(rows) // 2
    for dump, part in (("2026-01", rows[:half]), ("2026-02", rows[half:])):
        target = folder / f"dump={dump}"
        target.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pylist(
            part,
            schema=pa.schema(
                [("key", pa.string()), ("url", pa.string()), ("caption", pa.string()), ("expect", pa.string())]
            ),
        )
        pq.write_table(table, target / "part-0.parquet")
    return folder
