"""Config of the code prior. The code-map geometry, class count and image size come from the
exported codes."""

from dataclasses import dataclass

CONDITIONS = ("class", "sketch")  # `condition`: what a prior reads beside the codes
SKETCH_STYLES = ("free", "edges")  # `sketch_styles`: what a sketch prior trains on


@dataclass
class PriorConfig:
    codebook_size: int = 512
    height: int = 7
    width: int = 7
    num_classes: int = 10
    dim: int = 256
    depth: int = 4
    heads: int = 4
    ff_mult: int = 4
    dropout: float = 0.1  # attention, feed-forward and embedding dropout
    class_dropout: float = 0.1  # share of training rows whose class is replaced by the null class (a sketch prior: twice, half with the sketch)
    kv_heads: int | None = None  # grouped-query attention: key/value heads shared by query heads (None: heads)
    condition: str = "class"  # "class", or "sketch": also reads an edge map of the image (cross-attention)
    sketch_size: int = 28  # the edge map's side: the images' (set from the codes)
    sketch_dropout: float = 0.1  # share of training rows whose sketch alone is replaced by the null sketch
    # What a sketch prior trains on: "free" (new runs, NEW_RUN): free-hand styles drawn per row
    # from the edges and outlines (pipeline.sketch_styles), or "edges": the detector's maps alone
    # (what runs before the key existed did, hence the field's default). Measured: the README's
    # "Free-hand drawings".
    sketch_styles: str = "edges"
    # A free-styles prior's sketch encoder also reads whether a sketch is a drawing (1) or the
    # detector's exact edge map (0) as a second channel, so it can follow edge maps exactly and
    # drawings loosely: training gives a share of rows their edge map with 0 and the rest a
    # free-hand style with 1 (one of which, now and then, is the edge map left as it was);
    # drawings are read with 1 (`sketch.as_drawing`), edge maps with 0. New runs get True
    # (NEW_RUN); free runs made before the key existed read one channel (False), and resume
    # with today's deformations (pipeline.sketch_styles), which the config does not record.
    drawing_flag: bool = False
    # A free-styles sketch prior also learns to tell a drawing's class (`conditions.SketchRecogniser`,
    # a small CNN beside the prior, trained in the same steps on free-hand sketches of the batch
    # stretched to other proportions): a drawing given without its class is sampled as the class it
    # reads as, framed to that class's proportions (README, "Drawings against exact outlines").
    # New runs get True (NEW_RUN); runs made before the key existed have none.
    recogniser: bool = False

    # Keys whose value for a new run differs from what an old run's config, which lacks them, means.
    NEW_RUN = {"sketch_styles": "free", "drawing_flag": True, "recogniser": True}
    # Each number's range (inclusive): what a config file or a saved run may hold; loading checks
    # them before anything is built (`pipeline.configs.build`). `validate` adds the rules between fields.
    RANGES = {"codebook_size": (1, 65536), "height": (1, 1024), "width": (1, 1024), "num_classes": (1, 100_000),
              "dim": (1, 16384), "depth": (1, 256), "heads": (1, 256), "ff_mult": (1, 64), "dropout": (0, 1),
              "class_dropout": (0, 1), "kv_heads": (1, 256), "sketch_size": (1, 4096), "sketch_dropout": (0, 1)}

    def validate(self) -> None:
        for name in ("codebook_size", "height", "width", "num_classes", "dim", "depth", "heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} is not divisible by heads {self.heads}")
        if not 0 <= self.dropout < 1 or not 0 <= self.class_dropout < 1:
            raise ValueError("dropout and class_dropout must lie in [0, 1)")
        if self.kv_heads is not None and (self.kv_heads < 1 or self.heads % self.kv_heads):
            raise ValueError(f"kv_heads {self.kv_heads} must divide heads {self.heads}")
        if self.condition not in CONDITIONS:
            raise ValueError(f"condition must be one of {', '.join(CONDITIONS)}, not {self.condition!r}")
        if self.sketch_styles not in SKETCH_STYLES:
            raise ValueError(f"sketch_styles must be one of {', '.join(SKETCH_STYLES)}, not {self.sketch_styles!r}")
        if self.condition == "sketch":
            if not 0 <= self.sketch_dropout < 1 or 2 * self.class_dropout + self.sketch_dropout >= 1:
                raise ValueError("sketch_dropout must lie in [0, 1), with 2 x class_dropout + sketch_dropout below 1")
            if self.height != self.width or self.sketch_size % self.height:
                raise ValueError(f"a sketch prior needs a square code grid that divides the image size "
                                 f"({self.height}x{self.width} codes, {self.sketch_size} px images)")

    @property
    def conditions(self) -> frozenset[str]:
        """What a sample can be conditioned on."""
        return frozenset({"class", "sketch"} if self.condition == "sketch" else {"class"})

    @property
    def sketch_channels(self) -> int:
        """Channels the sketch encoder reads: the lines, and for a flagged free-styles prior the drawing flag."""
        return 2 if self.sketch_styles == "free" and self.drawing_flag else 1

    @property
    def recognises(self) -> bool:
        """Whether the prior has a drawing recogniser: asked for, on a prior trained on free-hand sketches."""
        return self.recogniser and self.condition == "sketch" and self.sketch_styles == "free"

    @property
    def seq_len(self) -> int:
        return self.height * self.width
