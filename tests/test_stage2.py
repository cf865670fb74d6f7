import pytest
import torch

from vq.pipeline.generate.draw import complete_codes, is_prefix
from vq.pipeline.generate.plans import resolve_class
from vq.stage2_prior import SamplingOptions
from vq.pipeline.errors import VQError
from vq.stage2_prior import AutoregressivePrior, PriorConfig, sample_codes, score_codes
from vq.pipeline.configs import build, to_dict
from vq.pipeline.records import PriorRecord
from vq.pipeline.train.config import TrainConfig
from vq.pipeline.train.jobs import FitJob, job_configs
from vq.stage2_prior.sampling import filter_logits

K = 16


def tiny_prior(seed=0, **kw) -> AutoregressivePrior:
    torch.manual_seed(seed)
    cfg = dict(codebook_size=K, height=3, width=4, num_classes=3, dim=32, depth=2, heads=2, dropout=0.0)
    return AutoregressivePrior(PriorConfig(**{**cfg, **kw})).eval()


def overfit(model, code_map, label, steps=150):
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    codes, labels = code_map.expand(8, -1, -1), torch.full((8,), label)
    for _ in range(steps):
        loss = model(codes, labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), loss.item()


def test_prior_overfits_one_code_map():
    target = torch.randint(0, K, (1, 3, 4), generator=torch.Generator().manual_seed(1))
    model, loss = overfit(tiny_prior(class_dropout=0.0), target, label=2)
    assert loss < 0.05
    greedy = sample_codes(model, torch.tensor([2]), temperature=0)
    assert torch.equal(greedy, target)


def test_cached_sampling_matches_teacher_forcing():
    model = tiny_prior()
    labels = torch.tensor([0, 1, 2, -1])
    codes = sample_codes(model, labels, temperature=0)
    assert torch.equal(model.logits(codes, labels).argmax(-1), codes.flatten(1))


def test_samples_are_codes_and_seeded():
    model = tiny_prior()
    labels = torch.tensor([0, 1, 2] * 20)
    draw = lambda seed, **kw: sample_codes(model, labels, generator=torch.Generator().manual_seed(seed), temperature=2.0, **kw)  # noqa: E731
    a, b, c = draw(0), draw(0), draw(1)
    assert a.dtype == torch.int64 and a.shape == (60, 3, 4)
    assert int(a.min()) >= 0 and int(a.max()) < K  # class and null tokens (>= K) are never sampled
    assert torch.equal(a, b) and not torch.equal(a, c)
    g = draw(0, guidance=3.0, top_k=5, top_p=0.9)
    assert int(g.min()) >= 0 and int(g.max()) < K


def test_guidance_scale_one_equals_plain_conditional_sampling():
    model = tiny_prior()
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    plain = sample_codes(model, labels, generator=torch.Generator().manual_seed(5))
    batched = sample_codes(model, labels, generator=torch.Generator().manual_seed(5), force_guidance_batch=True)
    assert torch.equal(plain, batched)
    strong = sample_codes(model, labels, generator=torch.Generator().manual_seed(5), guidance=4.0)
    assert not torch.equal(plain, strong)


def test_filter_logits_top_k_and_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05]]))
    assert torch.isfinite(filter_logits(logits, 2, None)).sum() == 2
    kept = torch.isfinite(filter_logits(logits, None, 0.8))  # 0.5 + 0.2 < 0.8 <= 0.85
    assert kept.tolist() == [[True, True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, None, 0.01)).sum() == 1


@pytest.mark.parametrize("prefix", [True, False])
def test_completion_keeps_every_known_code(prefix):
    model = tiny_prior()
    known = torch.randint(0, K, (1, 3, 4), generator=torch.Generator().manual_seed(2))
    mask = torch.zeros(3, 4, dtype=torch.bool)
    if prefix:
        mask[0] = True
    else:
        mask[:, :2] = True  # left half: known codes follow unknown ones in raster order
    assert is_prefix(mask) == prefix
    out = complete_codes(model, known, mask, label=1, n=5, options=SamplingOptions(guidance=2.0), candidates=4)
    assert out.shape == (5, 3, 4)
    assert torch.equal(out[:, mask], known[:, mask].expand(5, -1))
    assert (out[:, ~mask] >= 0).all() and (out[:, ~mask] < K).all()


def test_score_codes_is_the_sum_of_log_probs():
    model = tiny_prior()
    codes = torch.randint(0, K, (2, 3, 4))
    labels = torch.tensor([0, 1])
    mask = torch.zeros(2, 3, 4, dtype=torch.bool)
    mask[:, 1] = True
    logp = torch.log_softmax(model.logits(codes, labels), -1).gather(-1, codes.flatten(1)[..., None])[..., 0]
    expected = (logp * mask.flatten(1)).sum(-1)
    assert torch.allclose(score_codes(model, codes, labels, mask), expected, atol=1e-5)


