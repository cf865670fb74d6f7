"""Sharing: a pipeline saved as one folder, loaded back from it or by Hub id from a Hugging Face
cache laid out as `snapshot_download` leaves it (the Hub itself is unreachable here, and
HF_HUB_OFFLINE=1), its model card, the push's dry run, and pickles refused where weights belong."""

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vq.pipeline import Pipeline
from test_cli import assert_one_line_error, vq
from test_images import refusal
from test_pipeline import needs_fashion_mnist

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def saved(chain, tmp_path_factory):
    out = tmp_path_factory.mktemp("saved") / "fashion"
    r = vq("save", out, "--tokenizer", chain / "tokenizer", "--prior", chain / "prior", "--name", "someone/fashion-vq", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    return out


def hub_cache(root: Path, repo: str, folder: Path) -> Path:
    """A Hugging Face cache holding `folder` as the main revision of model repo `repo`."""
    repo_dir = root / f"models--{repo.replace('/', '--')}"
    shutil.copytree(folder, repo_dir / "snapshots" / COMMIT)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(COMMIT)
    return root


@needs_fashion_mnist
def test_a_saved_pipeline_is_a_shareable_folder(chain, saved):
    from huggingface_hub import ModelCard

    files = sorted(str(p.relative_to(saved)) for p in saved.rglob("*") if p.is_file())
    assert files == ["README.md", "model_index.json", "prior/config.json", "prior/model.safetensors", "samples.png",
                     "tokenizer/config.json", "tokenizer/model.safetensors",
                     "tokenizer/reconstructions.png"]  # never a training state; the reconstructions for the Model tab
    assert (saved / "tokenizer/reconstructions.png").read_bytes() == (chain / "tokenizer/reconstructions.png").read_bytes()
    for part in ("tokenizer", "prior"):
        assert (saved / part / "model.safetensors").read_bytes() == (chain / part / "model.safetensors").read_bytes()
        config = json.loads((saved / part / "config.json").read_text())
        assert not {"tokenizer_dir", "codes_dir"} & set(config) and str(chain) not in json.dumps(config)
    card = ModelCard.load(saved / "README.md")
    assert card.data.library_name == "vq" and "vqvae" in card.data.tags and card.data.license == "mit"
    assert card.data.datasets == ["zalando-datasets/fashion_mnist"]
    assert 'Pipeline.from_pretrained("someone/fashion-vq")' in card.text and "![samples](samples.png)" in card.text
    assert Image.open(saved / "samples.png").size == (8 * 30 + 2, 10 * 30 + 2)  # a row of 8 per class


@needs_fashion_mnist
def test_save_then_load_gives_the_same_images(chain, saved):
    runs = Pipeline.from_pretrained(chain / "tokenizer", chain / "prior", device="cpu")
    folder = Pipeline.from_pretrained(saved, device="cpu")
    a, b = runs.sample("bag", n=3, seed=4), folder.sample("bag", n=3, seed=4)
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b))
    assert folder.class_names == runs.class_names and folder.code_shape == runs.code_shape


@needs_fashion_mnist
def test_load_by_hub_id_from_the_cache_offline(chain, saved, tmp_path):
    cache = hub_cache(tmp_path / "hub", "someone/fashion-vq", saved)
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    pipe = Pipeline.from_pretrained("someone/fashion-vq", cache_dir=cache, device="cpu")
    expected = Pipeline.from_pretrained(saved, device="cpu").sample("sneaker", n=2, seed=9, output_type="pt")
    assert np.array_equal(pipe.sample("sneaker", n=2, seed=9, output_type="pt"), expected)
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "vq.cli.main", "sample", "--pipeline", "someone/fashion-vq", "-c", "sneaker",
                        "-n", "2", "--seed", "9", "--device", "cpu", "--out", tmp_path / "s"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert np.array_equal(np.asarray(Image.open(tmp_path / "s" / "sneaker_1.png")), expected[1, 0].numpy())
    message = refusal(Pipeline.from_pretrained, "someone/elsewhere", cache_dir=cache)
    assert "not in the Hugging Face cache" in message and "HF_HUB_OFFLINE" in message


