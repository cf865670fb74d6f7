"""Generation chains: sample = prior -> decoder (or a VAE's latent prior -> decoder);
complete = image -> encoder -> prior with the known codes forced -> decoder."""

import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console

from vq.pipeline.checkpoint import read_info
from vq.pipeline.data import decode, open_image, pil_to_array, reading, to_float, upright_size
from vq.pipeline.images import save_grid, save_png
from vq.pipeline.runs import VQError
from vq.pipeline.device import resolve_device
from vq.stage2_prior import sample_codes_fast, score_codes

CHUNK = 256  # images per sampling batch


@dataclass
class SamplingOptions:
    cfg: float = 2.0
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int = 0

    def validate(self) -> None:
        if self.cfg < 0:
            raise VQError("--guidance must be at least 0 (1 = no guidance)")
        if self.temperature < 0:
            raise VQError("--temperature must be at least 0 (0 = greedy)")
        if self.top_k is not None and self.top_k < 1:
            raise VQError("--top-k must be at least 1")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise VQError("--top-p must lie in (0, 1]")


def resolve_class(value: str, class_names: list[str]) -> int:
    """A class by index or name, case-insensitively, ignoring punctuation ('t-shirt' finds 'T-shirt/top')."""
    if value.isdigit() and int(value) < len(class_names):
        return int(value)

    def norm(s: str) -> str:
        return re.sub(r"[^a-z0-9]", "", s.lower())

    exact = [i for i, n in enumerate(class_names) if n.lower() == value.lower()]
    loose = [i for i, n in enumerate(class_names) if norm(n) == norm(value) or norm(n.split("/")[0]) == norm(value)]
    found = exact or loose
    if len(found) == 1:
        return found[0]
    raise VQError(f"unknown class '{value}'; valid classes: {', '.join(class_names)}")


def file_stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-").lower() or "class"


def new_output_dir(out: Path | None, default_root: Path, names: list[str], force: bool) -> Path:
    """An explicit --out must not hold files we would overwrite (unless --force); the default is a
    fresh numbered folder under default_root, so earlier results are never touched."""
    if out is not None and out.exists() and not out.is_dir():
        raise VQError(f"--out {out} is a file; give a folder")
    if out is None:
        existing = [int(p.name) for p in default_root.glob("[0-9][0-9][0-9]") if p.is_dir()] if default_root.exists() else []
        return default_root / f"{max(existing, default=0) + 1:03d}"
    clashes = [n for n in names if (out / n).exists()]
    if clashes and not force:
        raise VQError(f"{out} already holds {clashes[0]} (and {len(clashes) - 1} more); pass --force or another --out")
    return out


def load_pair(tokenizer_dir: Path, prior_dir: Path | None, device: str):
    """-> (tokenizer, tokenizer info, prior or None). A VQ-VAE needs its own prior; a VAE needs none."""
    from vq.pipeline.prior import load_prior
    from vq.pipeline.tokenizer import load_tokenizer

    dev = str(resolve_device(device))
    tokenizer, info = load_tokenizer(tokenizer_dir, dev)
    prior = None
    if info["model"] == "vqvae":
        prior, _ = load_prior(prior_dir, info, dev)
    return tokenizer, info, prior


@torch.no_grad()
def generate_images(tokenizer, prior, labels: torch.Tensor, opts: SamplingOptions,
                    sketches: torch.Tensor | None = None) -> torch.Tensor:
    """(b,) labels (and for a sketch prior, (b, 1, S, S) sketches) -> (b, C, H, W) images in
    [-1, 1], in chunks, from one seeded generator."""
    device = next(tokenizer.parameters()).device
    g = torch.Generator(device=device).manual_seed(opts.seed)
    out = []
    for i in range(0, labels.shape[0], CHUNK):
        y = labels[i : i + CHUNK].to(device)
        if prior is not None:
            sk = sketches[i : i + CHUNK].to(device) if sketches is not None else None
            codes = sample_codes_fast(prior, y, cfg_scale=opts.cfg, temperature=opts.temperature,
                                 top_k=opts.top_k, top_p=opts.top_p, generator=g, sketch=sk)
            out.append(tokenizer.decode_indices(codes))
        else:
            out.append(tokenizer.sample(y.shape[0], y if tokenizer.conditional else None, generator=g))
    return torch.cat(out).float().clamp(-1, 1)


def check_sketch_prior(tokenizer_dir: Path, info: dict, prior_dir: Path) -> None:
    """--sketch needs a VQ-VAE and a prior trained with --condition sketch: refuse before any work."""
    if info["model"] != "vqvae":
        raise VQError(f"{tokenizer_dir} holds a {info['model']}; --sketch needs a VQ-VAE and a prior trained with "
                      "`vq fit-prior --condition sketch`")
    from vq.pipeline.sketch import check_detector

    prior_info = read_info(prior_dir, "prior")
    condition = prior_info.get("config", {}).get("condition", "class")
    if condition != "sketch":
        raise VQError(f"{prior_dir} was trained without sketches (condition: {condition}); train one with "
                      "`vq fit-prior --condition sketch` to use --sketch")
    check_detector(prior_info, prior_dir)


