"""Pipelines as folders the Hugging Face Hub understands, and the parts of one read back.

A saved pipeline is one folder, as diffusers lays out a pipeline (one subfolder per part and an
index): `tokenizer/` and `prior/` (each `config.json` + `model.safetensors`, never a training
state), `model_index.json` naming the parts and the format, a model card `README.md` (`card`), a
sample grid and, when the runs were evaluated, `eval.json`. It is written beside the folder it
replaces and renamed into place once whole; it never replaces anything but a saved pipeline, nor
a folder that holds (or lies inside) the runs being saved. Only safetensors are ever loaded as
weights: a pickle in their place fails to parse and is refused in one line, never unpickled."""

import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from vq.pipeline.errors import VQError
from vq.pipeline.evaluate.report import REPORT, EvalReport
from vq.pipeline.files import UMASK, atomic_write_json, read_json
from vq.pipeline.records import PriorRecord, RunRecord, TokenizerRecord

INDEX = "model_index.json"
INDEX_FORMAT = 1
RECONSTRUCTIONS = "reconstructions.png"  # a tokenizer run's test images above its reconstructions
MAX_RECONSTRUCTIONS = 16 * 2**20
READS = ["*.json", "*.safetensors", "*.png", "*.md"]  # all that a saved pipeline holds and vq reads
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
PART = re.compile(r"[\w-][\w.-]{0,99}")  # a part's sub-folder, as model_index.json names it
WEIGHTS = "model.safetensors"


def is_pipeline_source(source) -> bool:
    """A saved pipeline folder, or a name that can only be a Hub id (no such path here)."""
    path = Path(source)
    return (path / INDEX).is_file() or (not path.exists() and bool(REPO_ID.match(str(source))))


def resolve(source, revision: str | None = None, cache_dir: Path | None = None) -> Path:
    """A saved pipeline folder, or a Hub repo id fetched (or found in the cache) -> the local folder."""
    path = Path(source)
    if path.exists():
        if not (path / INDEX).is_file():
            raise VQError(f"{path} is no saved pipeline (no {INDEX}); give a folder written by `vq save`, a Hub id "
                          "(user/name), or --tokenizer and --prior run directories")
        return path
    if not REPO_ID.match(str(source)):
        raise VQError(f"{source} does not exist; give a saved pipeline folder or a Hub id (user/name)")
    from vq.pipeline.share.hub import fetch  # huggingface_hub's Hub client: imported when a Hub id is loaded

    return fetch(str(source), revision, cache_dir)


def read_index(folder: Path) -> dict:
    """model_index.json, checked: written by vq, a format this vq reads, and parts named by
    relative folder names (a crafted index may hold anything)."""
    path = Path(folder) / INDEX
    index = read_json(path)
    if not isinstance(index, dict) or index.get("library") != "vq" or "tokenizer" not in index:
        raise VQError(f"{path} was not written by vq; give a folder written by `vq save`")
    version = index.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise VQError(f"{path}: format_version must be a whole number, not {str(version)[:40]!r}")
    if version > INDEX_FORMAT:
        raise VQError(f"{folder} was saved by a newer vq (format {version}); upgrade vq")
    for part in ("tokenizer", "prior"):
        value = index.get(part)
        if (value is None and part == "prior") or (isinstance(value, str) and PART.fullmatch(value)):
            continue
        raise VQError(f"{path}: '{part}' must name a sub-folder (letters, digits, '-', '_', '.'), not {str(value)[:40]!r}")
    return index


def parts(source, revision: str | None = None, cache_dir: Path | None = None) -> tuple[Path, Path | None]:
    """(tokenizer dir, prior dir or None) of a saved pipeline folder or Hub id."""
    folder = resolve(source, revision, cache_dir)
    index = read_index(folder)
    within = [folder / index[part] for part in ("tokenizer", "prior") if index.get(part)]
    if any(folder.resolve() not in (p.resolve(), *p.resolve().parents) for p in within):
        raise VQError(f"{folder / INDEX} names a part outside its folder")
    return folder / index["tokenizer"], (folder / index["prior"] if index.get("prior") else None)


