"""The web studio measured from outside: time from a `gradio_client` request to its images (queue,
generation, PNG writing, and the client's download of each PNG; one class, guidance 2) for 1, 8
and 64 images, beside the same request answered with URLs only and `Pipeline.sample` alone on the
same loaded Pipeline. The studio is served in this process on a free loopback port, as `vq serve`
serves it; medians (min-max) of --repeats requests after a warm-up. Prints a table; --json writes
the figures.

    python bench/serve.py --tokenizer runs/tokenizer --prior runs/prior --json bench/results/serve_cpu.json

With --screenshots DIR it instead opens each tab in headless Chromium, uses it (a class row, a
pair of trousers drawn without a class when --sketch-prior is given, a painted completion), and
saves DIR/serve_<tab>.png.
"""

import argparse
import json
import os
import platform
import socket
import statistics
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from PIL import Image

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def studio(pipe):
    """The studio over `pipe`, served in this process; -> its URL."""
    from vq.pipeline.serve.app import build_app, launch, private_files
    from vq.pipeline.serve.guard import served_hosts

    with private_files() as folder:
        app = build_app(pipe, folder, max_n=64)
        try:
            yield launch(app, "127.0.0.1", free_port(), served_hosts("127.0.0.1"))
        finally:
            app.close()


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "python": platform.python_version()}


def timings(pipe, url: str, counts: list[int], repeats: int, class_name: str) -> list[dict]:
    """Per count: a gradio_client request until its PNGs are downloaded (the client fetches them
    one by one), the same request answered with URLs only, and `Pipeline.sample` alone."""
    from gradio_client import Client

    with tempfile.TemporaryDirectory() as tmp:
        clients = {"served_s": Client(url, verbose=False, download_files=tmp),
                   "served_urls_s": Client(url, verbose=False, download_files=False)}
        rows = []
        for n in counts:
            row = {"images": n, **{k: [] for k in (*clients, "pipeline_s")}}
            for seed in range(repeats + 1):  # seed 0: a warm-up, not counted
                for key, client in clients.items():
                    t0 = time.perf_counter()
                    result = client.predict(class_name=class_name, n=n, seed=seed, api_name="/sample")
                    row[key].append(time.perf_counter() - t0)
                    assert len(result) == n
                t0 = time.perf_counter()
                pipe.sample(class_name, n=n, seed=seed)
                row["pipeline_s"].append(time.perf_counter() - t0)
            rows.append({k: v[1:] if isinstance(v, list) else v for k, v in row.items()})
            print({k: round(statistics.median(v), 3) for k, v in rows[-1].items() if isinstance(v, list)}, flush=True)
        assert all(Image.open(f).size == (pipe.image_size,) * 2 for f in Path(tmp).rglob("*.png"))
    return rows


def print_table(rows: list[dict]) -> None:
    def cell(v: list[float]) -> str:
        return f"{statistics.median(v):.2f} s ({min(v):.2f}-{max(v):.2f})"

    print("| images | request to PNGs on disk (gradio_client) | request to image URLs | `Pipeline.sample` alone |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['images']} | {cell(r['served_s'])} | {cell(r['served_urls_s'])} | {cell(r['pipeline_s'])} |")


# --- screenshots -----------------------------------------------------------------------------------

def wait_images(page, elem_id: str, count: int) -> None:
    page.wait_for_function("([sel, n]) => new Set([...document.querySelectorAll(sel)].map(e => e.src)).size === n",
                           arg=[f"#{elem_id} img", count], timeout=300_000)
    page.wait_for_timeout(1500)  # thumbnails decode


def stroke(page, selector: str, points: list[tuple[float, float]]) -> None:
    """Points are fractions of the drawing area (the canvas element is wider than the paper)."""
    box = page.locator(selector).first.bounding_box()
    side = min(box["width"], box["height"]) * 0.82
    x0, y0 = box["x"] + (box["width"] - side) / 2, box["y"] + (box["height"] - side) / 2
    page.mouse.move(x0 + points[0][0] * side, y0 + points[0][1] * side)
    page.mouse.down()
    for x, y in points[1:]:
        page.mouse.move(x0 + x * side, y0 + y * side)
    page.mouse.up()