def test_resolve_class():
    names = ["T-shirt/top", "Trouser", "Sneaker", "Ankle boot"]
    assert resolve_class("sneaker", names) == 2
    assert resolve_class("SNEAKER", names) == 2
    assert resolve_class("t-shirt", names) == 0
    assert resolve_class("ankle boot", names) == 3
    assert resolve_class("1", names) == 1
    with pytest.raises(VQError, match="valid classes: T-shirt/top, Trouser, Sneaker, Ankle boot"):
        resolve_class("dog", names)


def sketch_prior(seed=0, **kw) -> AutoregressivePrior:
    return tiny_prior(seed, height=4, width=4, condition="sketch", sketch_size=16, **kw)


@pytest.mark.parametrize("kind", ["class", "gqa1", "gqa2", "sketch", "sketch-gqa1", "sketch-gqa2"])
def test_incremental_decoder_logits_equal_the_full_forward_pass(kind):
    from vq.stage2_prior.sampling import IncrementalDecoder

    kv = {"kv_heads": int(kind[-1])} if "gqa" in kind else {}  # 2 of 4: the head pairing matters
    model = sketch_prior(depth=3, heads=4, **kv) if "sketch" in kind else tiny_prior(depth=3, heads=4, **kv)
    n = model.config.seq_len
    labels = torch.tensor([0, 2, -1])
    codes = torch.randint(0, K, (3, model.config.height, model.config.width))
    sketch = torch.rand(3, 1, 16, 16) > 0.8 if "sketch" in kind else None
    keep = torch.tensor([True, False, True])  # the middle row reads the null sketch
    full = model.logits(codes, labels, sketch, keep if sketch is not None else None)
    tokens = torch.cat([model.class_tokens(labels, 3, "cpu"), codes.flatten(1)], 1)
    dec = IncrementalDecoder(model, 3, model.context(sketch, 3, keep if sketch is not None else None))
    steps = torch.stack([dec.step(tokens[:, t]) for t in range(n)], 1)
    assert torch.allclose(steps, full, atol=1e-5, rtol=1e-4)
    if "gqa" in kind:
        assert dec.keys[0].shape[1] == kv["kv_heads"]  # the cache holds the shared key/value heads only


def test_a_sketch_changes_the_samples_and_guidance_uses_the_null_sketch():
    model = sketch_prior()
    labels = torch.tensor([0, 1, 2, -1])
    sketch = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(3)) > 0.7
    draw = lambda **kw: sample_codes(model, labels, temperature=0, **kw)  # noqa: E731
    assert not torch.equal(draw(sketch=sketch), draw())
    # Guided, the first step mixes the rows' (class, sketch) logits with (null class, null sketch).
    first = {}
    original = model.context
    model.context = lambda s, b, keep=None: first.setdefault(len(first), (s, original(s, b, keep)))[1]  # noqa: E731
    g = sample_codes(model, labels, temperature=0, guidance=3.0, sketch=sketch)
    model.context = original
    assert first[0][0] is not None and first[1][0] is None  # the null rows read the null sketch
    tokens = torch.cat([model.class_tokens(labels, 4, "cpu"), model.class_tokens(None, 4, "cpu")])
    logits = model.net(tokens, context=torch.cat([original(sketch, 4), original(None, 4)]))[:, 0]
    mixed = logits[:4] + 2.0 * (logits[:4] - logits[4:])
    assert torch.equal(g[:, 0, 0], mixed.argmax(-1))
    # at scale 1 the guided batch (null class + null sketch rows beside) changes nothing
    assert torch.equal(draw(sketch=sketch), draw(sketch=sketch, force_guidance_batch=True))
    codes = draw(sketch=sketch)  # greedy and teacher-forced agree with the sketch as context
    assert torch.equal(model.logits(codes, labels, sketch).argmax(-1), codes.flatten(1))


