"""Pipelines as folders the Hugging Face Hub understands, and loading them back by folder or Hub id.

A saved pipeline is one folder, as diffusers lays out a pipeline (one subfolder per part and an
index): `tokenizer/` and `prior/` (each `config.json` + `model.safetensors`, never a training
state), `model_index.json` naming the parts and the format, a model card `README.md` whose YAML
block the Hub reads (`library_name: vq`, tags, dataset, license, metrics), a sample grid and,
when the runs were evaluated, `eval.json`. Hub ids are fetched with `snapshot_download`,
restricted to the files vq reads, so the Hub cache is reused and `HF_HUB_OFFLINE=1` works from
it. Only safetensors are ever loaded as weights: a pickle in their place fails to parse and is
refused in one line, never unpickled."""

import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from vq.pipeline.runs import VQError, atomic_write_json, read_json

INDEX = "model_index.json"
INDEX_FORMAT = 1
READS = ["*.json", "*.safetensors", "*.png", "*.md"]  # all that a saved pipeline holds and vq reads
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
PART = re.compile(r"[\w-][\w.-]{0,99}")  # a part's sub-folder, as model_index.json names it
# What a run records about the machine it ran on, which means nothing (and may tell too much) elsewhere.
LOCAL_KEYS = ("tokenizer_dir", "codes_dir")


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
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        folder = Path(snapshot_download(str(source), revision=revision, cache_dir=cache_dir, allow_patterns=READS,
                                        library_name="vq"))
    except (RepositoryNotFoundError, RevisionNotFoundError):
        raise VQError(f"the Hub has no model {source}{f' at revision {revision}' if revision else ''} "
                      "(or it is private: log in with `hf auth login`)") from None
    except LocalEntryNotFoundError:
        raise VQError(f"{source} is not in the Hugging Face cache and the Hub cannot be reached "
                      f"({'HF_HUB_OFFLINE is set' if os.environ.get('HF_HUB_OFFLINE') not in (None, '', '0') else 'no network'}); "
                      "download it once with network access") from None
    except (HfHubHTTPError, OSError) as e:
        raise VQError(f"cannot fetch {source} from the Hub: {str(e).splitlines()[0]}") from None
    if not (folder / INDEX).is_file():
        raise VQError(f"the Hub repo {source} is no vq pipeline (no {INDEX})")
    return folder


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


def portable(info: dict) -> dict:
    """A run's config.json as a saved pipeline keeps it: without paths of the machine it ran on."""
    info = {k: v for k, v in info.items() if k not in LOCAL_KEYS}
    if "data_options" in info:
        opts = {k: v for k, v in info["data_options"].items() if k != "spec_from_run"}
        if opts.get("spec") and Path(opts["spec"]).is_absolute():
            opts["spec"] = Path(opts["spec"]).name  # a local folder: its name tells what it was
        info["data_options"] = opts
    if isinstance(info.get("dataset"), dict):
        info["dataset"] = {k: v for k, v in info["dataset"].items() if k != "source"}
    return info


def save_part(run_dir: Path, info: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(run_dir) / "model.safetensors", out / "model.safetensors")  # the very bytes fingerprinted
    atomic_write_json(out / "config.json", portable(info))


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
        read_index(out)
    except VQError:
        raise VQError(f"{out} holds files that are no saved pipeline; choose an empty or new folder "
                      "(--force replaces only a pipeline saved by vq)") from None
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
        fresh.chmod(0o755)
        old = out.parent / f".{out.name}.old-{fresh.name.rsplit('-', 1)[-1]}"
        if out.exists():
            out.rename(old)
        fresh.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(fresh, ignore_errors=True)


def write_index(out: Path, prior: bool, class_names: list[str]) -> None:
    atomic_write_json(out / INDEX, {"library": "vq", "format_version": INDEX_FORMAT, "tokenizer": "tokenizer",
                                    "prior": "prior" if prior else None, "class_names": class_names})


def files_of(folder: Path) -> list[str]:
    """What `push` uploads: every file vq reads in the folder, as relative paths."""
    folder = Path(folder)
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.is_file() and any(p.match(pattern) for pattern in READS))


def push(folder: Path, repo_id: str, *, private: bool = False, token: str | None = None, dry_run: bool = False) -> dict:
    """Upload a saved pipeline folder to the Hub repo `repo_id` (created if missing); with dry_run,
    only list what would go up."""
    folder = Path(folder)
    read_index(folder)
    if not REPO_ID.match(repo_id):
        raise VQError(f"'{repo_id}' is no Hub repo id; use user/name")
    files = files_of(folder)
    if dry_run:
        return {"repo_id": repo_id, "files": files, "uploaded": False}
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(repo_id=repo_id, folder_path=str(folder), allow_patterns=READS,
                                   commit_message="Upload a vq pipeline")
    except (HfHubHTTPError, OSError) as e:
        raise VQError(f"cannot upload to {repo_id}: {str(e).splitlines()[0]}") from None
    return {"repo_id": repo_id, "files": files, "uploaded": True, "url": str(url), "commit": getattr(commit, "oid", None)}