class Planted:
    """Unpickling this creates a file: proof that a pickle was executed."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@needs_fashion_mnist
def test_a_pickle_where_weights_belong_is_refused_unread(saved, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(saved, repo)
    marker = tmp_path / "executed"
    (repo / "prior" / "model.safetensors").write_bytes(pickle.dumps({"weights": Planted(marker)}))
    cache = hub_cache(tmp_path / "hub", "someone/evil", repo)
    assert "model.safetensors is unreadable" in refusal(Pipeline.from_pretrained, "someone/evil", cache_dir=cache)
    # Weights only as a pickle (.bin): never fetched nor read; the part has no safetensors to load.
    bin_only = tmp_path / "bin_only"
    shutil.copytree(saved, bin_only)
    (bin_only / "tokenizer" / "model.safetensors").unlink()
    (bin_only / "tokenizer" / "pytorch_model.bin").write_bytes(pickle.dumps(Planted(marker)))
    assert "has no model.safetensors" in refusal(Pipeline.from_pretrained, bin_only)
    assert not marker.exists()


@needs_fashion_mnist
def test_push_dry_run_lists_the_folder_and_push_calls_the_hub_with_it(saved, monkeypatch):
    r = vq("push", "someone/fashion-vq", "--pipeline", saved, "--dry-run")
    assert r.returncode == 0, r.stderr
    listed = r.stdout.split()
    assert listed == sorted(str(p.relative_to(saved)) for p in saved.rglob("*") if p.is_file())
    assert "nothing was uploaded" in r.stderr
    # The real upload, up to the Hub's door: huggingface_hub's create_repo and upload_folder, recorded.
    from huggingface_hub import HfApi

    from vq.pipeline.share import folder, hub

    calls = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(("create", repo_id, kw)) or f"https://hf.co/{repo_id}")
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kw: calls.append(("upload", kw["repo_id"], kw)))
    result = hub.push(saved, "someone/fashion-vq", private=True)
    assert [c[:2] for c in calls] == [("create", "someone/fashion-vq"), ("upload", "someone/fashion-vq")]
    assert calls[0][2]["private"] is True and calls[1][2]["folder_path"] == str(saved)
    assert calls[1][2]["allow_patterns"] == folder.READS and result.files == listed
    assert_one_line_error(vq("push", "not a repo", "--pipeline", saved, "--dry-run"), "no Hub repo id")


@needs_fashion_mnist
def test_eval_of_a_saved_pipeline_reaches_its_card(chain, saved, tmp_path, monkeypatch):
    folder = tmp_path / "copy"
    shutil.copytree(saved, folder)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no Inception weights cached, and offline
    r = vq("eval", "--pipeline", folder, "--per-class", "3", "--complete-images", "4", "--classifier", chain / "classifier", "--fid")
    assert r.returncode == 0, r.stderr
    report = json.loads((folder / "eval.json").read_text())
    assert "FID skipped" in report["fid"]["skipped"] and "--inception-weights PATH" in report["fid"]["skipped"]
    assert "FID skipped" in r.stderr.replace("\n", " ")
    assert report["prior"]["name"] == "bits_per_token" and report["prior"]["bits"] > 0 and report["samples"]["n"] == 30
    resaved = tmp_path / "resaved"
    assert vq("save", resaved, "--tokenizer", folder / "tokenizer", "--prior", folder / "prior").returncode == 0
    card = (resaved / "README.md").read_text()
    assert f"| samples | samples: class accuracy (n=30, guidance 2, top-k 64) | {report['samples']['acc']:.4f} |" in card  # the prior's own cut, named
    assert json.loads((resaved / "eval.json").read_text()) == report
    assert_one_line_error(vq("save", resaved, "--tokenizer", folder / "tokenizer", "--prior", folder / "prior"), "holds a saved pipeline; pass --force")


# --- crafted folders: a Hub repo is someone else's folder ---------------------------------------------

def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def nan_weights(folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(folder / "prior" / "model.safetensors")
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first] = state[first].clone().fill_(float("nan"))
    save_file(state, folder / "prior" / "model.safetensors")


def config_link(target: str):
    def change(folder: Path) -> None:
        (folder / "prior" / "config.json").unlink()
        (folder / "prior" / "config.json").symlink_to(target)
    return change


CRAFTED = {  # name -> (change to a copy of a saved pipeline, words of the one-line refusal)
    "depth 10^6": (lambda f: edit_json(f / "prior" / "config.json", lambda d: d["config"].update(depth=10**6)),
                   "key 'depth' must lie from 1 to 256"),
    "dim 10^9": (lambda f: edit_json(f / "prior" / "config.json", lambda d: d["config"].update(dim=10**9)), "key 'dim' must lie"),
    "dim 2048": (lambda f: edit_json(f / "prior" / "config.json", lambda d: d["config"].update(dim=2048, heads=8)),
                 "weights do not match config.json"),
    "hidden 10^6": (lambda f: edit_json(f / "tokenizer" / "config.json", lambda d: d["config"].update(hidden=10**6)),
                    "key 'hidden' must lie"),
    "num_classes 10^9": (lambda f: edit_json(f / "prior" / "config.json", lambda d: d["config"].update(num_classes=10**9)),
                         "key 'num_classes' must lie"),
    "a 1024x1024 code grid": (lambda f: [edit_json(f / "tokenizer" / "config.json",
                                                   lambda d: [d["config"].update(image_size=4096), d["data_options"].update(image_size=4096)]),
                                         edit_json(f / "prior" / "config.json", lambda d: d["config"].update(height=1024, width=1024))],
                              "GB to make one image"),
    "heads 0": (lambda f: edit_json(f / "prior" / "config.json", lambda d: d["config"].update(heads=0)), "key 'heads' must lie"),
    "class_names 5": (lambda f: edit_json(f / "tokenizer" / "config.json", lambda d: d.update(class_names=5)),
                      "'class_names' must be a list"),
    "format_version '1'": (lambda f: edit_json(f / "prior" / "config.json", lambda d: d.update(format_version="1")),
                           "format_version must be a whole number"),
    "a number for a part": (lambda f: edit_json(f / "model_index.json", lambda d: d.update(prior=7)), "'prior' must name a sub-folder"),
    "config.json -> /dev/zero": (config_link("/dev/zero"), "is not a regular file"),
    "JSON 100,000 deep": (lambda f: (f / "prior" / "config.json").write_text("[" * 100_000 + "]" * 100_000), "deeper than vq reads"),
    "a 5 MB config.json": (lambda f: (f / "prior" / "config.json").write_text(json.dumps({"pad": "x" * (5 << 20)})),
                           "more than the 4,194,304 vq reads"),
    "NaN weights": (nan_weights, "not finite (NaN or inf)"),
    "a string for a float": (lambda f: edit_json(f / "prior" / "config.json", lambda d: d["config"].update(dropout="0.1")),
                             "key 'dropout' expects float"),
    "sketch boxes of strings": (lambda f: edit_json(f / "prior" / "config.json", lambda d: d.update(sketch={"box": "big"})),
                                "sketch record is not in the form vq writes"),
    "a box of 0": (lambda f: edit_json(f / "prior" / "config.json", lambda d: d.update(sketch={"detector": 1, "box": 0})),
                   "sketch record is not in the form vq writes"),
    "sampling top_k -1": (lambda f: edit_json(f / "prior" / "config.json", lambda d: d.update(sampling={"top_k": -1})),
                          "key 'top_k' must lie from 0"),
    "sampling top_k true": (lambda f: edit_json(f / "prior" / "config.json", lambda d: d.update(sampling={"top_k": True})),
                            "key 'top_k' expects"),
    "sampling top_p NaN": (lambda f: edit_json(f / "prior" / "config.json", lambda d: d.update(sampling={"top_p": float("nan")})),
                           "key 'top_p' must lie"),
    "sampling of a path": (lambda f: edit_json(f / "prior" / "config.json", lambda d: d.update(sampling={"file": "/etc/passwd"})),
                           "unknown"),
    "sampling a list": (lambda f: edit_json(f / "prior" / "config.json", lambda d: d.update(sampling=[32])),
                        "'sampling' must be a dict"),
    "no model config": (lambda f: edit_json(f / "tokenizer" / "config.json", lambda d: d.pop("config")), "records no 'config'"),
    "a null image size": (lambda f: edit_json(f / "tokenizer" / "config.json", lambda d: d["config"].update(image_size=None)),
                          "key 'image_size' expects int, got None"),
    "data of 10^9 px": (lambda f: edit_json(f / "tokenizer" / "config.json", lambda d: d["data_options"].update(image_size=10**9)),
                        "data option key 'image_size' must lie from 1 to 4096"),
    "data of another size": (lambda f: edit_json(f / "tokenizer" / "config.json", lambda d: d["data_options"].update(image_size=64)),
                             "its data options read 1x64 px images, its model takes 1x28"),
}

PROBE = """
import json, re, sys, time
from vq.pipeline import Pipeline, VQError

