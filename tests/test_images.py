"""Reading user images: every Pillow mode to the model's channels, and one-line refusals of files
that cannot be read (missing, truncated, not an image, decompression bombs) and of bad masks."""

import numpy as np
import pytest
import torch
from PIL import Image

from vq.pipeline.generate import folders as outputs
from vq.pipeline.data.splits import FileImages
from vq.pipeline.data.images import decode, open_image, pil_to_array, upright_size
from vq.stage2_prior import AutoregressivePrior, PriorConfig, SamplingOptions
from vq.stage1_vqvae import VQVAE, VQVAEConfig
from vq.pipeline.records import PriorRecord, TokenizerRecord
from vq.pipeline.generate.inputs import keep_mask, read_image
from vq.pipeline.errors import VQError


def refusal(fn, *args, **kwargs) -> str:
    """The message of the VQError that fn raises, checked to be one line."""
    with pytest.raises(VQError) as e:
        fn(*args, **kwargs)
    message = str(e.value)
    assert "\n" not in message and message.strip() == message
    return message


def pixels(img: Image.Image, channels: int) -> np.ndarray:
    """(C, H, W) uint8 at the image's own (square) size: no resizing blurs the values."""
    return pil_to_array(img, channels, img.size[0])


def test_grey_bit_depths_scale_by_range_not_clipped():
    deep = Image.fromarray(np.array([[0, 256], [32768, 65535]], dtype=np.uint16))
    assert deep.mode == "I;16"
    assert pixels(deep, 1)[0].tolist() == [[0, 1], [128, 255]]
    i16 = Image.fromarray(np.array([[0, 256], [32768, 65535]], dtype=np.int32))  # older Pillows load 16-bit PNGs as I
    assert i16.mode == "I" and pixels(i16, 1)[0].tolist() == [[0, 1], [128, 255]]
    i32 = Image.fromarray(np.array([[-5, 0], [70000, 139995]], dtype=np.int32))
    assert pixels(i32, 1)[0].tolist() == [[0, 0], [128, 255]]
    unit = Image.fromarray(np.array([[0, 0.5], [0.25, 1]], dtype=np.float32))
    assert unit.mode == "F"
    out = pixels(unit, 1)[0]
    assert out[0, 0] == 0 and out[0, 1] in (127, 128) and out[1, 0] in (63, 64) and out[1, 1] == 255
    wide = Image.fromarray(np.array([[-2, 0], [2, 6]], dtype=np.float32))
    assert pixels(wide, 1)[0].tolist() == [[0, 64], [128, 255]]
    assert pixels(deep, 3).shape == (3, 2, 2) and (pixels(deep, 3)[:, 1, 1] == 255).all()


def test_bilevel_palette_and_cmyk():
    bw = Image.new("1", (2, 2))
    bw.putpixel((1, 0), 1)
    assert pixels(bw, 1)[0].tolist() == [[0, 255], [0, 0]]
    pal = Image.new("P", (2, 2))
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255])
    pal.putpixel((0, 0), 1)
    pal.putpixel((1, 1), 2)
    rgb = pixels(pal, 3)
    assert rgb[:, 0, 0].tolist() == [255, 0, 0] and rgb[:, 1, 1].tolist() == [0, 0, 255] and rgb[:, 0, 1].tolist() == [0, 0, 0]
    assert pixels(pal, 1)[0, 0, 0] == 76  # luma of pure red
    cmyk = Image.new("CMYK", (2, 2), (0, 255, 255, 0))
    assert pixels(cmyk, 3)[:, 0, 0].tolist() == [255, 0, 0]
    assert pixels(cmyk, 1)[0, 0, 0] == 76