def check_out(out: Path, force: bool, inputs: list[Path]) -> None:
    """Refuse an OUT that would lose something: one that is, holds or lies inside a run (or saved
    folder) being saved, or a folder holding anything but a saved pipeline; `force` replaces only
    a saved pipeline (an empty folder needs no force)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise VQError(f"{out} is a file; give a folder for the saved pipeline")
    target = out.resolve()
    for run in inputs:
        run = Path(run).resolve()
        if target == run or target in run.parents or run in target.parents:
            where = "is" if target == run else "lies inside" if run in target.parents else "holds"
            raise VQError(f"{out} {where} {run.name}, which is being saved; choose a folder outside the runs")
    if not out.exists() or not any(out.iterdir()):
        return
    try:
        index = read_index(out)
    except VQError:
        raise VQError(f"{out} holds files that are no saved pipeline; choose an empty or new folder "
                      "(--force replaces only a pipeline saved by vq)") from None
    ours = {INDEX, "README.md", "samples.png", REPORT} | {index[part] for part in ("tokenizer", "prior") if index.get(part)}
    other = sorted(p.name for p in out.iterdir() if p.name not in ours)
    if other:
        raise VQError(f"{out} holds a saved pipeline and more ({other[0]}); --force replaces only a folder that holds "
                      "nothing but a saved pipeline: choose another folder")
    if not force:
        raise VQError(f"{out} holds a saved pipeline; pass --force to replace it, or choose another folder")


@contextmanager
def replacing(out: Path):
    """Write a folder beside `out` and put it in its place only once it is whole: a failure
    midway leaves `out` as it was (and removes the half-written folder)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.saving-"))
    try:
        yield fresh
        fresh.chmod(0o777 & ~UMASK)  # mkdtemp's folder is private: give it a folder's usual mode
        old = out.parent / f".{out.name}.old-{fresh.name.rsplit('-', 1)[-1]}"
        if out.exists():
            out.rename(old)
        fresh.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(fresh, ignore_errors=True)


def save_part(record: RunRecord, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(record.run_dir / WEIGHTS, out / WEIGHTS)  # the very bytes fingerprinted
    record.portable().write(out)


def write_index(out: Path, prior: bool, class_names: list[str]) -> None:
    atomic_write_json(out / INDEX, {"library": "vq", "format_version": INDEX_FORMAT, "tokenizer": "tokenizer",
                                    "prior": "prior" if prior else None, "class_names": class_names})


def save(out: Path, tok: TokenizerRecord, prior: PriorRecord | None, report: EvalReport | None, grid, grid_note: str, *,
         license: str, name: str | None, force: bool) -> Path:
    """Write a pipeline's parts, index, report, sample grid (a Pillow image) and model card as one
    folder at `out` (`check_out` says what it may replace; a link is followed to its folder)."""
    from vq.pipeline.share.card import model_card  # huggingface_hub's ModelCard: imported when a card is written

    out = Path(out).resolve()
    check_out(out, force, [record.run_dir for record in (tok, prior) if record is not None])
    with replacing(out) as fresh:
        save_part(tok, fresh / "tokenizer")
        recon = tok.run_dir / RECONSTRUCTIONS  # the studio's Model tab shows it; a plain file only, never a link
        if recon.is_file() and not recon.is_symlink() and recon.stat().st_size <= MAX_RECONSTRUCTIONS:
            shutil.copyfile(recon, fresh / "tokenizer" / RECONSTRUCTIONS)
        if prior is not None:
            save_part(prior, fresh / "prior")
        write_index(fresh, prior is not None, list(tok.class_names))
        if report is not None:
            report.write(fresh / REPORT)
        grid.save(fresh / "samples.png")
        (fresh / "README.md").write_text(model_card(tok.portable(), prior and prior.portable(), report, license=license,
                                                    grid_note=grid_note, name=name or out.name))
    return out


def files_of(folder: Path) -> list[str]:
    """What `push` uploads: every file vq reads in the folder, as relative paths."""
    folder = Path(folder)
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.is_file() and any(p.match(pattern) for pattern in READS))
