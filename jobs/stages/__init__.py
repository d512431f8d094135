"""The stages of the pipeline, in the order they run: each one module here, each one entry below.

``ingest`` always runs first; ``run.stages`` (``--stages``) picks from the
others, listed in this order. Each stage's config sections, checks, rules and
outputs are on its class (the interface: jobs/stage.py).
"""

from jobs.stages.dedup import DedupStage
from jobs.stages.ground import GroundStage
from jobs.stages.image import ImageStage
from jobs.stages.ingest import IngestStage
from jobs.stages.score import ScoreStage
from jobs.stages.text import TextStage

STAGES = (IngestStage, TextStage, ImageStage, ScoreStage, DedupStage, GroundStage)