def test_a_class_guidance_of_its_own_mixes_the_sketch_alone_rows_in():
    """With a sketch and a class, `class_scale` guides the class on top of the sketch: three rows per
    image (class + sketch, sketch alone, null), null + s (sketch - null) + c (cond - sketch), in both
    samplers and the fast path; at c = s it is the two-row guidance exactly."""
    from vq.stage2_prior.guidance import guide
    from vq.stage2_prior.masked import MaskedPrior, MaskedPriorConfig
    from vq.stage2_prior.masked_sampling import plain_stepper, sample_masked
    from vq.stage2_prior.sampling import incremental_stepper

    model = sketch_prior()
    labels = torch.tensor([0, 1, 2, -1])
    sketch = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(3)) > 0.7
    g = sample_codes(model, labels, temperature=0, guidance=2.0, class_guidance=5.0, sketch=sketch)
    tokens = torch.cat([model.class_tokens(labels, 4, "cpu")] + [model.class_tokens(None, 4, "cpu")] * 2)
    ctx = torch.cat([model.context(sketch, 4), model.context(sketch, 4), model.context(None, 4)])
    cond, alone, null = model.net(tokens, context=ctx)[:, 0].split(4)
    assert torch.equal(g[:, 0, 0], (null + 2.0 * (alone - null) + 5.0 * (cond - alone)).argmax(-1))
    assert not torch.equal(g, sample_codes(model, labels, temperature=0, guidance=2.0, sketch=sketch))
    options = SamplingOptions(temperature=0, guidance=2.0, class_guidance=5.0)
    assert torch.equal(model.sample(labels, options=options, sketch=sketch), g)  # fast path
    # At guidance 1 the class is still guided on top of the sketch: sketch + c (cond - sketch).
    g1 = sample_codes(model, labels, temperature=0, guidance=1.0, class_guidance=5.0, sketch=sketch)
    assert torch.equal(g1[:, 0, 0], (alone + 5.0 * (cond - alone)).argmax(-1))
    assert not torch.equal(g1, sample_codes(model, labels, temperature=0, sketch=sketch))
    logits = torch.randn(12, 7)
    assert torch.allclose(guide(logits, 4, 3.0, 3.0), guide(torch.cat([logits[:4], logits[8:]]), 4, 3.0))
    masked = MaskedPrior(MaskedPriorConfig(codebook_size=16, height=4, width=4, num_classes=3, dim=32, depth=1, heads=2,
                                           condition="sketch", sketch_size=16)).eval()
    for prior, sampler, stepper in ((model, sample_codes, incremental_stepper), (masked, sample_masked, plain_stepper)):
        rows = []

        def counting(m, n, context, stepper=stepper):
            rows.append(n)
            return stepper(m, n, context)

        def draw(y, c):
            return sampler(prior, y, guidance=2.0, class_guidance=c, sketch=sketch, stepper=counting,
                           generator=torch.Generator().manual_seed(1))

        assert torch.equal(draw(labels, 2.0), draw(labels, None)) and rows == [8, 8]  # c = s: two rows
        draw(labels, 5.0)
        draw(torch.full((4,), -1), 5.0)  # no class to weigh: two rows
        assert rows[2:] == [12, 8]


def test_a_class_prior_without_class_dropout_draws_no_random_numbers():
    model = tiny_prior(class_dropout=0.0).train()
    codes, labels = torch.randint(0, K, (4, 3, 4)), torch.tensor([0, 1, 2, 0])
    state = torch.get_rng_state()
    model(codes, labels)  # the training step: no class drawn away, so no draw beyond the network's own
    after_step = torch.get_rng_state()
    torch.set_rng_state(state)
    model.logits(codes, labels)
    assert torch.equal(after_step, torch.get_rng_state())


def saved_prior(config: dict, tmp_path) -> PriorRecord:
    """The record of a prior run saved with `config` as its model config (keys of older versions
    left out), as a resumed run reads it."""
    return PriorRecord(tmp_path, AutoregressivePrior, build(PriorConfig, config), train=to_dict(TrainConfig()))


def test_a_prior_saved_before_the_new_config_keys_resumes(tmp_path):
    old = {k: v for k, v in to_dict(PriorConfig()).items() if k not in ("kv_heads", "condition", "sketch_size", "sketch_dropout")}
    saved = saved_prior(old, tmp_path)
    train, layers = job_configs(FitJob("autoregressive", tmp_path, resume=True), AutoregressivePrior, saved)
    assert layers == (to_dict(saved.config),) and layers[0] == {**to_dict(PriorConfig()), **old}
    with pytest.raises(VQError, match="condition differs"):
        job_configs(FitJob("autoregressive", tmp_path, resume=True, model_overrides={"condition": "sketch"}),
                    AutoregressivePrior, saved)