def sample(tokenizer_dir: Path, prior_dir: Path, class_value: str | None, n: int, opts: SamplingOptions,
           out: Path | None, device: str = "auto", force: bool = False, sketch_path: Path | None = None,
           console: Console | None = None) -> dict:
    console = console or Console(stderr=True)
    opts.validate()
    if n < 1:
        raise VQError("-n must be at least 1")
    info = read_info(tokenizer_dir, "tokenizer")
    names = info["class_names"]
    if sketch_path is not None:
        check_sketch_prior(tokenizer_dir, info, prior_dir)
    if class_value is not None:
        classes = [resolve_class(class_value, names)]
        if info["model"] == "vae":
            raise VQError(f"{tokenizer_dir} is an unconditional VAE: it cannot sample a given class; drop --class")
    else:
        classes = list(range(len(names))) if info["model"] != "vae" and sketch_path is None else [-1]
    stems = {c: (file_stem(names[c]) if c >= 0 else "sketch" if sketch_path is not None else "sample") for c in classes}
    files = [f"{stems[c]}_{i}.png" for c in classes for i in range(n)] + ["grid.png"]
    if sketch_path is not None:
        files.append("sketch.png")
    out = new_output_dir(out, Path("runs/samples"), files, force)
    sketch = note = None
    if sketch_path is not None:
        from vq.pipeline.sketch import load_drawing

        sketch, note = load_drawing(sketch_path, info["config"]["image_size"])  # refused before the models load
    tokenizer, info, prior = load_pair(tokenizer_dir, prior_dir, device)
    labels = torch.tensor([c for c in classes for _ in range(n)])
    images = generate_images(tokenizer, prior, labels, opts, sketch.expand(len(labels), -1, -1, -1) if sketch is not None else None)
    out.mkdir(parents=True, exist_ok=True)
    for img, name in zip(images, files):
        save_png(img, out / name)
    nrow = n if len(classes) > 1 else max(1, math.ceil(math.sqrt(n)))
    result = {"out": str(out), "images": len(images), "classes": [names[c] if c >= 0 else "-" for c in classes],
              "grid": str(out / "grid.png")}
    if sketch is not None:
        drawn = sketch.float().expand(-1, images.shape[1], -1, -1) * 2 - 1  # white lines on black, as the prior reads it
        save_png(drawn[0], out / "sketch.png")
        images, nrow = torch.cat([drawn, images]), n + 1  # one row: the sketch, then its samples
        result["sketch_note"] = note
    save_grid(images, out / "grid.png", nrow=nrow)
    return result


# --- completion ------------------------------------------------------------------------------

def load_user_image(path: Path, channels: int, size: int) -> tuple[torch.Tensor, str]:
    """Any image file -> (1, C, size, size) in [-1, 1] (see `pil_to_array`), and a note of the
    conversion made; a file that cannot be read -> a one-line VQError."""
    img = open_image(path)
    mode, (w, h) = img.mode, img.size  # as stored: decoding a JPEG in draft shrinks it
    notes = []
    with reading(path):
        arr = pil_to_array(decode(img, channels, size), channels, size, notes)
    note = f"{mode} {w}x{h} -> {'L' if channels == 1 else 'RGB'} {size}x{size}" + "".join(f", {n}" for n in notes)
    return to_float(torch.from_numpy(arr)[None]), note


def keep_mask(size: int, keep: str, fraction: float, mask_path: Path | None = None,
              image: Path | None = None) -> torch.Tensor:
    """Pixel mask (size, size) bool, True = keep: the white of --mask (transparency counts as black),
    which must have the image's size, or --fraction of the image on the --keep side. A mask that
    keeps nothing or everything is refused."""
    if mask_path is not None:
        m, _ = load_user_image(mask_path, 1, size)
        if image is not None and upright_size(mask_path) != upright_size(image):
            (mw, mh), (iw, ih) = upright_size(mask_path), upright_size(image)
            raise VQError(f"mask {mask_path} is {mw}x{mh} but image {image} is {iw}x{ih}; "
                          "draw the mask at the image's size (white = keep)")
        m, what = m[0, 0] > 0, f"mask {mask_path}"
    else:
        if not 0 < fraction < 1:
            raise VQError("--fraction must lie strictly between 0 and 1")
        k = round(size * fraction)
        m = torch.zeros(size, size, dtype=torch.bool)
        if keep == "top":
            m[:k] = True
        elif keep == "bottom":
            m[size - k :] = True
        elif keep == "left":
            m[:, :k] = True
        elif keep == "right":
            m[:, size - k :] = True
        else:
            raise VQError(f"unknown --keep '{keep}'; use top, bottom, left or right (or --mask)")
        what = f"--keep {keep} --fraction {fraction} of a {size}x{size} image"
    if not m.any():
        raise VQError(f"the {what} keeps nothing: use `vq sample` to draw whole images")
    if m.all():
        raise VQError(f"the {what} keeps everything: nothing to complete (white = keep, black = draw)")
    return m


