"""`vq export-codes`: a tokenizer's dataset (train and test) -> code maps, as compact
memory-mapped shards (`shards`) beside a record (`record.CodeRecord`, `meta.json`).

An export of the same tokenizer is reused; one that lacks the sketches a sketch prior needs gets
them added, its codes kept. Each file is written atomically, labels last, so a shard whose labels
exist is complete; `progress.json` names the tokenizer of an export in progress, which an
interrupted export resumes from its first missing shard; `meta.json` is written last and marks
the export complete. Under torchrun the shards are shared out over the ranks. The encoder runs
batched on the device."""

import shutil
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from vq.pipeline import distributed as dist
from vq.pipeline.checkpoint import load_model
from vq.pipeline.codes.maps import default_codes_dir
from vq.pipeline.codes.record import CODES_FORMAT, META, PROGRESS, SPLITS, CodeRecord, ExportProgress
from vq.pipeline.codes.shards import (SHARD_SIZE, code_dtype, detect_shard, encode_shard, new_sketch_record, save_npy,
                                      shard_name)
from vq.pipeline.data.loader import Skipped, default_workers
from vq.pipeline.data.sources import load_data
from vq.pipeline.data.splits import Split, StreamImages
from vq.pipeline.device import resolve_device
from vq.pipeline.errors import VQError
from vq.pipeline.files import run_lock, stored_path
from vq.pipeline.records import TokenizerRecord
from vq.pipeline.sketch.edges import OUTLINE_VERSION, SKETCH_DETECTOR
from vq.pipeline.threads import Threads


@dataclass
class Plan:
    """What an export does in its folder: add sketches to codes already there (`adding`), with or
    without sketches, and the export in progress it continues."""

    adding: bool
    sketches: bool
    progress: ExportProgress | None
    previous: CodeRecord | None


