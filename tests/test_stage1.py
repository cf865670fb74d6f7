import pytest
import torch

from vq.pipeline.checkpoint import load_model, save_checkpoint
from vq.pipeline.records import PriorRecord, TokenizerRecord
from vq.pipeline.errors import VQError
from vq.pipeline.files import atomic_write_json, read_json
from vq.stage1_vqvae import TOKENIZERS, CVAEConfig, VAEConfig, VQVAEConfig, VectorQuantizer

TINY = dict(channels=1, image_size=16, hidden=16, res_blocks=1, downsample=4)
CONFIGS = {
    "vqvae": VQVAEConfig(**TINY, code_dim=8, codebook_size=16),
    "vae": VAEConfig(**TINY, latent_dim=8, bottleneck_channels=4, kl_warmup_steps=0),
    "cvae": CVAEConfig(**TINY, latent_dim=8, bottleneck_channels=4, kl_warmup_steps=0, num_classes=3, class_dim=4),
}


def make(name):
    torch.manual_seed(0)
    return TOKENIZERS[name](CONFIGS[name])


@pytest.mark.parametrize("name", list(TOKENIZERS))
def test_loss_falls_on_a_fixed_batch(name, batch):
    x, y = batch
    model = make(name)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for step in range(60):
        out = model(x, y, step=step)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    assert out.recon.shape == x.shape
    assert set(out.metrics) >= {"rec"}
    assert all(not v.requires_grad for v in out.metrics.values())


def test_indices_to_codes_reproduces_the_quantized_map(batch):
    model = make("vqvae")
    model.train()
    model(batch[0])  # k-means initialisation and one EMA update
    model.eval()
    q = model.quantize(batch[0])
    assert q.indices.shape == (8, 4, 4) and q.indices.dtype == torch.int64
    assert torch.equal(model.quantizer.indices_to_codes(q.indices), q.quantized)
    assert torch.equal(model.decode_indices(q.indices), model.reconstruct(batch[0]))


def test_quantizer_is_fp32_under_bf16_autocast():
    torch.manual_seed(0)
    vq = VectorQuantizer(32, 8).eval()
    z = torch.randn(4, 8, 5, 5)
    ref = vq(z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = vq(z.bfloat16().float())
    assert out.quantized.dtype == torch.float32
    assert torch.equal(out.indices, vq(z.bfloat16().float()).indices)
    assert ref.indices.shape == (4, 5, 5)


def test_dead_codes_are_restarted_onto_the_data():
    """Codes stranded far from the data get pulled back until every code is in use."""
    torch.manual_seed(0)
    vq = VectorQuantizer(16, 2, decay=0.8, dead_code_threshold=1.0, kmeans_iters=0)
    centres = torch.randn(16, 2) * 10

    def data():  # 512 points around the 16 centres, as a (1, d=2, h=512, w=1) map
        points = centres[torch.randint(0, 16, (512,))] + 0.1 * torch.randn(512, 2)
        return points.T.reshape(1, 2, 512, 1)

    vq.train()
    vq(data())
    vq.codebook[:8] = 1000.0  # strand half the codebook
    vq.ema_count[:8] = 0.0
    usage = [float(vq(data()).usage) for _ in range(30)]
    vq.eval()
    assert float(vq(data()).usage) == 1.0
    assert (vq.codebook.abs() < 100).all()
    assert usage[-1] == 1.0


@pytest.mark.parametrize("name", list(TOKENIZERS))
def test_save_load_gives_identical_outputs(name, batch, tmp_path):
    x, y = batch
    model = make(name)
    model(x, y)  # initialise the codebook / touch every parameter
    model.eval()
    save_checkpoint(tmp_path / "run", model, TokenizerRecord(tmp_path / "run", type(model), model.config, class_names=("a", "b", "c")))
    record = TokenizerRecord.read(tmp_path / "run")
    loaded = load_model(record)
    assert record.kind.name == name and record.class_names == ("a", "b", "c") and len(record.fingerprint) == 16
    assert torch.equal(model.reconstruct(x, y), loaded.reconstruct(x, y))
    if name != "vqvae":
        g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
        assert torch.equal(model.sample(4, y[:4], generator=g1), loaded.sample(4, y[:4], generator=g2))


def test_loading_refuses_mismatched_or_corrupt_checkpoints(batch, tmp_path):
    model = make("vqvae")
    save_checkpoint(tmp_path / "run", model, TokenizerRecord(tmp_path / "run", type(model), model.config, class_names=("a",)))
    with pytest.raises(VQError, match="not a prior"):
        PriorRecord.read(tmp_path / "run")
    info = read_json(tmp_path / "run" / "config.json")
    info["config"]["codebook_size"] = 32  # config no longer matches the weights
    atomic_write_json(tmp_path / "run" / "config.json", info)
    with pytest.raises(VQError, match="do not match"):
        load_model(TokenizerRecord.read(tmp_path / "run"))
    (tmp_path / "run" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(VQError, match="unreadable"):
        load_model(TokenizerRecord.read(tmp_path / "run"))
    with pytest.raises(VQError, match="no tokenizer"):
        TokenizerRecord.read(tmp_path / "missing")


def test_config_rejects_a_grid_that_does_not_divide():
    with pytest.raises(ValueError, match="not divisible"):
        TOKENIZERS["vqvae"](VQVAEConfig(image_size=30, downsample=4))
