"""The `vq eval` report (`eval.json`), read, written, found and rendered here and nowhere else: its
summary rows for the model card and the studio, and its tables for the command line.

A report is an `EvalReport`: what was evaluated and how (the sampling options under their API
names), the judge's own accuracy, then each stage's figures as `evaluate` measured them. Reports
written by earlier versions (guidance under `cfg`, a prior's figure under its key) read unchanged.
A report is found beside what it describes: in the prior's run (a VAE's: the tokenizer's), or
beside the parts of a saved pipeline."""

from dataclasses import asdict, dataclass, field
from pathlib import Path

from vq.pipeline.errors import VQError
from vq.pipeline.files import atomic_write_json, read_json
from vq.pipeline.records import cut_words

REPORT = "eval.json"
INDEX = "model_index.json"  # a saved pipeline's index (`share.folder`): its report lies beside its parts
# Prior figures of reports written before a report named its prior's figure (`Prior.held_out`).
LEGACY_PRIOR = {"test_bits_per_token": "test bits / code token",
                "test_masked_bits_per_code": "test masked-code cross-entropy, bits (not a likelihood)"}
JUDGED = (("real train images (the floor)", "real_train"), ("reconstructions", "reconstructions"), ("samples", "samples"))


MARKUP = "\\`*_[]<>|!#~&"  # what Markdown or HTML would read as markup in a table cell


def markdown_text(text) -> str:
    """Text for a Markdown table cell, its markup characters as entities: a report or a class name
    from someone else's folder can add no link, image or HTML to a page or a card."""
    return "".join(f"&#{ord(ch)};" if ch in MARKUP else ch for ch in str(text)).replace("\n", " ")