def code_mask(pixel_mask: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
    """A code is known when at least half of its pixel cell is kept: (H, W) -> (h, w) bool."""
    import torch.nn.functional as F

    return F.adaptive_avg_pool2d(pixel_mask[None, None].float(), grid_hw)[0, 0] >= 0.5


def is_prefix(mask: torch.Tensor) -> bool:
    """True when the known codes are exactly the first ones in raster order."""
    flat = mask.flatten()
    k = int(flat.sum())
    return bool(flat[:k].all())


@torch.no_grad()
def complete_codes(prior, codes: torch.Tensor, mask: torch.Tensor, label: int | None, n: int,
                   opts: SamplingOptions, candidates: int) -> torch.Tensor:
    """(1, h, w) codes + (h, w) known mask -> (n, h, w) completions that keep every known code.
    When some known codes follow unknown ones in raster order, the prior cannot see them while
    drawing what precedes them: draw `candidates` per completion and keep the n the prior finds
    most likely over all known codes."""
    device = next(prior.parameters()).device
    draws = n if is_prefix(mask) else n * max(1, candidates)
    g = torch.Generator(device=device).manual_seed(opts.seed)
    labels = torch.full((draws,), -1 if label is None else label, device=device)
    known = codes.expand(draws, -1, -1).to(device)
    kmask = mask.expand(draws, -1, -1).to(device)
    out = []
    for i in range(0, draws, CHUNK):
        out.append(sample_codes_fast(prior, labels[i : i + CHUNK], cfg_scale=opts.cfg, temperature=opts.temperature,
                                top_k=opts.top_k, top_p=opts.top_p, generator=g,
                                known=known[i : i + CHUNK], known_mask=kmask[i : i + CHUNK]))
    drawn = torch.cat(out)
    if draws == n:
        return drawn
    # Score with the unconditional (or class) prior over the whole map, restricted to known codes.
    scores = score_codes(prior, drawn, labels, kmask)
    return drawn[scores.topk(n).indices.sort().values]


def complete(image: Path, tokenizer_dir: Path, prior_dir: Path, *, keep: str = "top", fraction: float = 0.5,
             mask_path: Path | None = None, class_value: str | None = None, n: int = 8,
             opts: SamplingOptions | None = None, candidates: int = 8, out: Path | None = None,
             device: str = "auto", force: bool = False, console: Console | None = None) -> dict:
    console = console or Console(stderr=True)
    opts = opts or SamplingOptions()
    opts.validate()
    if n < 1:
        raise VQError("-n must be at least 1")
    info = read_info(tokenizer_dir, "tokenizer")
    if info["model"] != "vqvae":
        raise VQError(f"{tokenizer_dir} holds a {info['model']}; completion needs a VQ-VAE tokenizer and its prior")
    label = resolve_class(class_value, info["class_names"]) if class_value is not None else None
    cfg = info["config"]
    x, note = load_user_image(image, cfg["channels"], cfg["image_size"])
    pmask = keep_mask(cfg["image_size"], keep, fraction, mask_path, image)  # refusals before any model loads
    files = [f"completion_{i}.png" for i in range(n)] + ["grid.png", "masked.png"]
    out = new_output_dir(out, Path("runs/completions"), files, force)
    tokenizer, info, prior = load_pair(tokenizer_dir, prior_dir, device)
    console.print(f"image: {image} converted {note}")
    dev = next(tokenizer.parameters()).device
    codes = tokenizer.encode_indices(x.to(dev))
    cmask = code_mask(pmask, tokenizer.grid_shape).to(dev)
    if not cmask.any():
        console.print("note: no code is fully inside the kept region; sampling the whole image")
    completions = complete_codes(prior, codes, cmask, label, n, opts, candidates)
    images = tokenizer.decode_indices(completions).float().clamp(-1, 1)
    # What the prior was given: the original where codes are known, grey elsewhere.
    shown = torch.nn.functional.interpolate(cmask[None, None].float(), size=x.shape[-2:], mode="nearest")[0].cpu()
    masked = x[0] * shown
    out.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        save_png(img, out / f"completion_{i}.png")
    save_png(masked, out / "masked.png")
    row = torch.cat([x.cpu(), masked[None], images.cpu()])
    save_grid(row, out / "grid.png", nrow=row.shape[0])
    return {"out": str(out), "completions": n, "known_codes": int(cmask.sum()), "codes": int(cmask.numel()),
            "converted": note, "grid": str(out / "grid.png")}