def test_transparency_is_composited_over_black(tmp_path):
    rgba = Image.new("RGBA", (2, 2), (255, 255, 255, 0))  # white under full transparency: a plain convert keeps it
    rgba.putpixel((1, 1), (255, 0, 0, 255))
    rgba.putpixel((0, 1), (200, 200, 200, 128))
    out = pixels(rgba, 3)
    assert out[:, 0, 0].tolist() == [0, 0, 0] and out[:, 1, 1].tolist() == [255, 0, 0]
    assert all(abs(v - 100) <= 1 for v in out[:, 1, 0].tolist())  # 200 * 128/255
    la = Image.new("LA", (2, 2), (255, 0))
    la.putpixel((1, 0), (255, 255))
    assert pixels(la, 1)[0].tolist() == [[0, 255], [0, 0]]
    pal = Image.new("P", (2, 2), 1)
    pal.putpalette([0, 0, 0, 255, 255, 255])
    pal.putpixel((0, 0), 0)
    pal.save(tmp_path / "p.png", transparency=1)  # palette index 1 (white) is transparent
    x, note = read_image(tmp_path / "p.png", 1, 2)
    assert (x == -1).all() and "over black" in note
    opaque = Image.new("RGBA", (2, 2), (255, 255, 255, 255))
    opaque.save(tmp_path / "opaque.png")
    x, note = read_image(tmp_path / "opaque.png", 1, 2)
    assert (x == 1).all() and note == "2x2 colour with transparency -> 2x2 grey"


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("L", (20, 10))
    img.paste(255, (0, 0, 10, 10))  # stored: left half white
    exif = img.getexif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise: the white half on top
    img.save(tmp_path / "turned.png", exif=exif)
    x, note = read_image(tmp_path / "turned.png", 1, 10)
    assert (x[0, 0, :5] == 1).all() and (x[0, 0, 5:] == -1).all()
    assert note == "20x10 grey -> 10x10 grey, EXIF orientation 6 applied"
    assert upright_size(tmp_path / "turned.png") == (10, 20)


def test_a_large_jpeg_is_decoded_in_draft(tmp_path):
    Image.new("RGB", (4000, 3000), (200, 10, 10)).save(tmp_path / "big.jpg")
    assert decode(open_image(tmp_path / "big.jpg"), 3, 28).size == (500, 375)  # 1/8 scale, still >= 28
    x, note = read_image(tmp_path / "big.jpg", 3, 28)
    assert x.shape == (1, 3, 28, 28) and note.startswith("4000x3000 colour -> 28x28 colour")
    assert abs(float(x[0, 0].mean()) - (200 / 127.5 - 1)) < 0.05


def test_unreadable_files_are_refused_in_one_line(tmp_path):
    assert "does not exist" in refusal(read_image, tmp_path / "missing.png", 1, 8)
    (tmp_path / "notes.png").write_text("just some text\n")
    message = refusal(read_image, tmp_path / "notes.png", 1, 8)
    assert "notes.png" in message and "cannot read image" in message
    noise = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "whole.png")
    data = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    message = refusal(read_image, tmp_path / "cut.png", 1, 8)
    assert "cut.png" in message and "truncated" in message