@dataclass
class Table:
    """A table as the command line prints it: plain strings, right-aligned but the first column."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    left: int = 1  # the first columns, left-aligned (words); the rest are figures


@dataclass
class EvalReport:
    tokenizer_model: str = ""
    dataset: dict = field(default_factory=dict)  # the dataset's description (spec, sizes)
    sampling: dict = field(default_factory=dict)  # the options samples were drawn with, by their API names, and per_class
    classifier: dict = field(default_factory=dict)  # the judge: test_acc, dir
    tokenizer: dict = field(default_factory=dict)  # test figures: mse, psnr, ssim, sharpness (usage, perplexity)
    real_train: dict = field(default_factory=dict)  # each judged set: n, acc, fd (Fréchet distance of judge features), per_class
    reconstructions: dict = field(default_factory=dict)
    samples: dict = field(default_factory=dict)
    prior: dict | None = None  # its held-out figure: name, label, bits (bits_per_dim), or skipped
    completion: dict | None = None
    fid: dict | None = None
    sweep: list = field(default_factory=list)
    sketch: dict | None = None
    drawings: dict | None = None
    device: str = ""
    seconds: float = 0.0
    tokenizer_dir: str = ""

    # --- reading and writing ----------------------------------------------------------------

    @classmethod
    def from_json(cls, d: dict, where: str) -> "EvalReport":
        try:
            d = dict(d)
            d["sampling"] = {("guidance" if k == "cfg" else "class_guidance" if k == "class_cfg" else k): v
                             for k, v in d.get("sampling", {}).items()}
            prior = d.get("prior")
            if prior and "name" not in prior and "skipped" not in prior:
                name = next(k for k in LEGACY_PRIOR if k in prior)
                d["prior"] = {"name": name[len("test_"):], "label": LEGACY_PRIOR[name], "bits": prior[name],
                              **({"bits_per_dim": prior["test_bits_per_dim"]} if "test_bits_per_dim" in prior else {})}
            known = {f for f in cls.__dataclass_fields__}
            return cls(**{k: v for k, v in d.items() if k in known})
        except (KeyError, TypeError, ValueError, AttributeError, StopIteration):
            raise VQError(f"{where} is not in the form `vq eval` writes") from None

    @classmethod
    def read(cls, path: Path) -> "EvalReport":
        return cls.from_json(read_json(path), str(path))

    def write(self, path: Path) -> None:
        atomic_write_json(Path(path), asdict(self))

    @classmethod
    def find(cls, run_dirs: list[Path]) -> "EvalReport | None":
        """The latest report of these runs (the prior's first): eval.json in a run, or, for a saved
        pipeline's parts, beside them; None when there is none or it is not a report (a saved folder
        is someone else's: its eval.json may hold anything)."""
        saved = [d.parent for d in run_dirs if (d.parent / INDEX).is_file()]
        path = next((d / REPORT for d in [*run_dirs, *saved] if (d / REPORT).is_file()), None)
        try:
            return cls.read(path) if path is not None else None
        except VQError:
            return None

    # --- the summary, for the model card and the studio ------------------------------------

    def rows(self) -> list[tuple[str, str, str]]:
        """(stage, figure, value), the headline figures of each stage."""
        rows = [("classifier", "test accuracy (the judge)", f"{self.classifier['test_acc']:.4f}")] if self.classifier else []
        rows += [("tokenizer", f"test {k}", f"{v:.4g}") for k, v in self.tokenizer.items()]
        if self.prior and "bits" in self.prior:
            rows.append(("prior", self.prior["label"], f"{self.prior['bits']:.4f}"))
        if self.completion:
            rows.append(("completion", f"true class kept, with class (n={self.completion['n']})",
                         f"{self.completion['acc_with_class']:.4f}"))
        for name, key in JUDGED:
            judged = getattr(self, key)
            if not judged:
                continue
            stage = "samples" if key == "samples" else "reference"
            how = f"n={judged['n']}" + (f", guidance {self.sampling['guidance']:g}{self.cuts()}" if key == "samples" and self.sampling else "")
            if "acc" in judged:
                rows.append((stage, f"{name}: class accuracy ({how})", f"{judged['acc']:.4f}"))
            rows.append((stage, f"{name}: Fréchet distance of judge features ({how})", f"{judged['fd']:.3f}"))
        if self.fid and "fid" in self.fid:
            rows.append(("samples", f"FID, Inception-v3 ({self.fid['n_samples']} samples against {self.fid['reference']})",
                         f"{self.fid['fid']:.3f}"))
        if self.sketch:
            rows.append(("sketch", "edge F1, sketch + class", f"{self.sketch['sketch_and_class']['edge_f1']:.4f}"))
        return rows

    def markdown(self) -> str:
        """The summary as a Markdown table (the card's and the studio's); a report whose figures are
        not all where `vq eval` writes them (someone else's folder) is said to be so."""
        try:
            rows = self.rows()
        except (KeyError, TypeError, ValueError, AttributeError):
            rows = [("report", REPORT, "not in the form `vq eval` writes: not shown")]
        return "| stage | figure | value |\n|---|---|---:|\n" + "".join(
            f"| {markdown_text(a)} | {markdown_text(b)} | {markdown_text(c)} |\n" for a, b, c in rows)

    @property
    def fid_protocol(self) -> str | None:
        return self.fid.get("protocol") if self.fid and "fid" in self.fid else None

    @property
    def measured(self) -> list[str]:
        """The Hub's names of the metrics it holds (`accuracy`, `fid`)."""
        return ["accuracy"] + (["fid"] if self.fid and "fid" in self.fid else [])

    # --- the command line's tables ---------------------------------------------------------------

    def tables(self, out: str) -> list[Table]:
        """Every figure, in the tables `vq eval` prints."""
        tables = [self.stage_table(out)] + ([self.judged_table()] if self.samples else [])
        if self.samples.get("per_class"):
            tables.append(self.per_class_table())
        if self.sketch:
            tables.append(self.sketch_table())
        if self.drawings:
            tables.append(self.drawings_table())
        if self.sweep:
            tables.append(Table("guidance sweep", ["guidance", "temperature", "n", "class acc", "Fréchet dist."],
                                [[f"{r.get('guidance', r.get('cfg'))}", f"{r['temperature']}", str(r["n"]), f"{r['acc']:.4f}",
                                  f"{r['fd']:.3f}"] for r in self.sweep]))
        return tables

    def stage_table(self, out: str) -> Table:
        rows = [["classifier", "test accuracy", f"{self.classifier['test_acc']:.4f}"]] if self.classifier else []
        rows += [["tokenizer", f"test {k}", f"{v:.4g}"] for k, v in self.tokenizer.items()]
        if self.prior and "skipped" in self.prior:
            rows.append(["prior", "held-out figure", f"skipped: {self.prior['skipped']}"])
        elif self.prior:
            rows.append(["prior", self.prior["label"], f"{self.prior['bits']:.4f}"])
            if "bits_per_dim" in self.prior:
                rows.append(["prior", "test bits / pixel dim", f"{self.prior['bits_per_dim']:.4f}"])
        if self.completion:
            c = self.completion
            rows.append(["completion", f"true class kept, with class (n={c['n']})", f"{c['acc_with_class']:.4f}"])
            rows.append(["completion", f"true class kept, unconditional (n={c['n']})", f"{c['acc_unconditional']:.4f}"])
        if self.fid:
            rows += self.fid_rows()
        return Table(f"vq eval: {self.tokenizer_model} on {self.dataset.get('spec')} -> {out}", ["stage", "metric", "value"], rows, 2)

    def fid_rows(self) -> list[list[str]]:
        f = self.fid
        if "fid" not in f:
            return [["samples", "FID (Inception-v3)", "skipped"]]
        official = "" if f.get("standard_weights", True) else ", NOT the released weights: compares with nothing"
        rows = [["samples", "FID (Inception-v3)", f"{f['fid']:.3f} (n={f['n_samples']} vs {f['n_reference']}{official})"]]
        if "inception_score" in f:
            rows.append(["samples", "Inception Score", f"{f['inception_score']:.3f} ± {f['inception_score_std']:.3f}"])
        return rows

    def cuts(self) -> str:
        """The samples' top-k / top-p as a title reads them (", top-k 64"), or "" for none."""
        s = self.sampling or {}
        return cut_words(s.get("top_k"), s.get("top_p"))

    def judged_table(self) -> Table:
        s = self.sampling
        return Table(f"class accuracy and Fréchet distance to the test split (guidance {s['guidance']}, T {s['temperature']}"
                     f"{self.cuts()})",
                     ["images", "n", "class acc", "Fréchet dist."],
                     [[name, str(getattr(self, key)["n"]), f"{getattr(self, key)['acc']:.4f}" if "acc" in getattr(self, key)
                       else "n/a", f"{getattr(self, key)['fd']:.3f}"] for name, key in JUDGED])

    def per_class_table(self) -> Table:
        real = self.real_train.get("per_class", {})
        return Table("per class", ["class", "samples acc", "real acc", "samples FD", "real FD"],
                     [[name, f"{v['acc']:.3f}", f"{real.get(name, {}).get('acc', float('nan')):.3f}", f"{v['fd']:.2f}",
                       f"{real.get(name, {}).get('fd', float('nan')):.2f}"] for name, v in self.samples["per_class"].items()])

    def sketch_table(self) -> Table:
        sk = self.sketch
        guidance = sk.get("guidance", sk.get("cfg"))
        names = (("sketch + class", "sketch_and_class"), ("sketch alone", "sketch_only"), ("class alone (floor)", "class_only"),
                 ("reconstructions", "reconstructions"), ("real images (the sketches' source)", "real"))
        return Table(f"sketches: edge agreement with {sk['n']} test sketches (F1 at 1 px; guidance {guidance})",
                     ["images", "edge F1", "class acc", "Fréchet dist."],
                     [[name, f"{sk[key]['edge_f1']:.4f}", f"{sk[key]['acc']:.4f}", f"{sk[key]['fd']:.3f}"] for name, key in names])

    def drawings_table(self) -> Table:
        d = self.drawings
        class_guidance = d.get("class_guidance", d.get("class_cfg"))
        with_class = f"the drawing + its class (class guidance {class_guidance:g}{', framed to it' if d.get('class_boxes') else ''})"
        alone = ("the drawing alone" if "recognised" not in d else  # sampled as the class it reads as (`generate.recognise`)
                 f"the drawing alone (as the class it reads as: its own in {d['recognised']:.0%} of the drawings)")
        return Table(f"free-hand drawings: {d['n_drawings']} from {d['dir']}, {d['per_drawing']} samples each "
                     f"(guidance {d.get('guidance', d.get('cfg'))})", ["samples given", "drawn class seen", "inside the drawing",
                                                                       "drawing covered"],
                     [[name, f"{d[key]['acc']:.4f}", f"{d[key]['inside']:.4f}", f"{d[key]['coverage']:.4f}"]
                      for name, key in ((alone, "sketch_only"), (with_class, "sketch_and_class"))])
