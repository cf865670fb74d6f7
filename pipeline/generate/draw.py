"""Generation over loaded models, as pure functions of a seed: sample = prior -> decoder (or a
VAE's latent prior -> decoder); complete = known codes -> prior -> decoder. `Pipeline` calls
these; so do evaluation and training previews, so every image vq shows is drawn the same way.

A prior models a (h, w) grid of codes (`Prior.shape_fields`); the tokenizer's codes have their own
shape (`Tokenizer.code_shape`, any rank): codes are reshaped between the two here, and nowhere else.

Shape legend: b - images, C H W - an image, h w - the prior's code grid."""

import torch
import torch.nn.functional as F

from vq.pipeline.checkpoint import MAX_IMAGE_BYTES
from vq.stage2_prior import SamplingOptions

CHUNK = 256  # images per sampling batch, at most
CHUNK_BYTES = MAX_IMAGE_BYTES  # working memory one sampling batch may take (the models' own estimates, `image_memory`)


def chunk_size(*models) -> int:
    """Images per sampling batch: CHUNK, fewer where the models need more memory per image (large
    images or code grids), so that no batch takes more than CHUNK_BYTES."""
    per_image = max(type(m).image_memory(m.config)[0] for m in models if m is not None)
    return max(1, min(CHUNK, CHUNK_BYTES // per_image))


def to_tokenizer(tokenizer, codes: torch.Tensor) -> torch.Tensor:
    """(b, h, w) codes of the prior's grid -> (b, *code_shape) codes the tokenizer decodes."""
    return codes.reshape(codes.shape[0], *tokenizer.code_shape)


def to_prior(prior, codes: torch.Tensor) -> torch.Tensor:
    """(b, *code_shape) codes (or a mask of them) -> (b, h, w) as the prior models them."""
    return codes.reshape(codes.shape[0], *prior.code_shape)


@torch.no_grad()
def generate_images(tokenizer, prior, labels: torch.Tensor, options: SamplingOptions,
                    sketches: torch.Tensor | None = None, progress=None) -> torch.Tensor:
    """(b,) labels (and for a sketch prior, (b, c, S, S) sketches: the lines, and for drawings the
    drawing flag) -> (b, C, H, W) images in [-1, 1], in chunks, from one seeded generator.
    progress: called with (images done, images) before the first chunk and after each."""
    device = next(tokenizer.parameters()).device
    g = torch.Generator(device=device).manual_seed(options.seed)
    out = []
    chunk = chunk_size(tokenizer, prior)
    for i in range(0, labels.shape[0], chunk):
        if progress is not None:
            progress(i, labels.shape[0])
        y = labels[i : i + chunk].to(device)
        if prior is not None:
            sk = sketches[i : i + chunk].to(device) if sketches is not None else None
            codes = prior.sample(y, options=options, generator=g, sketch=sk)
            out.append(tokenizer.decode_indices(to_tokenizer(tokenizer, codes)))
        else:
            out.append(tokenizer.sample(y.shape[0], y if tokenizer.conditional else None, generator=g))
    if progress is not None:
        progress(labels.shape[0], labels.shape[0])
    return torch.cat(out).float().clamp(-1, 1)


def is_prefix(mask: torch.Tensor) -> bool:
    """True when the known codes are exactly the first ones in raster order."""
    flat = mask.flatten()
    k = int(flat.sum())
    return bool(flat[:k].all())


@torch.no_grad()
def complete_codes(prior, codes: torch.Tensor, mask: torch.Tensor, label: int | None, n: int,
                   options: SamplingOptions, candidates: int) -> torch.Tensor:
    """(1, h, w) codes + (h, w) known mask (the prior's grid) -> (n, h, w) completions that keep
    every known code. A prior that completes any region natively draws n. Otherwise, when some
    known codes follow unknown ones in raster order, the prior cannot see them while drawing what
    precedes them: draw `candidates` per completion and keep the n the prior finds most likely
    over all known codes."""
    device = next(prior.parameters()).device
    draws = n if prior.any_mask or is_prefix(mask) else n * max(1, candidates)
    g = torch.Generator(device=device).manual_seed(options.seed)
    labels = torch.full((draws,), -1 if label is None else label, device=device)
    known = codes.expand(draws, -1, -1).to(device)
    kmask = mask.expand(draws, -1, -1).to(device)
    out = []
    chunk = chunk_size(prior)
    for i in range(0, draws, chunk):
        out.append(prior.sample(labels[i : i + chunk], options=options, generator=g, known=known[i : i + chunk],
                                known_mask=kmask[i : i + chunk]))
    drawn = torch.cat(out)
    if draws == n:
        return drawn
    # Score with the unconditional (or class) prior over the whole map, restricted to known codes.
    scores = torch.cat([prior.score(drawn[i : i + chunk], labels[i : i + chunk], kmask[i : i + chunk])
                        for i in range(0, draws, chunk)])
    return drawn[scores.topk(n).indices.sort().values]


def paste_known(images: torch.Tensor, original: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The user's own pixels pasted back over the kept region of completions, as inpainting tools
    do: images (b, C, H, W) and original (1, C, H, W) in [-1, 1], keep (H, W) bool. A soft seam of
    2r pixels (r = 1 per 28 of the image, 4 at 112): the original's weight is 1 from 2r inside the
    region and falls to 0 at its edge, so no pixel outside the region is touched."""
    r = max(1, round(keep.shape[-1] / 28))
    k = 2 * r + 1
    kept = keep[None, None].to(images.dtype)
    inner = 1 - F.max_pool2d(1 - kept, k, stride=1, padding=r)  # the region less a seam's width
    weight = F.avg_pool2d(inner, k, stride=1, padding=r, count_include_pad=False).to(images.device)
    return images * (1 - weight) + original.to(images.device) * weight


@torch.no_grad()
def decode_codes(tokenizer, codes: torch.Tensor) -> torch.Tensor:
    """(b, *code_shape) codes -> (b, C, H, W) images in [-1, 1], decoded in batches of `chunk_size`."""
    chunk = chunk_size(tokenizer)
    return torch.cat([tokenizer.decode_indices(codes[i : i + chunk]) for i in range(0, codes.shape[0], chunk)])
