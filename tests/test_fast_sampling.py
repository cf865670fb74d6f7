"""The static-shape fast sampler (`stage2_prior.fast`) against the plain KV-cached loop and the
teacher-forced forward pass: same logits, same draws from the same seed."""

import shutil

import pytest
import torch

from vq.stage2_prior import AutoregressivePrior, PriorConfig, sample_codes
from vq.stage2_prior.fast import SPAN, StaticDecoder, probed, resolve_mode, round_up, sample_codes_fast, stepper_for
from vq.stage2_prior.fused import FusedDecoder, Unsupported

K = 16


def tiny_prior(seed=0, **kw) -> AutoregressivePrior:
    torch.manual_seed(seed)
    cfg = dict(codebook_size=K, height=3, width=4, num_classes=3, dim=32, depth=2, heads=2, dropout=0.0)
    return AutoregressivePrior(PriorConfig(**{**cfg, **kw})).eval()


def sketch_prior(seed=0, **kw) -> AutoregressivePrior:
    return tiny_prior(seed, height=4, width=4, condition="sketch", sketch_size=16, **kw)


PRIORS = {
    "class": lambda: tiny_prior(depth=3, heads=4),
    "mqa": lambda: tiny_prior(depth=3, heads=4, kv_heads=1),
    "gqa": lambda: tiny_prior(depth=3, heads=4, kv_heads=2),
    "sketch": lambda: sketch_prior(depth=3, heads=4),
    "sketch-gqa": lambda: sketch_prior(depth=3, heads=4, kv_heads=2),
}


def sketches(model, b: int, seed: int = 3) -> torch.Tensor | None:
    if model.config.condition != "sketch":
        return None
    return torch.rand(b, 1, 16, 16, generator=torch.Generator().manual_seed(seed)) > 0.7


@pytest.mark.parametrize("span", ["exact", "buckets", "full"])
@pytest.mark.parametrize("kind", list(PRIORS))
def test_static_step_logits_equal_the_full_forward_pass(kind, span):
    """Each way the step runs: eager (the exact span, no mask), as CUDA graphs record it (spans
    in multiples of SPAN, masked) and as torch.compile runs it (every slot, masked)."""
    model = PRIORS[kind]()
    c = model.config
    labels = torch.tensor([0, 2, -1])
    codes = torch.randint(0, K, (3, c.height, c.width), generator=torch.Generator().manual_seed(1))
    sketch = sketches(model, 3)
    full = model.logits(codes, labels, sketch)
    tokens = torch.cat([model.class_tokens(labels, 3, "cpu"), codes.flatten(1)], 1)
    dec = StaticDecoder(model, 3)
    dec.set_context(model.context(sketch, 3))
    spans = {"exact": lambda t: t + 1, "buckets": lambda t: min(round_up(t + 1, SPAN), dec.slots), "full": lambda t: dec.slots}
    with torch.no_grad():
        steps = torch.stack([dec.step(tokens[:, t], dec.position_ids[t], spans[span](t), masked=span != "exact")
                             for t in range(c.seq_len)], 1)
    torch.testing.assert_close(steps, full, atol=1e-5, rtol=1e-4)
    assert dec.slots % SPAN == 0 and dec.slots >= c.seq_len + 1
    assert dec.keys[0].shape[1] == (c.kv_heads or c.heads)  # the cache holds the shared key/value heads only


@pytest.mark.parametrize("kind", ["class", "mqa", "sketch"])
@pytest.mark.parametrize("cfg_scale,temperature,filters", [
    (1.0, 0.0, {}), (1.0, 1.0, {}), (3.0, 0.0, {}), (3.0, 1.3, {"top_k": 5}), (2.0, 0.8, {"top_p": 0.9}),
])
def test_fast_draws_the_same_codes_as_sample_codes(kind, cfg_scale, temperature, filters):
    model = PRIORS[kind]()
    labels = torch.tensor([0, 1, 2, -1] * 4)
    kw = dict(guidance=cfg_scale, temperature=temperature, sketch=sketches(model, 16), **filters)
    plain = sample_codes(model, labels, generator=torch.Generator().manual_seed(7), **kw)
    fast = sample_codes_fast(model, labels, generator=torch.Generator().manual_seed(7), **kw)
    assert fast.shape == plain.shape and fast.dtype == torch.int64
    assert torch.equal(fast, plain)


def test_fast_guided_batch_at_scale_one_and_unconditional_rows():
    model = tiny_prior()
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    draw = lambda **kw: sample_codes_fast(model, generator=torch.Generator().manual_seed(5), **kw)  # noqa: E731
    assert torch.equal(draw(labels=labels), draw(labels=labels, force_guidance_batch=True))
    assert not torch.equal(draw(labels=labels), draw(labels=labels, guidance=4.0))
    assert torch.equal(draw(num=6), sample_codes(model, num=6, generator=torch.Generator().manual_seed(5)))


def test_fast_gqa_samples_follow_the_model():
    """kv_heads between 1 and heads: query head i shares key/value head i % kv_heads, as in
    x-transformers' own forward pass, so greedy codes are the teacher-forced argmax."""
    model = PRIORS["gqa"]()
    labels = torch.tensor([0, 1, 2, -1])
    codes = sample_codes_fast(model, labels, temperature=0)
    assert torch.equal(model.logits(codes, labels).argmax(-1), codes.flatten(1))