def peak_kb():
    return int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read())[1])

out = {}
for folder in sys.argv[1:]:
    open("/proc/self/clear_refs", "w").write("5")  # the peak resets to what is held now
    base, t0 = peak_kb(), time.time()
    try:
        Pipeline.from_pretrained(folder, device="cpu").sample(n=1, seed=0)
        message = None
    except VQError as e:
        message = str(e)
    out[folder] = {"message": message, "seconds": time.time() - t0, "grew_mb": (peak_kb() - base) / 1024}
print(json.dumps(out))
"""


@needs_fashion_mnist
def test_crafted_pipelines_are_refused_before_they_allocate(saved, tmp_path):
    folders = {}
    for i, (name, (change, _)) in enumerate(CRAFTED.items()):
        folders[name] = tmp_path / f"crafted{i}"
        shutil.copytree(saved, folders[name])
        change(folders[name])
    r = subprocess.run([sys.executable, "-c", PROBE, *map(str, folders.values())], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    seen = json.loads(r.stdout)
    for name, (_, words) in CRAFTED.items():
        got = seen[str(folders[name])]
        assert got["message"] is not None and words in got["message"] and "\n" not in got["message"], (name, got)
        assert got["seconds"] < 10 and got["grew_mb"] < 150, (name, got)  # the real model is a few MB
    # The command line: the same line, exit 1, and nothing written.
    r = vq("sample", "--pipeline", folders["heads 0"], "-n", "1", "--out", tmp_path / "out")
    assert_one_line_error(r, "key 'heads' must lie from 1 to 256")
    assert not (tmp_path / "out").exists()


@needs_fashion_mnist
def test_a_symlinked_part_out_of_its_folder_is_refused(saved, tmp_path):
    folder = tmp_path / "linked"
    shutil.copytree(saved, folder)
    shutil.rmtree(folder / "prior")
    (folder / "prior").symlink_to(saved / "prior", target_is_directory=True)
    assert "names a part outside its folder" in refusal(Pipeline.from_pretrained, folder)


@needs_fashion_mnist
def test_save_never_deletes_its_input_and_force_replaces_only_a_pipeline(chain, saved, tmp_path):
    from test_cli import digest

    runs = tmp_path / "runs"
    shutil.copytree(chain / "tokenizer", runs / "tokenizer", ignore=shutil.ignore_patterns("codes"))
    shutil.copytree(chain / "prior", runs / "prior")
    before = {part: digest(runs / part) for part in ("tokenizer", "prior")}
    args = ("--tokenizer", runs / "tokenizer", "--prior", runs / "prior", "--device", "cpu")
    for out, words in ((runs / "tokenizer", "is tokenizer, which is being saved"),
                       (runs / "prior" / "shared", "lies inside prior, which is being saved"),
                       (runs, "holds tokenizer, which is being saved")):
        assert_one_line_error(vq("save", out, *args, "--force"), words)
    assert {part: digest(runs / part) for part in ("tokenizer", "prior")} == before
    assert not (runs / "prior" / "shared").exists()
    other = tmp_path / "photos"
    other.mkdir()
    (other / "holiday.jpg").write_bytes(b"mine")
    assert_one_line_error(vq("save", other, *args, "--force"), "holds files that are no saved pipeline")
    assert (other / "holiday.jpg").read_bytes() == b"mine"
    # A saved pipeline is replaced with --force, whole.
    copy = tmp_path / "copy"
    shutil.copytree(saved, copy)
    (copy / "eval.json").write_text("{}")  # a report of the pipeline replaced; these runs have none
    r = vq("save", copy, *args, "--force")
    assert r.returncode == 0, r.stderr
    assert not (copy / "eval.json").exists() and (copy / "model_index.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".copy.")]  # no half-written folder left behind
    # Without --name, the card names the folder, not a path of this machine; files have the usual modes.
    card = (copy / "README.md").read_text()
    assert 'Pipeline.from_pretrained("copy")' in card and str(tmp_path) not in card
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in copy.rglob("*") if p.is_file())
    assert (copy.stat().st_mode & 0o777) == 0o755
    # A saved pipeline with more in its folder (a clone's .git) is not replaced, nor are its files.
    (copy / ".git").mkdir()
    assert_one_line_error(vq("save", copy, *args, "--force"), "holds a saved pipeline and more (.git)")
    assert (copy / ".git").is_dir() and (copy / "model_index.json").is_file()
    # OUT given as `.` from inside a saved pipeline, and as a link to one: the folder itself is replaced.
    shutil.rmtree(copy / ".git")
    r = vq("save", ".", "--tokenizer", runs / "tokenizer", "--prior", runs / "prior", "--device", "cpu", "--force", cwd=copy)
    assert r.returncode == 0, r.stderr
    assert 'Pipeline.from_pretrained("copy")' in (copy / "README.md").read_text()
    link = tmp_path / "link"
    link.symlink_to(copy, target_is_directory=True)
    assert vq("save", link, *args, "--force").returncode == 0
    assert link.is_symlink() and (copy / "model_index.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # nothing half-written or left behind


def test_a_saved_folder_holds_no_path_of_this_machine(vae_runs, tmp_path):
    """Runs trained on a local folder record its absolute path (to find it again); what is saved
    to share keeps its name only."""
    out = tmp_path / "shared"
    r = vq("save", out, "--tokenizer", vae_runs / "cvae", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert str(vae_runs) in (vae_runs / "cvae" / "config.json").read_text()  # the run itself keeps it
    for path in out.rglob("*"):
        if path.suffix in (".json", ".md"):
            text = path.read_text()
            assert str(vae_runs) not in text and str(tmp_path) not in text and "/tmp/" not in text, path
    assert json.loads((out / "tokenizer" / "config.json").read_text())["dataset"]["spec"] == "shapes"


def test_markup_from_someone_else_s_folder_stays_text():
    from vq.pipeline.evaluate.report import EvalReport, markdown_text

    assert markdown_text("![x](http://a.example/x.png) <img src=y>") == \
        "&#33;&#91;x&#93;(http://a.example/x.png) &#60;img src=y&#62;"
    report = EvalReport(tokenizer={"![t](http://a.example/t.png)": 1.0})
    table = report.markdown()
    assert "![" not in table and "<img" not in table and "&#33;&#91;t&#93;" in table
    assert "not in the form" in EvalReport(classifier={"no": "test_acc"}).markdown()  # a report it cannot read: said so
