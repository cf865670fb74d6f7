"""Sharper tokenizers: FSQ and l2 quantizers, the perceptual terms, and the VQGAN discriminator
with its adaptive weight, trained in the one loop with its own optimizer."""


import pytest
import torch

from vq.stage1_vqvae import TOKENIZERS, VQVAEConfig
from vq.stage1_vqvae.losses import PatchDiscriminator, abs_laplacian, hinge_d_loss, ssim_loss
from vq.stage1_vqvae.quantizer import FSQ
from test_cli import assert_one_line_error, vq

TINY = dict(channels=1, image_size=16, hidden=16, res_blocks=1, downsample=4, code_dim=8, codebook_size=16)


def test_fsq_indices_codes_indices_round_trip_and_every_level_is_reachable():
    q = FSQ([8, 5, 3])
    assert q.codebook_size == 120
    every = torch.arange(120).reshape(1, 10, 12)
    codes = q.indices_to_codes(every)
    assert codes.abs().max() <= 1
    assert torch.equal(q.codes_to_indices(codes), every)
    out = q(torch.randn(16, 3, 8, 8) * 4)  # encoder outputs of any scale land on the grid
    assert torch.equal(q.codes_to_indices(out.quantized), out.indices)
    assert torch.equal(q.indices_to_codes(out.indices), out.quantized)
    levels = (out.quantized * torch.tensor([4, 2, 1])[None, :, None, None]).round()
    for d, n in enumerate([8, 5, 3]):
        assert levels[:, d].unique().numel() == n  # all L levels of each channel are used
    z = torch.randn(2, 3, 4, 4, requires_grad=True)
    q(z).quantized.sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0  # the straight-through gradient reaches the encoder


@pytest.mark.parametrize("quantizer", ["fsq", "l2"])
def test_every_quantizer_exports_the_same_kind_of_code_map(quantizer, batch):
    x, _ = batch
    torch.manual_seed(0)
    model = TOKENIZERS["vqvae"](VQVAEConfig(**{**TINY, "quantizer": quantizer}))
    model.train()
    model(x)
    model.eval()
    idx = model.encode_indices(x)
    assert idx.shape == (8, 4, 4) and idx.dtype == torch.int64
    assert 0 <= int(idx.min()) and int(idx.max()) < model.config.codebook_size
    assert torch.allclose(model.decode_indices(idx), model.reconstruct(x), atol=1e-5)
    if quantizer == "l2":
        assert torch.allclose(model.quantizer.codebook.norm(dim=1), torch.ones(16), atol=1e-5)
    else:
        assert model.config.codebook_size == 240 and model.config.fsq_levels == [8, 6, 5]  # K = 16 asked: the smallest table entry, 2^8


def test_a_codebook_over_65536_is_refused():
    with pytest.raises(ValueError, match="65,536"):
        TOKENIZERS["vqvae"](VQVAEConfig(**{**TINY, "quantizer": "fsq", "fsq_levels": [8, 8, 8, 8, 8, 8]}))


def gan(**kw):
    torch.manual_seed(0)
    return TOKENIZERS["vqvae"](VQVAEConfig(**{**TINY, "perceptual": "random", "perceptual_weight": 0.5,
                                             "adversarial_weight": 0.5, "adversarial_start": 2, **kw}))


def grads(loss, params):
    g = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if x is None else x for p, x in zip(params, g)]


def test_the_discriminator_and_the_autoencoder_each_get_only_their_own_gradient(batch):
    x, _ = batch
    model = gan()
    model.eval()  # no codebook update between the passes below; gradients still flow
    disc = list(model.discriminator.parameters())
    ae = model.optimizer_parts()["autoencoder"][0]
    assert {id(p) for p in disc}.isdisjoint(map(id, ae)) and len(disc) + len(ae) == len(list(model.parameters()))
    recon = model.decode(model.quantize(x).quantized)
    rec = torch.nn.functional.mse_loss(recon, x)
    metrics = {}
    both = model.adversarial_terms(x, recon, rec, step=5, metrics=metrics)
    d_only = hinge_d_loss(model.discriminator(x), model.discriminator(recon.detach()))
    # The discriminator's gradient is that of its own loss alone: the generator's term adds nothing.
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads(both, disc), grads(d_only, disc)))
    # The autoencoder's gradient comes from the generator's term alone: the discriminator's loss adds nothing.
    assert all(float(g.abs().max()) == 0 for g in grads(d_only, ae))
    assert any(float(g.abs().max()) > 0 for g in grads(both, ae))
    w = metrics["adv_weight"]
    assert torch.isfinite(w) and 0 < float(w) <= 1e4
    before = model.adversarial_terms(x, recon, rec, step=1, metrics={})  # before adversarial_start: off
    assert float(before.detach()) == 0 and before.requires_grad