def export_codes(tokenizer_dir: Path, out: Path | None = None, *, device: str = "auto", batch_size: int = 500,
                 force: bool = False, workers: int | None = None, sketches: bool = False,
                 console: Console | None = None) -> CodeRecord:
    """Encode the tokenizer's dataset (and with `sketches`, detect every image's edges); reuse an
    export of the same tokenizer, and resume an interrupted one. Returns its record. Under
    torchrun every rank calls it and shares the work."""
    console = console or Console(stderr=True)
    out = default_codes_dir(tokenizer_dir) if out is None else Path(out)
    if out.exists() and not out.is_dir():
        raise VQError(f"{out} is a file; exported codes need a folder (--out of export-codes, --codes of fit-prior)")
    tok = TokenizerRecord.read(tokenizer_dir)
    if not tok.discrete:
        raise VQError(f"{tokenizer_dir} holds a {tok.kind.name}, which has no discrete codes; train a VQ-VAE (--model vqvae)")
    plan = plan_export(out, tok, force, sketches, console)
    if isinstance(plan, CodeRecord):
        return plan
    dev = resolve_device(device)
    dist.setup(dev)
    model = load_model(tok, dev)
    data = load_data(tok.data_options())
    if any(isinstance(getattr(data, name), StreamImages) for name in SPLITS):
        raise VQError(f"{tokenizer_dir} was trained on a stream; exporting a stream's codes is not supported yet. "
                      "Save the dataset to disk (datasets' save_to_disk) and train the tokenizer on it without --streaming")
    if data.class_names != list(tok.class_names):
        raise VQError(f"the dataset's classes changed since {tokenizer_dir} was trained")
    shards = {name: [shard_name(name, i) for i in range(max(1, -(-len(getattr(data, name)) // SHARD_SIZE)))] for name in SPLITS}
    workers = default_workers() if workers is None else workers
    lazy = not all(isinstance(getattr(data, name), Split) for name in SPLITS)  # only lazy data starts workers
    started = Threads(workers if lazy else 0, follow=False).start()
    if dist.is_main():
        console.print(started)
        start_folder(out, tok, force, plan)
    dist.barrier()
    with run_lock(out) if dist.is_main() else nullcontext():
        skipped = encode_all(out, model, data, shards, plan.sketches, dev, batch_size, workers, console)
        if dist.is_main():
            finish(out, tok, model, shards, plan.sketches, skipped, console)
    dist.barrier()
    return CodeRecord.read(out)


def plan_export(out: Path, tok: TokenizerRecord, force: bool, sketches: bool, console: Console) -> Plan | CodeRecord:
    """The record of an export to reuse as it is, or the plan of one to make (refusing another
    tokenizer's codes, or a folder that holds something else)."""
    previous = CodeRecord.read(out)
    current = previous is not None and not force and previous.current
    if current and (previous.has_sketches or not sketches):
        previous.check_tokenizer(tok, out)
        if dist.is_main():
            console.print(f"codes: reusing {out} (same tokenizer {tok.fingerprint})")
        return previous
    if previous is not None and not force:  # an older format, or no sketches: export, if it is this tokenizer's
        previous.check_tokenizer(tok, out)
        if dist.is_main():
            console.print(f"codes: {out} has no sketches of this vq's kind (edges of detector {SKETCH_DETECTOR} and "
                          f"outlines {OUTLINE_VERSION}); adding them" if current else
                          f"codes: {out} is in an older format; exporting again")
    sketches = sketches or bool(force and previous is not None and previous.has_sketches)  # a forced export keeps them
    progress = ExportProgress.read(out) if not force else None
    if progress is not None and progress.tokenizer_fingerprint != tok.fingerprint:
        raise VQError(f"{out} holds a partial export of another tokenizer; pass --force to replace it, or choose "
                      "another folder (--out of export-codes, --codes of fit-prior)")
    if out.exists() and any(out.iterdir()) and previous is None and progress is None and not force:
        raise VQError(f"{out} exists and holds something other than exported codes; choose another folder "
                      "(--out of export-codes, --codes of fit-prior)")
    return Plan(current, sketches or bool(progress and progress.sketches), progress, previous)


def start_folder(out: Path, tok: TokenizerRecord, force: bool, plan: Plan) -> None:
    """Rank 0: the folder ready for the shards, and the export in progress recorded."""
    out.mkdir(parents=True, exist_ok=True)
    if plan.adding and plan.progress is None:  # sketches of another detector version go
        for p in out.glob("*.sketch.npy"):
            p.unlink()
    if force or (plan.previous is not None and not plan.adding):  # a clean slate: drop the previous export first
        for p in list(out.glob("*.npy")) + [out / META, out / PROGRESS]:
            p.unlink(missing_ok=True)
        for old in SPLITS:  # the Hugging Face datasets folders of format 1
            if (out / old).is_dir():
                shutil.rmtree(out / old)
    ExportProgress(tok.fingerprint, plan.sketches).write(out)


def complete(out: Path, shard: str, sketches: bool) -> bool:
    return (out / f"{shard}.labels.npy").exists() and (not sketches or (out / f"{shard}.sketch.npy").exists())


def encode_all(out: Path, model, data, shards: dict, sketches: bool, dev, batch_size: int, workers: int,
               console: Console) -> int:
    """This rank's share of the shards not yet complete -> their files; returns the images skipped
    as unreadable over all ranks."""
    plan = [(name, i) for name in SPLITS for i in range(len(shards[name]))]
    mine = [(name, i) for j, (name, i) in enumerate(plan) if j % dist.world_size() == dist.rank()]
    todo = [(name, i) for name, i in mine if not complete(out, shard_name(name, i), sketches)]
    skipped = Skipped()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, disable=not dist.is_main()) as bar:
        task = bar.add_task("encoding shards", total=len(mine), completed=len(mine) - len(todo))
        for name, i in todo:
            split, shard = getattr(data, name), out / shard_name(name, i)
            lo, hi = i * SHARD_SIZE, min(len(split), (i + 1) * SHARD_SIZE)
            if shard.with_suffix(".labels.npy").exists():  # its codes are there: add the sketches
                expected = len(np.load(shard.with_suffix(".labels.npy"), mmap_mode="r"))
                save_npy(shard.with_suffix(".sketch.npy"),
                         detect_shard(split, lo, hi, batch_size, dev, workers, model.config.image_size, expected))
            else:
                codes, labels, packed = encode_shard(model, split, lo, hi, batch_size, dev, workers, skipped,
                                                     code_dtype(model.codebook_size), sketches)
                save_npy(shard.with_suffix(".codes.npy"), codes)
                if packed is not None:
                    save_npy(shard.with_suffix(".sketch.npy"), packed)
                save_npy(shard.with_suffix(".labels.npy"), labels)  # last: the shard is complete
            bar.advance(task)
    dist.barrier()
    if skipped.count and dist.is_main():
        console.print(f"[yellow]{skipped.summary()}[/yellow]")
    return int(dist.all_reduce_sum_(torch.tensor([skipped.count], device=dev))[0])


def finish(out: Path, tok: TokenizerRecord, model, shards: dict, sketches: bool, skipped: int, console: Console) -> None:
    """Rank 0: every shard there -> the record, written last (the export is complete)."""
    missing = [s for names in shards.values() for s in names if not complete(out, s, sketches)]
    if missing:
        raise VQError(f"the export in {out} lacks shard {missing[0]}; run it again to finish it")
    counts = {name: sum(len(np.load(out / f"{s}.labels.npy", mmap_mode="r")) for s in names) for name, names in shards.items()}
    size = model.config.image_size
    CodeRecord(CODES_FORMAT, tok.fingerprint, model.codebook_size, tuple(model.code_shape), tok.class_names, shards, counts,
               code_dtype(model.codebook_size), {"channels": model.config.channels, "image_size": size},
               stored_path(tok.run_dir, out), skipped, tok.dataset,  # skipped: this session's, over all ranks
               new_sketch_record(out, shards["train"], size, len(tok.class_names)) if sketches else None).write(out)
    (out / PROGRESS).unlink(missing_ok=True)