@pytest.mark.parametrize("cfg_scale", [1.0, 2.0])
def test_fast_completion_keeps_known_codes_as_sample_codes(cfg_scale):
    model = tiny_prior()
    known = torch.randint(0, K, (6, 3, 4), generator=torch.Generator().manual_seed(2))
    mask = torch.zeros(6, 3, 4, dtype=torch.bool)
    mask[:, :2] = True
    mask[:, 2, 3] = True
    labels = torch.tensor([0, 1, 2, -1, 0, 1])
    kw = dict(guidance=cfg_scale, known=known, known_mask=mask)
    fast = sample_codes_fast(model, labels, generator=torch.Generator().manual_seed(4), **kw)
    assert torch.equal(fast[mask], known[mask])
    assert torch.equal(fast, sample_codes(model, labels, generator=torch.Generator().manual_seed(4), **kw))


def test_decoders_are_kept_per_batch_and_renewed_with_the_weights():
    model = tiny_prior()
    a = stepper_for(model, 4, "eager")
    assert stepper_for(model, 4, "eager") is a
    assert stepper_for(model, 8, "eager") is not a
    before = sample_codes_fast(model, torch.tensor([0, 1, 2, 0]), temperature=0)
    model.to(torch.float64)  # new weight tensors: a new decoder, caches in the new dtype
    b = stepper_for(model, 4, "eager")
    assert b is not a and b.decoder.keys[0].dtype == torch.float64
    assert torch.equal(sample_codes_fast(model, torch.tensor([0, 1, 2, 0]), temperature=0), before)


@pytest.mark.parametrize("kind", list(PRIORS))
def test_fused_decoder_draws_the_same_codes_as_the_plain_loop(kind):
    """The CPU's default path (folded weights, complex rotary, grouped heads) on every prior
    layout: the same codes as `sample_codes`, guided and not, with a filter and with known codes."""
    model = PRIORS[kind]()
    labels = torch.tensor([0, 1, 2, -1] * 3)
    known = torch.randint(0, K, (12, model.config.height, model.config.width), generator=torch.Generator().manual_seed(2))
    mask = torch.rand(known.shape, generator=torch.Generator().manual_seed(3)) < 0.3
    for kw in (dict(guidance=1.0), dict(guidance=2.5, top_k=6), dict(guidance=1.5, known=known, known_mask=mask)):
        kw["sketch"] = sketches(model, 12)
        plain = sample_codes(model, labels, generator=torch.Generator().manual_seed(11), **kw)
        fused = sample_codes_fast(model, labels, compile="fused", generator=torch.Generator().manual_seed(11), **kw)
        assert torch.equal(fused, plain)
        rows = 12 * (2 if kw["guidance"] != 1.0 else 1)
        assert stepper_for(model, rows, "fused").mode == "fused"  # folded, not a silent fallback
    with torch.no_grad():  # and its logits are the teacher-forced pass's
        tokens = torch.cat([model.class_tokens(labels, 12, "cpu"), known.flatten(1)], 1)
        dec = FusedDecoder(model, 12)
        dec.set_context(model.context(sketches(model, 12), 12))
        steps = torch.stack([dec.step(tokens[:, t], t) for t in range(model.config.seq_len)], 1)
        torch.testing.assert_close(steps, model.logits(known, labels, sketches(model, 12)), atol=1e-5, rtol=1e-4)


def test_fused_decoder_refuses_what_it_does_not_fold():
    model = tiny_prior()
    with torch.no_grad():
        broken = FusedDecoder(model, 2)
        broken.layers[0][1].mul_(1.01)  # folded weights that no longer give the prior's logits
        with pytest.raises(Unsupported, match="differ"):
            probed(broken, model)
    model.net.attn_layers.layers[0][1].qk_norm = True  # a layout it does not fold: the eager step runs it
    with pytest.raises(Unsupported):
        FusedDecoder(model, 2)
    assert stepper_for(model, 2, "fused").mode == "eager"
    double = tiny_prior().to(torch.float64)  # float64 weights: eager, the same draws
    labels = torch.tensor([0, 1, 2])
    assert torch.equal(sample_codes_fast(double, labels, generator=torch.Generator().manual_seed(1)),
                       sample_codes(double, labels, generator=torch.Generator().manual_seed(1)))
    assert stepper_for(double, 3, "fused").mode == "eager"


def test_fused_decoder_follows_weights_changed_in_place():
    """Its weights are folded copies: a prior trained in place (an optimizer step, a state dict
    loaded) gets a new decoder, so samples follow the current weights."""
    model = tiny_prior()
    labels = torch.tensor([0, 1, 2, -1])
    first = stepper_for(model, 4, "fused")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    assert stepper_for(model, 4, "fused") is not first
    assert torch.equal(sample_codes_fast(model, labels, temperature=0), sample_codes(model, labels, temperature=0))


def test_modes():
    cpu = torch.device("cpu")
    assert resolve_mode("auto", cpu) == "fused" and resolve_mode(False, cpu) == "eager"
    assert resolve_mode("auto", torch.device("mps")) == "eager"  # the folded step answers a CPU's dispatch cost only
    assert resolve_mode("auto", torch.device("cuda")) == "graph" and resolve_mode(True, cpu) == "compile"
    with pytest.raises(ValueError):
        resolve_mode("fastest", cpu)
    with pytest.raises(ValueError, match="CUDA"):
        sample_codes_fast(tiny_prior(), torch.tensor([0]), compile="graph")


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None, reason="torch.compile on a CPU needs a C++ compiler")
def test_compiled_step_draws_the_same_codes():
    """torch.compile runs the step at the full span (one shape for every position)."""
    model = tiny_prior(depth=1)
    labels = torch.tensor([0, 1, 2, -1])
    kw = dict(guidance=2.0, temperature=1.0, top_k=6)
    compiled = sample_codes_fast(model, labels, generator=torch.Generator().manual_seed(9), compile=True, **kw)
    assert torch.equal(compiled, sample_codes(model, labels, generator=torch.Generator().manual_seed(9), **kw))
