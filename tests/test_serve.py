"""`vq serve`: the web studio served on a free loopback port over the suite's small runs (a sketch
prior, so every tab is there), driven by a real browser (Debian's chromium through Playwright) and
by gradio_client through the named API endpoints."""

import base64
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from test_cli import ROOT, assert_one_line_error, vq
from test_sketch import needs_fashion_mnist

gradio_client = pytest.importorskip("gradio_client", reason="gradio is not installed: pip install 'vq[serve]' (make test installs it)")

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SIZE = 28  # the chain's images


def chromium() -> str | None:
    path = os.environ.get("VQ_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    return path if Path(path).is_file() and os.access(path, os.X_OK) else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def studio(sketch_chain, tmp_path_factory):  # noqa: F811
    """`vq serve` over the chain's tokenizer and the sketch prior, and its test images: a
    Fashion-MNIST test image (an ankle boot, 112 px), the same PNG cut in half, a top-half mask."""
    from vq.pipeline.data.idx import fashion_mnist_dir, load_fashion_mnist_idx

    root = tmp_path_factory.mktemp("serve")
    boot = load_fashion_mnist_idx(fashion_mnist_dir()).test.images[0][0].numpy()
    Image.fromarray(boot, "L").resize((112, 112)).save(root / "boot.png")
    data = (root / "boot.png").read_bytes()
    (root / "truncated.png").write_bytes(data[: len(data) // 2])
    mask = np.zeros((112, 112), np.uint8)
    mask[:56] = 255
    Image.fromarray(mask, "L").save(root / "mask.png")
    # A `vq eval` report in the prior's run (written by hand: the judge classifier takes minutes).
    (sketch_chain / "sketch-prior" / "eval.json").write_text('{"prior": {"test_bits_per_token": 3.25}}')
    port = free_port()
    cmd = [sys.executable, "-m", "vq.cli.main", "serve", "--tokenizer", str(sketch_chain / "tokenizer"),
           "--prior", str(sketch_chain / "sketch-prior"), "--port", str(port), "--max-n", "16"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    deadline = time.time() + 240
    while not any("vq studio on" in line for line in lines):
        assert proc.poll() is None and time.time() < deadline, "".join(lines)
        time.sleep(0.5)
    url = f"http://127.0.0.1:{port}/"
    assert f"vq studio on {url}" in "".join(lines)
    yield {"url": url, "root": root, "runs": sketch_chain, "log": lines}
    proc.terminate()  # SIGTERM: the server stops cleanly and removes its private folder
    assert proc.wait(timeout=20) == 0, "".join(lines)  # quick: measured 1.8 s with a page open (was 13-45 s)
    served = set(re.findall(r"(/tmp/vq-serve-\w+)", "".join(lines)))
    assert not any(Path(d).exists() for d in served)


def png_size(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


# --- the browser ----------------------------------------------------------------------------------

def gallery(page, elem_id: str) -> list[str]:
    return page.eval_on_selector_all(f"#{elem_id} img", "els => [...new Set(els.map(e => e.src))]")


def wait_gallery(page, elem_id: str, count: int, before: list[str] = ()) -> list[str]:
    """The gallery's images once it shows `count` of them, none from `before`."""
    page.wait_for_function("([sel, n, old]) => { const s = [...new Set([...document.querySelectorAll(sel)].map(e => e.src))];"
                           " return s.length === n && s.every(x => !old.includes(x)); }",
                           arg=[f"#{elem_id} img", count, list(before)], timeout=120_000)
    return gallery(page, elem_id)


def fetched(page, srcs: list[str]) -> list[Image.Image]:
    """The images as the server serves them (what a download gives)."""
    out = []
    for src in srcs:
        r = page.request.get(src)
        assert r.ok, src
        out.append(Image.open(io.BytesIO(r.body())))
    return out


def stroke(page, selector: str, points: list[tuple[float, float]]) -> None:
    """Mouse down at the first point, moves through the rest, up: points are fractions of the canvas."""
    box = page.locator(selector).first.bounding_box()
    at = [(box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in points]
    page.mouse.move(*at[0])
    page.mouse.down()
    for x, y in at[1:]:
        page.mouse.move(x, y)  # the brush draws straight segments between points
    page.mouse.up()


@needs_fashion_mnist
def test_the_page_in_a_browser(studio):
    if chromium() is None:
        pytest.skip("no chromium browser (Debian: apt-get install chromium; make test installs it as root)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install -e '.[test]'")
    hosts = set()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(120_000)  # a loaded 2-core CI machine renders slowly
        page.on("request", lambda r: hosts.add(r.url.split("/")[2]))
        page.goto(studio["url"])
        page.wait_for_selector("#sample-go", timeout=60_000)
        assert [t.inner_text() for t in page.get_by_role("tab").all()] == ["Sample", "Sketch", "Complete", "Model"]
        landing = page.inner_text("#landing")
        assert all(word in landing for word in ("Sample", "Sketch", "Complete", "Model", "7x7 codes"))

        # Sample: a class, 8 images of it, each a PNG of the model's size; the seed is shown.
        page.click("#sample-class input")
        page.get_by_role("option", name="Sneaker").click()
        page.click("#sample-go")
        srcs = wait_gallery(page, "sample-gallery", 8)
        assert [img.size for img in fetched(page, srcs)] == [(SIZE, SIZE)] * 8
        assert all(re.search(r"/sneaker_\d\.png$", s) for s in srcs)
        assert re.search(r"8 images in [\d.]+ s · seed \d+", page.inner_text("#sample-status"))
        with page.expect_download() as download:  # download all: one zip of the PNGs
            page.click("#sample-download")
        with zipfile.ZipFile(download.value.path()) as z:
            assert download.value.suggested_filename == "samples.zip" and len(z.namelist()) == 8

        # The cuts start at the prior's own sampling defaults (a demo prior's top-k 64), said beside them.
        page.get_by_text("sampling", exact=True).click()
        top_k = page.get_by_label("top-k")
        assert top_k.input_value() == "64" and "this prior's own: 64" in page.inner_text("#sample-top-k")

        # Every class: a row per class, each labelled by its first image's caption.
        page.click("#sample-class input")
        page.get_by_role("option", name="every class").click()
        page.fill("#sample-n input[type=number]", "3")
        page.press("#sample-n input[type=number]", "Tab")
        page.click("#sample-go")
        srcs = wait_gallery(page, "sample-gallery", 30, srcs)
        tops = page.eval_on_selector_all("#sample-gallery .thumbnail-item", "els => els.map(e => Math.round(e.getBoundingClientRect().top))")
        assert len(tops) == 30 and all(len(set(tops[r * 3 : r * 3 + 3])) == 1 for r in range(10)) and len(set(tops)) == 10
        captions = page.eval_on_selector_all("#sample-gallery .caption-label", "els => els.map(e => e.innerText)")
        assert captions == ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
        assert "rows, top to bottom: T-shirt/top, Trouser," in page.inner_text("#sample-status")
        # A request that fails leaves no stale results: the old status goes with the error.
        page.fill("#sample-seed input, #sample-seed textarea", "not a seed")
        page.click("#sample-go")
        page.wait_for_selector(".toast-body:has-text('seed')", timeout=60_000)
        assert "images in" not in page.inner_text("#sample-status")  # (Gradio marks the request's outputs "Error")
        assert gallery(page, "sample-gallery") == []
        page.fill("#sample-seed input, #sample-seed textarea", "")
        page.click("#sample-class input")
        page.get_by_role("option", name="Sneaker").click()
        page.fill("#sample-n input[type=number]", "8")
        page.press("#sample-n input[type=number]", "Tab")

        # Sketch: strokes drawn with the mouse -> the sketch as the prior reads it, and 4 samples.
        page.get_by_role("tab", name="Sketch").click()
        page.wait_for_selector("#sketch-canvas canvas")
        stroke(page, "#sketch-canvas canvas", [(0.35, 0.15), (0.55, 0.15), (0.55, 0.55), (0.85, 0.65), (0.85, 0.85),
                                               (0.2, 0.85), (0.25, 0.55), (0.35, 0.15)])
        page.click("#sketch-go")
        srcs = wait_gallery(page, "sketch-gallery", 4)
        assert [img.size for img in fetched(page, srcs)] == [(SIZE, SIZE)] * 4
        page.wait_for_selector("#sketch-read img")
        lines = np.asarray(fetched(page, gallery(page, "sketch-read"))[0].convert("L")) > 127
        assert lines.shape == (SIZE, SIZE) and 20 < lines.sum() < SIZE * SIZE // 3  # thin lines, not a blank or a fill
        assert "thinned to 1 px at 28x28" in page.inner_text("#sketch-status")

        # Complete: upload, paint the lower part, complete -> original | what the prior sees | 8 completions.
        page.get_by_role("tab", name="Complete").click()
        assert not page.is_visible("#complete-editor")  # no canvas to paint on before there is an image
        assert len(re.findall(r"\w+\.png", page.inner_text("#complete-examples"))) == 3  # images to try
        page.set_input_files("#complete-upload input[type=file]", studio["root"] / "boot.png")
        page.wait_for_selector("#complete-status:has-text('paint over')", timeout=60_000)
        stroke(page, "#complete-editor canvas", [(0.1, 0.8), (0.5, 0.8), (0.9, 0.8), (0.9, 0.9), (0.1, 0.9)])
        page.click("#complete-go")
        srcs = wait_gallery(page, "complete-gallery", 8)
        assert [img.size for img in fetched(page, srcs)] == [(SIZE, SIZE)] * 8
        original, masked = (np.asarray(fetched(page, gallery(page, f"complete-{k}"))[0]) for k in ("original", "masked"))
        kept = int(re.search(r"(\d+)/49 codes kept", page.inner_text("#complete-status")).group(1))
        assert 25 <= kept < 49  # the painted rows are drawn, the rest is kept
        assert np.array_equal(masked[:12], original[:12]) and not np.array_equal(masked[-4:], original[-4:])

        # A truncated PNG: one line in the page, naming the file as uploaded; then the studio still works.
        page.locator("#complete-upload button[aria-label='Clear']").click()
        page.wait_for_function("() => !document.querySelector('#complete-gallery img')")  # old completions go with their image
        assert not page.is_visible("#complete-editor")
        page.set_input_files("#complete-upload input[type=file]", studio["root"] / "truncated.png")
        toast = page.wait_for_selector(".toast-body:has-text('truncated')", timeout=60_000)
        message = toast.inner_text()
        assert "truncated.png: the file is truncated" in message and "vq-serve-" not in message
        page.get_by_role("tab", name="Sample").click()
        before = gallery(page, "sample-gallery")
        page.click("#sample-go")
        assert len(wait_gallery(page, "sample-gallery", 8, before)) == 8

        # Model: what is loaded.
        page.get_by_role("tab", name="Model").click()
        facts = page.inner_text("#model-facts")
        assert "7x7" in facts and "Ankle boot" in facts and "sketch" in facts
        assert re.search(r"test bits / code token\s+3\.2500", page.inner_text("#model-eval"))
        src = page.get_attribute("#model-recon img", "src")
        assert src.startswith("data:image/png;base64,")  # inlined: the page names no file of the machine
        shown_recon = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        assert shown_recon.size == Image.open(studio["runs"] / "tokenizer" / "reconstructions.png").size
        assert str(studio["runs"]) not in page.inner_text("#model-facts") + page.content()

        # A phone's width: ten columns of every class still fit the page.
        narrow = browser.new_page(viewport={"width": 400, "height": 900})
        narrow.set_default_timeout(120_000)
        narrow.goto(studio["url"])
        narrow.click("#sample-class input")
        narrow.get_by_role("option", name="every class").click()
        narrow.fill("#sample-n input[type=number]", "10")
        narrow.press("#sample-n input[type=number]", "Tab")
        narrow.click("#sample-go")
        wait_gallery(narrow, "sample-gallery", 100)
        rights = narrow.eval_on_selector_all("#sample-gallery .thumbnail-item", "els => els.map(e => e.getBoundingClientRect().right)")
        assert len(rights) == 100 and max(rights) <= 400
        browser.close()
    assert hosts == {studio["url"].split("/")[2]}  # the page asked nothing of any other host


# --- the API --------------------------------------------------------------------------------------

def images(result) -> list[Image.Image]:
    return [Image.open(item["image"]) for item in result]


@needs_fashion_mnist
def test_the_api_endpoints(studio):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    from vq.pipeline import Pipeline

    root, runs = studio["root"], studio["runs"]
    client = Client(studio["url"], verbose=False)
    served = images(client.predict(class_name="Bag", n=3, seed=7, api_name="/sample"))
    assert [(im.size, im.mode) for im in served] == [((SIZE, SIZE), "L")] * 3
    # The same seed gives the pixels the Python API gives.
    pipe = Pipeline.from_pretrained(runs / "tokenizer", runs / "sketch-prior", device="cpu")
    local = pipe.sample("Bag", n=3, seed=7)
    assert [np.asarray(a).tolist() for a in served] == [np.asarray(b).tolist() for b in local]

    done = images(client.predict(image=handle_file(root / "boot.png"), mask=handle_file(root / "mask.png"), n=2, seed=1,
                                 api_name="/complete"))
    assert [im.size for im in done] == [(SIZE, SIZE)] * 2
    local = pipe.complete(root / "boot.png", mask=root / "mask.png", n=2, seed=1)
    assert [np.asarray(a).tolist() for a in done] == [np.asarray(b).tolist() for b in local]
    sides = images(client.predict(image=handle_file(root / "boot.png"), n=2, keep="left", fraction=0.25, api_name="/complete"))
    assert len(sides) == 2

    drawn = images(client.predict(drawing=handle_file(runs / "boot.jpg"), class_name="ankle boot", n=2, seed=3,
                                  api_name="/sketch"))
    assert [im.size for im in drawn] == [(SIZE, SIZE)] * 2
    # The class's own guidance reaches the prior: the API's pixels, and not those at the default (twice guidance).
    strong = images(client.predict(drawing=handle_file(runs / "boot.jpg"), class_name="ankle boot", n=2, seed=3,
                                   class_guidance=6.0, api_name="/sketch"))
    local = pipe.sample("ankle boot", n=2, seed=3, sketch=runs / "boot.jpg", class_guidance=6.0)
    assert [np.asarray(a).tolist() for a in strong] == [np.asarray(b).tolist() for b in local]
    assert [np.asarray(a).tolist() for a in strong] != [np.asarray(b).tolist() for b in drawn]

    # Refusals: vq's one line, and the server serves on.
    for kwargs, words in (({"class_name": "Bag", "n": 17, "api_name": "/sample"}, "from 1 to 16"),
                          ({"class_name": "spaceship", "api_name": "/sample"}, "unknown class 'spaceship'"),
                          ({"image": handle_file(root / "truncated.png"), "api_name": "/complete"}, "truncated.png: the file is truncated")):
        with pytest.raises(AppError, match=re.escape(words)) as e:
            client.predict(**kwargs)
        assert "\n" not in str(e.value)

    # The page reads no file vq did not write for it, and takes no upload over 10 MB.
    import httpx

    for path in (runs / "tokenizer" / "reconstructions.png", root / "boot.png", ROOT / "README.md"):
        assert httpx.get(f"{studio['url']}gradio_api/file={path}").status_code == 403
    big = httpx.post(f"{studio['url']}gradio_api/upload", files={"files": ("big.png", bytes(11 << 20), "image/png")}, timeout=120)
    assert big.status_code == 413

    # Two clients at once: each gets its own images.
    clients = [Client(studio["url"], verbose=False) for _ in range(2)]
    jobs = [c.submit(class_name=name, n=n, api_name="/sample") for c, name, n in zip(clients, ("every class", "Sandal"), (2, 4))]
    results = [job.result(timeout=300) for job in jobs]
    named = [[Path(item["image"]).name for item in r] for r in results]
    assert named[0][:4] == ["t-shirt-top_0.png", "t-shirt-top_1.png", "trouser_0.png", "trouser_1.png"] and len(named[0]) == 20
    assert named[1] == [f"sandal_{i}.png" for i in range(4)]

    # A second studio on the same port is refused in one line.
    port = studio["url"].rsplit(":", 1)[1].strip("/")
    taken = vq("serve", "--tokenizer", runs / "tokenizer", "--prior", runs / "sketch-prior", "--port", port)
    assert_one_line_error(taken, f"cannot serve on 127.0.0.1:{port}: the port is taken")
    assert all(im.size == (SIZE, SIZE) for r in results for im in images(r))


def test_serve_refusals_are_one_line(tmp_path):
    shim = tmp_path / "no-gradio" / "gradio"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError(\"No module named 'gradio'\")\n")
    env = {**os.environ, "PYTHONPATH": str(shim.parent)}
    r = subprocess.run([sys.executable, "-m", "vq.cli.main", "serve"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert_one_line_error(r, "pip install 'vq[serve]'")
    assert_one_line_error(vq("serve", "--tokenizer", tmp_path / "missing"), "no tokenizer at")


# --- a hostile client -----------------------------------------------------------------------------

def call(url: str, endpoint: str, data: list) -> tuple[int, str]:
    """A raw API call (POST /gradio_api/call/NAME, then its event stream), as an attacker writes
    it, values and all, without gradio_client's checks: -> (status of the POST, the stream's text)."""
    import httpx

    body = json.dumps({"data": data})  # Python's JSON: NaN and Infinity too, as some clients send them
    r = httpx.post(f"{url}gradio_api/call/{endpoint}", content=body, headers={"Content-Type": "application/json"}, timeout=60)
    if r.status_code != 200:
        return r.status_code, r.text
    return 200, httpx.get(f"{url}gradio_api/call/{endpoint}/{r.json()['event_id']}", timeout=300).text


@needs_fashion_mnist
def test_request_fields_never_name_a_server_file(studio):
    """Every field of /complete and /sketch given server paths: no file outside the uploads is read,
    and the answer is the same whether the file exists or not (it tells nothing about the machine)."""
    url, runs = studio["url"], studio["runs"]
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    client = Client(url, verbose=False)
    real = runs / "tokenizer" / "reconstructions.png"  # an image on the server, outside the uploads
    boot = handle_file(studio["root"] / "boot.png")
    answers = {}
    for path in (str(real), str(real.parent / "no-such-file.png"), "/etc/passwd", "../../../etc/hostname"):
        with pytest.raises(AppError) as e:  # `keep` is a side, never a mask file's path
            client.predict(image=boot, keep=path, n=1, api_name="/complete")
        answers.setdefault("keep", set()).add(str(e.value).replace(path, "PATH"))
        for field, endpoint, rest in (("image", "complete", [None, 1, 0, "top", 0.5]),
                                      ("mask", "complete", None), ("drawing", "sketch", ["no class", 1, 2.0, None, None])):
            file = {"path": path, "meta": {"_type": "gradio.FileData"}}
            data = [file, *rest] if rest is not None else [boot_data(client, studio), file, 1, 0, "top", 0.5]
            status, text = call(url, endpoint, data)
            assert "error" in text or status >= 400, text
            answers.setdefault(field, set()).add(re.sub(r"Cannot move \S+ to", "Cannot move PATH to", text.replace(path, "PATH")))
    for field, seen in answers.items():
        assert len(seen) == 1, (field, seen)  # one answer, whatever the path
        (answer,) = seen
        assert "null" not in answer and "not uploaded by a user" in answer or "not in the list of choices" in answer, answer
        assert not any(word in answer for word in ("28x28", "exist", "truncated")), answer
    # The server serves on.
    assert len(images(client.predict(class_name="Bag", n=1, seed=1, api_name="/sample"))) == 1


def boot_data(client, studio) -> dict:
    """The test image uploaded as gradio_client does it: the server's stored copy, as FileData."""
    import httpx

    with open(studio["root"] / "boot.png", "rb") as f:
        stored = httpx.post(f"{studio['url']}gradio_api/upload", files={"files": ("boot.png", f, "image/png")}).json()[0]
    return {"path": stored, "meta": {"_type": "gradio.FileData"}}


@needs_fashion_mnist
def test_other_hosts_cross_origin_writes_and_large_requests_are_refused(studio):
    import httpx

    url = studio["url"]
    port = url.rsplit(":", 1)[1].strip("/")
    assert httpx.get(url).status_code == 200
    assert httpx.get(url, headers={"Host": f"localhost:{port}"}).status_code == 200
    rebound = httpx.get(url, headers={"Host": f"attacker.example:{port}"})  # DNS rebinding: another name, this address
    assert rebound.status_code == 421 and "does not answer to the host name 'attacker.example'" in rebound.text
    assert httpx.get(f"{url}config", headers={"Host": "attacker.example"}).status_code == 421
    png = ("d.png", (studio["root"] / "boot.png").read_bytes(), "image/png")
    upload = f"{url}gradio_api/upload"
    for origin in ("http://attacker.example", "null", f"http://127.0.0.1:{int(port) + 1}"):
        r = httpx.post(upload, files={"files": png}, headers={"Origin": origin})
        assert r.status_code == 403 and "other web pages" in r.text, origin
    assert httpx.post(upload, files={"files": png}, headers={"Origin": url.rstrip("/")}).status_code == 200  # the page's own
    # Several files of 6 MB each are under the per-file cap, but not one request's.
    many = [("files", (f"{i}.png", bytes(6 << 20), "image/png")) for i in range(2)]
    r = httpx.post(upload, files=many, timeout=120)
    assert r.status_code == 413 and "at most 11 MB" in r.text
    streamed = httpx.post(upload, content=(bytes(1 << 20) for _ in range(16)),  # chunked: no Content-Length
                          headers={"Content-Type": "multipart/form-data; boundary=x"}, timeout=120)
    assert streamed.status_code >= 400
    assert httpx.get(url).status_code == 200  # and serves on


@needs_fashion_mnist
def test_raw_numbers_of_any_kind_get_vq_s_line(studio):
    """What gradio_client would never send, a raw client may: infinities, NaN, strings, fractions in
    whole-number fields. Each is refused with vq's line, never a blank error."""
    url = studio["url"]
    for values, words in ((["Bag", float("inf"), 2.0, 1.0, 0, 1.0, None], "n must be a whole number"),
                          (["Bag", 1, float("nan"), 1.0, 0, 1.0, None], "guidance must be a number"),
                          (["Bag", 1.5, 2.0, 1.0, 0, 1.0, None], "n must be a whole number"),
                          (["Bag", 1, 2.0, 1.0, 0, 1.0, 1.7], "seed must be a whole number"),
                          (["Bag", 1, 2.0, 1.0, "12", 1.0, None], "top_k must be a whole number"),
                          (["Bag", 1, 2.0, 1.0, 0, 1.0, 10**30], "seed must be a whole number")):
        status, text = call(url, "sample", values)
        assert status == 200 and words in text and "null" not in text, (values, text)


@needs_fashion_mnist
def test_extreme_numbers_are_one_line_in_the_studio(studio):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    client = Client(studio["url"], verbose=False)
    for kwargs, words in (({"top_p": 0}, "top_p must lie in (0, 1]"), ({"top_p": 2}, "top_p must lie in (0, 1]"),
                          ({"guidance": 1e308}, "guidance must be a number from 0 to 100"),
                          ({"temperature": 1e-40}, "temperature must be a number from 0.001 to 100"),
                          ({"seed": 10**30}, "seed must be a whole number from 0 to"),
                          ({"n": 10**30}, "n must be a whole number from 1 to 16"),
                          ({"top_k": -3}, "top_k must be a whole number")):
        with pytest.raises(AppError, match=re.escape(words)) as e:
            client.predict(class_name="Bag", **{"n": 1, **kwargs}, api_name="/sample")
        assert "\n" not in str(e.value) and "None" not in str(e.value)
    with pytest.raises(AppError, match="keep is one of top, bottom, left, right|not in the list of choices"):
        client.predict(image=boot_path(studio), keep="middle", api_name="/complete")
    assert len(images(client.predict(class_name="Bag", n=1, top_p=1, api_name="/sample"))) == 1  # 1: no cut


def boot_path(studio):
    from gradio_client import handle_file

    return handle_file(studio["root"] / "boot.png")


@needs_fashion_mnist
def test_the_studio_shows_no_path_of_the_machine(studio):
    import httpx

    config = httpx.get(f"{studio['url']}config").text
    for path in (str(studio["runs"]), str(Path(studio["runs"]).resolve()), str(ROOT), os.path.expanduser("~")):
        assert path not in config, path


def test_a_studio_open_to_the_network_answers_its_addresses_not_other_names():
    from vq.pipeline.errors import VQError
    from vq.pipeline.serve.guard import RequestGuard, served_hosts

    open_to_all = RequestGuard(None, served_hosts("0.0.0.0"), 1)
    assert all(open_to_all.serves(h) for h in ("192.0.2.2", "10.1.2.3", "::1", "localhost", "127.0.0.1"))
    assert not open_to_all.serves("attacker.example")  # DNS rebinding needs a name: names are the allowed ones
    local = RequestGuard(None, served_hosts("127.0.0.1", ["studio.example.org"]), 1)
    assert local.serves("studio.example.org") and not local.serves("192.0.2.2") and not local.serves("evil.example.org")
    with pytest.raises(VQError, match="is no host name"):
        served_hosts("127.0.0.1", ["http://proxy.example/"])


def test_a_toast_shows_markup_as_text_and_an_api_caller_gets_the_line():
    # Gradio renders an error toast's message as HTML (checked in Chromium: a <b> in it became an
    # element): the page's line is escaped, the API's is not.
    from vq.pipeline.errors import VQError
    from vq.pipeline.serve.studio import gr, one_line_errors

    def refuse():
        raise VQError("unknown class '<img src=x>'; valid classes: a & b")

    with pytest.raises(gr.Error) as page:
        one_line_errors(refuse)()
    assert page.value.message == "unknown class '&lt;img src=x&gt;'; valid classes: a &amp; b"
    with pytest.raises(gr.Error) as api:
        one_line_errors(refuse, page=False)()
    assert api.value.message == "unknown class '<img src=x>'; valid classes: a & b"