def set_number(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input[type=number], #{elem_id} textarea, #{elem_id} input[type=text]").first
    box.fill(str(value))
    box.press("Tab")


def pick_class(page, tab: str, name: str) -> None:
    page.click(f"#{tab}-class input")
    page.get_by_role("option", name=name, exact=True).click()


def generate(page, tab: str, count: int, out: Path, **numbers) -> None:
    """Seed 0 and `numbers` set, the tab's button pressed; once its gallery shows `count` images,
    the page is saved as out/serve_<tab>.png."""
    for name, value in {**numbers, "seed": 0}.items():
        set_number(page, f"{tab}-{name}", value)
    page.click(f"#{tab}-go")
    wait_images(page, f"{tab}-gallery", count)
    page.screenshot(path=out / f"serve_{tab}.png", full_page=True)


def open_page(browser, url: str):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(url)
    page.wait_for_selector("#sample-go", timeout=60_000)
    return page


def screenshots(pipe, sketch_pipe, out: Path, image: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=os.environ.get("VQ_CHROMIUM", "/usr/bin/chromium"), args=CHROMIUM_ARGS)
        with studio(pipe) as url:
            page = open_page(browser, url)
            pick_class(page, "sample", "every class")
            generate(page, "sample", 100, out, n=10)
            narrow = browser.new_page(viewport={"width": 400, "height": 900})  # a phone's width
            narrow.goto(url)
            narrow.wait_for_selector("#sample-go", timeout=60_000)
            pick_class(narrow, "sample", "every class")
            generate(narrow, "sample", 100, out, n=10)
            (out / "serve_sample.png").rename(out / "serve_sample_400px.png")
            page.screenshot(path=out / "serve_sample.png", full_page=True)

            page.get_by_role("tab", name="Complete").click()
            page.set_input_files("#complete-upload input[type=file]", image)
            page.wait_for_selector("#complete-status:has-text('paint over')", timeout=60_000)
            stroke(page, "#complete-editor canvas", [(0.05, 0.62), (0.95, 0.62), (0.95, 0.75), (0.05, 0.75), (0.05, 0.88), (0.95, 0.88)])
            generate(page, "complete", 8, out)

            page.get_by_role("tab", name="Model").click()
            page.wait_for_timeout(1500)
            page.screenshot(path=out / "serve_model.png", full_page=True)
        if sketch_pipe is not None:
            with studio(sketch_pipe) as url:
                page = open_page(browser, url)
                page.get_by_role("tab", name="Sketch").click()
                page.wait_for_selector("#sketch-canvas canvas")
                # A pair of trousers as people draw them, wider than Fashion-MNIST's, the gap between the
                # legs drawn; no class picked: the prior's recogniser tells it ("as the drawing reads").
                stroke(page, "#sketch-canvas canvas", [(0.22, 0.1), (0.78, 0.1), (0.84, 0.9), (0.57, 0.9), (0.5, 0.38),
                                                       (0.43, 0.9), (0.16, 0.9), (0.22, 0.1)])
                generate(page, "sketch", 8, out, n=8)
        browser.close()


def test_image(path: Path) -> Path:
    """The first Fashion-MNIST test image (an ankle boot), 112 px, as a user would upload it."""
    from vq.pipeline.data.idx import fashion_mnist_dir, load_fashion_mnist_idx

    boot = load_fashion_mnist_idx(fashion_mnist_dir()).test.images[0][0].numpy()
    Image.fromarray(boot, "L").resize((112, 112), Image.Resampling.NEAREST).save(path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokenizer", type=Path, default=Path("runs/tokenizer"))
    ap.add_argument("--prior", type=Path, default=Path("runs/prior"))
    ap.add_argument("--counts", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--class", dest="class_name", default="Sneaker")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--screenshots", type=Path, help="save serve_<tab>.png here instead of timing")
    ap.add_argument("--sketch-prior", type=Path, help="a sketch prior of the same tokenizer, for the Sketch tab's screenshot")
    args = ap.parse_args()

    from vq.pipeline import Pipeline

    pipe = Pipeline.from_pretrained(args.tokenizer, args.prior, device=args.device)
    if args.screenshots:
        sketch_pipe = Pipeline.from_pretrained(args.tokenizer, args.sketch_prior, device=args.device) if args.sketch_prior else None
        args.screenshots.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            screenshots(pipe, sketch_pipe, args.screenshots, test_image(Path(tmp) / "ankle-boot.png"))
        return
    load = os.getloadavg()
    with studio(pipe) as url:
        rows = timings(pipe, url, args.counts, args.repeats, args.class_name)
    result = {"machine": machine(), "loadavg_before": load, "loadavg_after": os.getloadavg(), "repeats": args.repeats,
              "class": args.class_name, "guidance": 2.0, "tokenizer": str(args.tokenizer), "prior": str(args.prior),
              "rows": rows}
    print_table(rows)
    print(f"{result['machine']}; load average before {load[0]:.2f}, after {result['loadavg_after'][0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
