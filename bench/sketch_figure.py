"""The README's sketch figure: rows of sketch -> 8 samples from a sketch prior. The first rows
are test images' own sketches (the edge detector's output; the test image is shown before it),
the last rows are drawn by hand the way a person would, a few strokes with Pillow's ImageDraw,
no detector involved (the drawings are also written as PNGs, usable with `vq sample --sketch`).

    python bench/sketch_figure.py --tokenizer runs/tokenizer --prior runs/sketch-prior \\
        --out bench/results/sketch_samples_cpu_demo.png
"""

import argparse
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", category=FutureWarning)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

# Hand-drawn sketches on a 400 px canvas: (kind, points, width) strokes, dark ink on white paper.
HAND_DRAWN = {
    "sneaker": [("line", [(40, 250), (60, 190), (150, 170), (200, 120), (260, 150), (330, 220), (365, 250), (360, 285),
                          (45, 285), (40, 250)], 10),
                ("line", [(170, 165), (190, 210)], 8), ("line", [(205, 140), (225, 190)], 8)],
    "trousers": [("line", [(130, 40), (270, 40), (300, 370), (230, 370), (200, 130), (170, 370), (100, 370), (130, 40)], 9)],
    "handbag": [("line", [(70, 160), (330, 160), (350, 350), (50, 350), (70, 160)], 12),
                ("arc", [(130, 60), (270, 260)], 12)],
}


def hand_drawn(name: str, size: int = 400) -> Image.Image:
    img = Image.new("L", (size, size), 255)
    draw = ImageDraw.Draw(img)
    for kind, points, width in HAND_DRAWN[name]:
        if kind == "line":
            draw.line(points, fill=0, width=width, joint="curve")
        else:
            draw.arc(points, 180, 360, fill=0, width=width)
    return img


def main() -> None:
    from vq.pipeline import Pipeline
    from vq.pipeline.data.images import to_float
    from vq.pipeline.data.loader import EvalImages, Skipped
    from vq.pipeline.data.sources import load_data
    from vq.pipeline.generate.draw import generate_images
    from vq.pipeline.generate.images import save_grid
    from vq.pipeline.sketch.drawings import as_drawing, load_drawing
    from vq.pipeline.sketch.edges import edge_map
    from vq.stage2_prior import SamplingOptions

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokenizer", type=Path, default=Path("runs/tokenizer"))
    ap.add_argument("--prior", type=Path, default=Path("runs/sketch-prior"))
    ap.add_argument("--out", type=Path, default=Path("bench/results/sketch_samples_cpu_demo.png"))
    ap.add_argument("--drawings", type=Path, default=Path("bench/results/drawings"), help="where the hand-drawn PNGs go")
    ap.add_argument("--test-rows", type=int, default=3)
    ap.add_argument("--guidance", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scale", type=int, default=3, help="pixels per image pixel in the figure")
    args = ap.parse_args()

    pipe = Pipeline.from_pretrained(args.tokenizer, args.prior, device="cpu")
    tokenizer, prior, info = pipe.tokenizer, pipe.prior, pipe.tokenizer_info
    data = load_data(info.data_options())
    test = EvalImages(data.test, None, Skipped()).split
    size = info.image_size
    g = torch.Generator().manual_seed(args.seed)
    idx = torch.randperm(len(test), generator=g)[: args.test_rows]
    sources = [to_float(test.images[idx])]
    edges = edge_map(sources[0])
    sketches = [torch.cat([edges, torch.zeros_like(edges)], 1)]  # edge maps: the drawing flag 0
    args.drawings.mkdir(parents=True, exist_ok=True)
    for name in HAND_DRAWN:
        path = args.drawings / f"{name}.png"
        hand_drawn(name).save(path)
        lines, note = load_drawing(path, size)
        print(f"{path}: {note}")
        sketches.append(as_drawing(lines))  # a drawing: the flag 1 (read by a flagged prior only)
        small = np.asarray(hand_drawn(name).resize((size, size), Image.Resampling.BOX), np.float32) / 127.5 - 1
        sources.append(torch.from_numpy(small)[None, None].expand(-1, info.channels, -1, -1))
    sketches, sources = torch.cat(sketches), torch.cat(sources)
    rows = sketches.shape[0]
    per_row = 8
    samples = generate_images(tokenizer, prior, torch.full((rows * per_row,), -1),
                              SamplingOptions(guidance=args.guidance, seed=args.seed),
                              sketches.repeat_interleave(per_row, 0))
    channels = samples.shape[1]
    drawn = sketches[:, :1].float().expand(-1, channels, -1, -1) * 2 - 1
    grid = []
    for r in range(rows):
        grid += [sources[r].expand(channels, -1, -1), drawn[r]] + list(samples[r * per_row : (r + 1) * per_row])
    save_grid(torch.stack(grid), args.out, nrow=per_row + 2)
    figure = Image.open(args.out)
    figure.resize((figure.width * args.scale, figure.height * args.scale), Image.Resampling.NEAREST).save(args.out)
    print(f"{args.out}: {rows} rows of source | sketch | {per_row} samples (sketch alone, guidance {args.guidance})")


if __name__ == "__main__":
    main()