def test_one_loop_step_updates_each_part_with_its_own_optimizer(batch, tmp_path):
    from vq.pipeline.data.splits import Split
    from vq.pipeline.data.images import image_batch
    from vq.pipeline.train.config import TrainConfig
    from vq.pipeline.train.trainer import fit

    x, y = batch
    model = gan(adversarial_start=0)
    images = ((x + 1) * 127.5).round().to(torch.uint8)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    result = fit(model, Split(images, y), prepare=image_batch, evaluate=lambda m: {}, save=lambda m, metrics: None,
                 run_dir=tmp_path, cfg=TrainConfig(steps=3, batch_size=8, eval_every=100, workers=0, device="cpu"))
    assert result.step == 3
    changed = {k for k, v in model.state_dict().items() if not torch.equal(start[k], v)}
    assert any(k.startswith("discriminator.") for k in changed) and any(k.startswith("decoder.") for k in changed)
    from vq.pipeline.train.state import load_state

    state = load_state(tmp_path / "train_state.safetensors")
    assert set(state["optimizers"]) == {"autoencoder", "discriminator"}
    assert state["optimizers"]["discriminator"]["param_groups"][0]["betas"] == [0.5, 0.9]


def test_perceptual_terms_are_zero_on_identical_images_and_positive_otherwise(batch):
    x, _ = batch
    model = gan()
    blurred = torch.nn.functional.avg_pool2d(x, 3, 1, 1)
    assert float(model.perceptual_loss(x, x)) < 1e-6 < float(model.perceptual_loss(blurred, x))
    assert float(ssim_loss(x, x)) < 1e-6 < float(ssim_loss(blurred, x))
    assert float(abs_laplacian(blurred).mean()) < float(abs_laplacian(x).mean())  # blur loses high frequencies
    assert not any("perceptual" in k for k in model.state_dict())  # a fixed network, not part of the weights


def test_patch_discriminator_gives_a_map_of_logits():
    assert PatchDiscriminator(3, 16, 2)(torch.zeros(2, 3, 32, 32)).shape == (2, 1, 8, 8)


def test_lpips_without_its_weights_is_one_line_before_any_data(tmp_path):
    cfg = tmp_path / "lpips.toml"
    cfg.write_text('[model]\nperceptual = "lpips"\nperceptual_weight = 1.0\nlpips_weights = "/nonexistent/vgg16.pth"\n')
    r = vq("fit-tokenizer", "--data", tmp_path / "no-such-data", "--config", cfg, "--out", tmp_path / "run")
    assert_one_line_error(r, "needs torchvision's VGG16 weights at /nonexistent/vgg16.pth")
    assert "never downloads" in r.stderr and not (tmp_path / "run").exists()


def test_an_adversarial_run_resumes_exactly(batch, tmp_path):
    from vq.pipeline.data.splits import Split
    from vq.pipeline.data.images import image_batch
    from vq.pipeline.errors import Interrupted
    from vq.pipeline.train.config import TrainConfig
    from vq.pipeline.train.trainer import fit

    x, y = batch
    images = ((x + 1) * 127.5).round().to(torch.uint8).repeat(4, 1, 1, 1)
    split = Split(images, y.repeat(4))
    cfg = TrainConfig(steps=12, batch_size=8, eval_every=100, workers=0, device="cpu", deterministic=True)

    def run(out, resume=False, stop_at=None):
        model = gan(adversarial_start=3)
        seen = []

        def prepare(batch, device):
            if stop_at is not None and len(seen) == stop_at:
                raise KeyboardInterrupt  # as Ctrl-C would, at a step boundary
            seen.append(1)
            return image_batch(batch, device)

        fit(model, split, prepare=prepare, evaluate=lambda m: {}, save=lambda m, metrics: None,
            run_dir=out, cfg=cfg, resume=resume, keep_schedule=True)
        return model.state_dict()

    straight = run(tmp_path / "a")
    with pytest.raises(Interrupted):
        run(tmp_path / "b", stop_at=7)  # stopped after the discriminator has started
    resumed = run(tmp_path / "b", resume=True)
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