@pytest.mark.parametrize("side", [40, 50])  # 1600 pixels: Pillow only warns; 2500 (> 2 x limit): it raises
def test_decompression_bombs_are_refused_before_decoding(tmp_path, monkeypatch, side):
    Image.new("L", (side, side)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    message = refusal(read_image, tmp_path / "bomb.png", 1, 8)
    assert "bomb.png" in message and str(side * side) in message and "1000" in message
    # In a training folder the same image is skipped with its reason, not decoded.
    item = FileImages([tmp_path / "bomb.png"], torch.zeros(1, dtype=torch.int64), 1, 8)[0]
    assert item[0] is None and "bomb.png" in item[2] and str(side * side) in item[2]


def test_training_files_share_the_conversion(tmp_path):
    Image.fromarray(np.full((4, 6), 65535, dtype=np.uint16)).save(tmp_path / "deep.png")
    Image.new("RGBA", (4, 4), (255, 255, 255, 0)).save(tmp_path / "clear.png")
    files = FileImages([tmp_path / "deep.png", tmp_path / "clear.png"], torch.zeros(2, dtype=torch.int64), 1, 4)
    deep, clear = files[0], files[1]
    assert deep[2] is None and deep[0].shape == (1, 4, 4) and (deep[0] == 255).all()
    assert clear[2] is None and (clear[0] == 0).all()


def _mask(path, size, fill, box=None):
    m = Image.new("L", size, fill)
    if box:
        m.paste(255 - fill, box)
    m.save(path)
    return path


def test_mask_checks(tmp_path):
    Image.new("L", (30, 20), 128).save(tmp_path / "img.png")
    image = tmp_path / "img.png"
    good = _mask(tmp_path / "good.png", (30, 20), 0, (0, 0, 30, 10))  # top half white: keep it
    m = keep_mask(good, 8, 0.5, image)
    assert m[:4].all() and not m[4:].any()
    small = _mask(tmp_path / "small.png", (15, 10), 0, (0, 0, 15, 5))  # the image's shape at half the size: scaled
    assert torch.equal(keep_mask(small, 8, 0.5, image), m)
    message = refusal(keep_mask, _mask(tmp_path / "square.png", (20, 20), 0, (0, 0, 20, 10)), 8, 0.5, image)
    assert "square.png" in message and "20x20" in message and "30x20" in message and "shape" in message
    message = refusal(keep_mask, _mask(tmp_path / "black.png", (30, 20), 0), 8, 0.5, image)
    assert "black.png" in message and "keeps nothing" in message and "vq sample" in message
    message = refusal(keep_mask, _mask(tmp_path / "white.png", (30, 20), 255), 8, 0.5, image)
    assert "white.png" in message and "nothing to complete" in message
    assert "keeps nothing" in refusal(keep_mask, "top", 28, 0.01)
    assert "fraction" in refusal(keep_mask, "top", 28, 1.0)


def test_one_mask_rule_for_files_pillow_images_and_arrays(tmp_path):
    """A mask has its image's shape at any size, whatever form either comes in; another shape is
    refused (never stretched), the same from files, Pillow images, arrays and tensors."""
    image_file = tmp_path / "img.png"
    Image.new("L", (112, 112), 128).save(image_file)
    forms = {"file": image_file, "pil": Image.open(image_file), "array": np.full((112, 112), 128, np.uint8),
             "tensor": torch.zeros(1, 112, 112)}
    top = np.zeros((28, 28), bool)
    top[:14] = True
    tall = np.zeros((28, 20), bool)
    tall[:14] = True
    masks = {"file": _mask(tmp_path / "m.png", (28, 28), 0, (0, 0, 28, 14)), "pil": Image.fromarray(top.astype(np.uint8) * 255),
             "array": top, "tensor": torch.from_numpy(top)}
    tall_masks = {"file": _mask(tmp_path / "tall.png", (20, 28), 0, (0, 0, 20, 14)), "pil": Image.fromarray(tall.astype(np.uint8) * 255),
                  "array": tall, "tensor": torch.from_numpy(tall)}
    for image in forms.values():
        for name in masks:
            m = keep_mask(masks[name], 8, 0.5, image)  # a 28x28 mask serves a 112x112 image
            assert m[:4].all() and not m[4:].any(), name
            message = refusal(keep_mask, tall_masks[name], 8, 0.5, image)
            assert "20x28" in message and "112x112" in message and "shape" in message, (name, message)


def test_complete_refuses_a_bad_mask_before_loading_any_model(tmp_path, monkeypatch):
    Image.new("L", (30, 20), 128).save(tmp_path / "img.png")
    black = _mask(tmp_path / "black.png", (30, 20), 0)
    tok = TokenizerRecord(tmp_path / "tok", VQVAE, VQVAEConfig(image_size=8, codebook_size=16), "f", ("a", "b"))
    prior = PriorRecord(tmp_path / "prior", AutoregressivePrior, PriorConfig(codebook_size=16, height=2, width=2, num_classes=2),
                        "p", ("a", "b"), tokenizer_fingerprint="f")
    monkeypatch.setattr(outputs, "records", lambda *a: (tok, prior))

    def load(*a, **kw):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(outputs.Pipeline, "from_pretrained", load)
    out = tmp_path / "out"
    message = refusal(outputs.complete_to_folder, tmp_path / "img.png", tmp_path / "tok", tmp_path / "prior",
                      mask_path=black, out=out, options=SamplingOptions())
    assert "keeps nothing" in message and not out.exists()