def prior_kind(prior: dict) -> str:
    """What users call a stored prior (`vq fit-prior --kind`)."""
    from vq.stage2_prior import PRIOR_KINDS

    return next((kind for kind, name in PRIOR_KINDS.items() if name == prior["model"]), prior["model"])


def card_metadata(tokenizer: dict, prior: dict | None, report: dict | None, license: str):
    """The YAML block the Hub reads, as huggingface_hub writes it."""
    from huggingface_hub import ModelCardData

    from vq.pipeline.data import HUB_COPIES

    spec = (tokenizer.get("dataset") or {}).get("spec") or ""
    hub_id = HUB_COPIES.get(spec.lower(), spec)
    datasets = [hub_id] if REPO_ID.match(hub_id) else None  # the Hub links only its own dataset ids
    tags = ["vq", "image-generation", tokenizer["model"]]
    if prior is not None:
        tags += [f"{prior_kind(prior)}-prior", "class-conditional"] + (["sketch-to-image"] if prior["config"].get("condition") == "sketch" else [])
    metrics = [m for m, present in (("accuracy", report and "samples" in report), ("fid", report and "fid" in report.get("fid", {})))
               if present]
    return ModelCardData(library_name="vq", license=license, tags=tags, datasets=datasets, metrics=metrics or None)


def eval_rows(report: dict) -> list[tuple[str, str]]:
    rows = [("classifier test accuracy (the judge)", f"{report['classifier']['test_acc']:.4f}")]
    for key, name in (("real_train", "real train images (the floor)"), ("reconstructions", "tokenizer reconstructions"),
                      ("samples", "samples")):
        if key in report:
            j = report[key]
            rows.append((f"{name}: class accuracy, n={j['n']}", f"{j['acc']:.4f}" if "acc" in j else "n/a"))
            rows.append((f"{name}: Fréchet distance of judge features", f"{j['fd']:.2f}"))
    if "test_bits_per_token" in report.get("prior", {}):
        rows.append(("prior: test bits per code token", f"{report['prior']['test_bits_per_token']:.4f}"))
    if "test_masked_bits_per_code" in report.get("prior", {}):
        rows.append(("prior: test masked-code cross-entropy, bits (not a likelihood)",
                     f"{report['prior']['test_masked_bits_per_code']:.4f}"))
    if "fid" in report.get("fid", {}):
        f = report["fid"]
        rows.append((f"FID (Inception-v3), {f['n_samples']} samples against {f['reference']}", f"{f['fid']:.2f}"))
    return rows


def model_card(tokenizer: dict, prior: dict | None, report: dict | None, *, license: str, grid_note: str, name: str) -> str:
    """README.md of a saved pipeline: the Hub's YAML block, then what the model is, its evaluation,
    its samples and how to load it."""
    from huggingface_hub import ModelCard

    t, names = tokenizer["config"], tokenizer["class_names"]
    data = (tokenizer.get("dataset") or {}).get("spec") or "its dataset"
    what = (f"A {tokenizer['model']} tokenizer ({t['channels']}x{t['image_size']}x{t['image_size']} images"
            + (f" -> {prior['config']['height']}x{prior['config']['width']} codes from {prior['config']['codebook_size']})"
               f" and a transformer prior ({prior_kind(prior)}) over its codes, conditioned on "
               f"{' and '.join(['class'] + (['sketch'] if prior['config'].get('condition') == 'sketch' else []))}"
               if prior is not None else ")")
            + f", trained with vq on {data} ({len(names)} classes: {', '.join(names)}).")
    evaluation = ("Not evaluated yet: run `vq eval` on the runs before saving."
                  if not report else "Measured by `vq eval` (its judge is a classifier trained on the dataset):\n\n"
                  "| measure | value |\n|---|---:|\n" + "".join(f"| {k} | {v} |\n" for k, v in eval_rows(report))
                  + (f"\nFID protocol: {report['fid']['protocol']}.\n" if "fid" in report.get("fid", {}) else "")) + "\n"
    example = names[min(7, len(names) - 1)]
    body = f"""
# A vq pipeline

{what}

![samples](samples.png)

{grid_note}

## Use

```python
from vq.pipeline import Pipeline

pipe = Pipeline.from_pretrained("{name}")  # a Hub id (user/name) or a saved folder
images = pipe.sample("{example}", n=8, seed=0)  # PIL images
```

```bash
vq sample --pipeline {name} --class "{example}" -n 8
```

## Evaluation

{evaluation}
## Files

`tokenizer/` and `prior/` hold each part's `config.json` and `model.safetensors`; `model_index.json`
names the parts. vq loads weights from safetensors only.
"""
    card = ModelCard(f"---\n{card_metadata(tokenizer, prior, report, license).to_yaml()}\n---\n{body}")
    return str(card)
