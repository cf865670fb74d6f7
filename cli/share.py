"""`vq save` and `vq push`: two runs as one folder the Hugging Face Hub understands, and that
folder uploaded."""

from pathlib import Path
from typing import Optional

import typer

from vq.cli.app import app, err, friendly, summary
from vq.cli.options import DeviceOpt, PriorDirOpt, ThreadsOpt, TokenizerDirOpt


@app.command("save")
@friendly
def save(
    out: Path = typer.Argument(..., help="The folder to write: new or empty, or a saved pipeline to replace with --force."),
    tokenizer: Path = TokenizerDirOpt,
    prior: Path = PriorDirOpt,
    name: Optional[str] = typer.Option(None, "--name", help="The Hub id it will have (user/name), for the model card's examples; default: the folder's name."),
    license: str = typer.Option("mit", "--license", help="The license the model card declares (a Hub license id)."),
    device: Optional[str] = DeviceOpt,
    threads: Optional[int] = ThreadsOpt,
    force: bool = typer.Option(False, "--force", help="Replace the pipeline OUT holds (never a folder holding anything else)."),
):
    """Save two runs as one pipeline folder to share: tokenizer/ and prior/ (config.json +
    model.safetensors each, no training state), model_index.json, a sample grid, the runs' eval.json
    when `vq eval` has run, and a model card README.md that the Hugging Face Hub reads."""
    from vq.pipeline.generate.pipeline import Pipeline
    from vq.pipeline.share.folder import REPORT, files_of

    pipe = Pipeline.from_pretrained(tokenizer, prior, device=device or "auto")  # a VAE takes no prior: ignored
    folder = pipe.save_pretrained(out, license=license, name=name, force=force)
    summary(f"pipeline -> {folder}", {"files": ", ".join(files_of(folder)),
                                       "evaluated": "yes" if (folder / REPORT).exists() else "no (run `vq eval` first)",
                                       "load it": f"vq sample --pipeline {folder}",
                                       **({"share it": f"vq push {name} --pipeline {folder}"} if name else {})})


@app.command("push")
@friendly
def push(
    repo_id: str = typer.Argument(..., help="The Hub repo to upload to (user/name); created if missing."),
    pipeline: Path = typer.Option(..., "--pipeline", help="A saved pipeline folder (`vq save`)."),
    private: bool = typer.Option(False, "--private", help="Create the repo private."),
    token: Optional[str] = typer.Option(None, "--token", help="A Hub token with write access (default: the one `hf auth login` stored, or HF_TOKEN)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be uploaded, and upload nothing."),
):
    """Upload a saved pipeline folder to the Hugging Face Hub with huggingface_hub (create_repo,
    upload_folder): only the files vq reads (json, safetensors, png, md)."""
    from vq.pipeline.share.hub import push as run

    pushed = run(pipeline, repo_id, private=private, token=token, dry_run=dry_run)
    if dry_run:
        print("\n".join(pushed.files))
        err.print(f"dry run: these {len(pushed.files)} files would go to {repo_id}; nothing was uploaded", highlight=False)
        return
    summary(f"pushed -> {pushed.url}", {"files": len(pushed.files), "commit": pushed.commit,
                                        "load it": f"vq sample --pipeline {repo_id}"})