def test_new_runs_train_on_free_hand_styles_with_the_drawing_flag_and_old_runs_keep_theirs(tmp_path):
    _, layers = job_configs(FitJob("autoregressive", tmp_path, model_overrides={"condition": "sketch"}), AutoregressivePrior, None)
    new = build(PriorConfig, *layers)
    assert (new.sketch_styles, new.drawing_flag, new.sketch_channels, new.recognises) == ("free", True, 2, True)
    _, layers = job_configs(FitJob("autoregressive", tmp_path, model_overrides={"condition": "sketch", "sketch_styles": "edges"}),
                            AutoregressivePrior, None)
    assert build(PriorConfig, *layers).sketch_channels == 1  # edge maps alone: nothing to flag
    # A sketch prior saved before either key existed trained on edge maps, one channel: so it resumes.
    old = {k: v for k, v in to_dict(new).items() if k not in ("sketch_styles", "drawing_flag", "recogniser")}
    _, layers = job_configs(FitJob("autoregressive", tmp_path, resume=True), AutoregressivePrior, saved_prior(old, tmp_path))
    resumed = build(PriorConfig, *layers)
    assert (resumed.sketch_styles, resumed.drawing_flag, resumed.sketch_channels) == ("edges", False, 1)
    assert not resumed.recognises and not hasattr(AutoregressivePrior(resumed), "recogniser")  # its weights load as saved
    # A free-styles run from before the recogniser: flagged, no recogniser.
    flagged = {**old, "sketch_styles": "free", "drawing_flag": True}
    _, layers = job_configs(FitJob("autoregressive", tmp_path / "f", resume=True), AutoregressivePrior, saved_prior(flagged, tmp_path / "f"))
    assert build(PriorConfig, *layers).recognises is False


def test_the_recogniser_trains_beside_the_prior_on_the_sketches_after_the_encoders():
    torch.manual_seed(0)
    model = sketch_prior(sketch_styles="free", drawing_flag=True, recogniser=True).train()
    codes, labels = torch.randint(0, K, (6, 4, 4)), torch.tensor([0, 1, 2, 0, 1, 2])
    sketch = torch.rand(6, 3, 16, 16) > 0.8  # lines, flag, the recogniser's sketch
    out = model(codes, labels, sketch)
    assert set(out.metrics) == {"nll", "recognise"} and torch.allclose(out.loss, out.metrics["nll"] + out.metrics["recognise"])
    out.loss.backward()
    assert model.recogniser.head.weight.grad.abs().sum() > 0
    model.zero_grad()
    plain = model(codes, labels, sketch[:, :2])  # no third channel (evaluation's sketches): no recognition
    assert set(plain.metrics) == {"nll"}
    plain.loss.backward()
    assert model.recogniser.head.weight.grad is None
    # Only the third channel reaches it (the encoder reads the first two), whatever the class dropout did to the labels.
    model.eval()
    probs = model.recognise(sketch[:, 2:])
    assert probs.shape == (6, 3) and torch.allclose(probs.sum(1), torch.ones(6))
    other = sketch.clone()
    other[:, 2] = ~other[:, 2]
    assert torch.equal(model.logits(codes, labels, sketch), model.logits(codes, labels, other))


def test_sketch_prior_training_drops_class_sketch_or_both():
    model = sketch_prior(class_dropout=0.2, sketch_dropout=0.3).train()
    seen = {}
    original = model.logits

    def spy(codes, labels, sketch=None, keep_sketch=None):
        seen.update(labels=labels, keep=keep_sketch)
        return original(codes, labels, sketch, keep_sketch)

    model.logits = spy
    torch.manual_seed(0)
    n = 20_000
    model(torch.randint(0, K, (n, 4, 4)), torch.zeros(n, dtype=torch.long), torch.zeros(n, 1, 16, 16, dtype=torch.bool))
    null_class, no_sketch = seen["labels"] == model.null_class, ~seen["keep"]
    share = lambda m: float(m.float().mean())  # noqa: E731
    assert abs(share(null_class & no_sketch) - 0.2) < 0.015  # both
    assert abs(share(~null_class & no_sketch) - 0.3) < 0.015  # the sketch alone
    assert abs(share(null_class & ~no_sketch) - 0.2) < 0.015  # the class alone


def test_rows_without_a_condition_skip_the_null_twins():
    """Guidance mixes conditional rows with their null twins; rows without class or sketch would mix
    null rows with themselves, so neither sampler runs the twins for them, and draws the same."""
    from vq.stage2_prior.masked import MaskedPrior, MaskedPriorConfig
    from vq.stage2_prior.masked_sampling import plain_stepper, sample_masked
    from vq.stage2_prior.sampling import incremental_stepper

    for model, sampler, stepper in ((tiny_prior(), sample_codes, incremental_stepper),
                                    (MaskedPrior(MaskedPriorConfig(codebook_size=16, height=3, width=3, num_classes=4, dim=32,
                                                                   depth=1, heads=2)).eval(), sample_masked, plain_stepper)):
        rows = []

        def counting(model, n, context, stepper=stepper):
            rows.append(n)
            return stepper(model, n, context)

        def draw(labels, cfg):
            return sampler(model, labels, guidance=cfg, generator=torch.Generator().manual_seed(3), stepper=counting)

        none = torch.full((4,), -1)
        assert torch.equal(draw(none, 3.0), draw(none, 1.0)) and rows == [4, 4]
        draw(torch.tensor([-1, 2, -1, 0]), 3.0)
        assert rows[-1] == 8  # a batch with a class in it is guided: its null twins run
