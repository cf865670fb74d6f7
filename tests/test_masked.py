"""The masked prior (`stage2_prior.masked`, MaskGIT): its training objective and schedule, parallel
decoding that keeps known codes, guidance against the null rows, the fast path against the plain
loop, the sketch condition, and training through the shared trainer."""

import math

import pytest
import torch
import torch.nn.functional as F

from vq.pipeline.checkpoint import load_model, save_checkpoint
from vq.pipeline.codes.maps import batch_preparer
from vq.pipeline.data.splits import Split
from vq.pipeline.records import PriorRecord
from vq.pipeline.train.config import TrainConfig
from vq.pipeline.train.trainer import fit
from vq.stage2_prior import PRIORS, MaskedPrior, MaskedPriorConfig, PriorOutput, SamplingOptions, sample_masked, sample_masked_fast
from vq.stage2_prior.masked_sampling import StaticStep
from vq.stage2_prior.masking import mask_schedule, masked_count
from test_stage2 import overfit

K = 16


@pytest.fixture(autouse=True)
def one_thread():
    """These models are tiny: on a shared CPU, a second thread's spin-waits cost 10-50x the work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_prior(seed=0, **kw) -> MaskedPrior:
    torch.manual_seed(seed)
    cfg = dict(codebook_size=K, height=3, width=4, num_classes=3, dim=32, depth=2, heads=2, dropout=0.0)
    return MaskedPrior(MaskedPriorConfig(**{**cfg, **kw})).eval()


def sketch_prior(seed=0, **kw) -> MaskedPrior:
    return tiny_prior(seed, height=4, width=4, condition="sketch", sketch_size=16, **kw)


def sketches(b: int, seed: int = 3) -> torch.Tensor:
    return torch.rand(b, 1, 16, 16, generator=torch.Generator().manual_seed(seed)) > 0.7


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def spy_inputs(model) -> list:
    """Record the tokens of every forward the prior runs."""
    seen = []
    original = model.code_logits

    def code_logits(tokens, context):
        seen.append(tokens.clone())
        return original(tokens, context)

    model.code_logits = code_logits
    return seen


def test_training_masks_a_cosine_share_of_each_row_and_scores_only_those():
    model = tiny_prior(height=4, width=4)
    n, rows = 16, 4096
    codes = torch.randint(0, K, (rows, 4, 4), generator=seeded(1))
    seen = spy_inputs(model)
    torch.manual_seed(0)
    with torch.no_grad():
        out = model(codes, torch.randint(0, 3, (rows,), generator=seeded(2)))
    assert isinstance(out, PriorOutput) and out.logits.shape == (rows, n, K)
    masked = seen[0][:, 1:] == model.mask_token
    # ceil(cos(pi/2 r) n) of n codes, r ~ U(0, 1): its mean share is (1/n) sum_j P(cos(pi/2 r) > j/n).
    expected = sum(2 / math.pi * math.acos(j / n) for j in range(n)) / n
    share = float(masked.float().mean())
    assert abs(share - expected) < 0.01 and abs(share - 2 / math.pi) < 0.05
    assert int(masked.sum(-1).min()) >= 1
    assert torch.equal(seen[0][:, 1:][~masked], codes.flatten(1)[~masked])  # the rest are the codes
    target = codes.flatten(1)
    only_masked = F.cross_entropy(out.logits[masked], target[masked])
    everywhere = F.cross_entropy(out.logits.transpose(1, 2), target)
    torch.testing.assert_close(out.loss, only_masked)
    assert abs(float(out.loss - everywhere)) > 1e-3
    assert set(out.metrics) == {"masked_ce"}


def test_mask_schedule_and_counts():
    assert float(mask_schedule(0.0)) == 1.0 and float(mask_schedule(1.0)) == 0.0
    assert abs(float(mask_schedule(0.5)) - math.cos(math.pi / 4)) < 1e-6
    unknown = torch.tensor([12, 12, 3, 0])
    assert masked_count(unknown, unknown, 1, 8).tolist() == [11, 11, 2, 0]  # floor(12 cos(pi/16)) = 11
    assert masked_count(unknown, torch.tensor([12, 5, 3, 0]), 2, 8).tolist() == [11, 4, 2, 0]  # one decided at least
    assert masked_count(unknown, torch.tensor([4, 4, 1, 0]), 8, 8).tolist() == [0, 0, 0, 0]


def test_decoding_follows_the_schedule_and_decided_codes_stay():
    model = tiny_prior(height=4, width=4)
    b, n, steps = 6, 16, 5
    known = torch.randint(0, K, (b, 4, 4), generator=seeded(1))
    known_mask = torch.rand(b, 4, 4, generator=seeded(2)) < 0.3
    known_mask[0] = False
    inputs = []
    stepper = lambda m, rows, ctx: lambda tokens: inputs.append(tokens.clone()) or m.code_logits(tokens, ctx)  # noqa: E731
    out = sample_masked(model, torch.tensor([0, 1, 2] * 2), known=known, known_mask=known_mask, steps=steps,
                        generator=seeded(3), stepper=stepper)
    assert len(inputs) == steps
    unknown = n - known_mask.flatten(1).sum(-1)
    left = unknown.clone()
    for t, tokens in enumerate(inputs, start=1):
        codes = tokens[:, 1:]
        assert torch.equal((codes == model.mask_token).sum(-1), left)
        decided = codes != model.mask_token
        assert torch.equal(codes[decided], out.flatten(1)[decided])  # kept codes are never changed again
        left = torch.clamp(torch.minimum(torch.floor(unknown * math.cos(math.pi / 2 * t / steps)).long(), left - 1), min=0)
    assert int(left.max()) == 0


def test_prior_overfits_one_code_map_and_decodes_it_from_all_masked():
    target = torch.randint(0, K, (1, 3, 4), generator=seeded(1))
    model, loss = overfit(tiny_prior(class_dropout=0.0), target, label=2)
    assert loss < 0.05
    greedy = sample_masked(model, torch.tensor([2, 2]), temperature=0, generator=seeded(0))
    assert torch.equal(greedy, target.expand(2, -1, -1))
    assert float(model.masked_ce(target, torch.tensor([2]), generator=seeded(0))) < 0.05


def test_samples_are_codes_and_seeded():
    model = tiny_prior()
    labels = torch.tensor([0, 1, 2, -1] * 8)
    draw = lambda seed, **kw: sample_masked_fast(model, labels, generator=seeded(seed), temperature=2.0, **kw)  # noqa: E731
    a, b, c = draw(0), draw(0), draw(1)
    assert a.dtype == torch.int64 and a.shape == (32, 3, 4)
    assert int(a.min()) >= 0 and int(a.max()) < K  # class, null and mask tokens (>= K) are never sampled
    assert torch.equal(a, b) and not torch.equal(a, c)
    for kw in ({"guidance": 3.0, "top_k": 5, "top_p": 0.9}, {"steps": 1}, {"steps": 30, "choice_temperature": 0.0}):
        g = draw(0, **kw)
        assert int(g.min()) >= 0 and int(g.max()) < K


@pytest.mark.parametrize("fast", [False, True])
def test_known_codes_never_change(fast):
    model = tiny_prior(height=4, width=4)
    b = 8
    known = torch.randint(0, K, (b, 4, 4), generator=seeded(1))
    known_mask = torch.rand(b, 4, 4, generator=seeded(2)) < 0.5  # random cells
    known_mask[0] = True  # everything known
    known_mask[1] = False  # nothing known
    known_mask[2] = True
    known_mask[2, 1:3, 1:3] = False  # a centre hole
    known_mask[3] = False
    known_mask[3, :, :2] = True  # the left half
    known_mask[4] = False
    known_mask[4, 3, 3] = True  # only the last code: what an autoregressive prior cannot look ahead to
    sample = lambda labels, **kw: (sample_masked_fast if fast else sample_masked)(model, labels, **kw)  # noqa: E731
    for kw in ({"temperature": 1.5, "guidance": 2.0, "steps": 5}, {"temperature": 0.0}, {"top_k": 3, "steps": 12}):
        out = sample(torch.tensor([0, 1, 2, -1] * 2), known=known, known_mask=known_mask, generator=seeded(4), **kw)
        assert torch.equal(out[known_mask], known[known_mask])
        assert int(out.min()) >= 0 and int(out.max()) < K


def test_guidance_mixes_against_the_null_rows():
    model = tiny_prior()
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    draw = lambda **kw: sample_masked(model, labels, generator=seeded(5), **kw)  # noqa: E731
    assert torch.equal(draw(), draw(force_guidance_batch=True))  # at scale 1 the null rows change nothing
    assert torch.equal(draw(), draw(guidance=1.0))
    # One greedy step decides every code from the all-masked map: the mix of the two rows' logits.
    seen = spy_inputs(model)
    guided = draw(guidance=4.0, temperature=0, steps=1)
    tokens = seen[0]
    assert tokens.shape[0] == 12
    assert torch.equal(tokens[:6, 0], model.class_tokens(labels, 6, "cpu")[:, 0])
    assert bool((tokens[6:, 0] == model.config.codebook_size + model.null_class).all())  # the null class
    assert bool((tokens[:, 1:] == model.mask_token).all())
    with torch.no_grad():
        logits = model.net(tokens)[:, 1:]
    mixed = logits[:6] + 3.0 * (logits[:6] - logits[6:])
    assert torch.equal(guided.flatten(1), mixed.argmax(-1))
    assert not torch.equal(guided, draw(temperature=0, steps=1))


@pytest.mark.parametrize("sketched", [False, True])
def test_fast_path_equals_the_plain_loop(sketched):
    model = sketch_prior() if sketched else tiny_prior()
    labels = torch.tensor([0, 1, 2, -1] * 3)
    for i, kw in enumerate([{}, {"guidance": 3.0, "temperature": 1.3, "top_k": 5}, {"guidance": 2.0, "top_p": 0.9, "steps": 4},
                            {"temperature": 0.0, "choice_temperature": 0.0}]):
        sketch = sketches(12, seed=i) if sketched else None  # a new context each batch: the static buffer follows
        plain = sample_masked(model, labels, sketch=sketch, generator=seeded(7), **kw)
        fast = sample_masked_fast(model, labels, sketch=sketch, generator=seeded(7), compile="eager", **kw)
        assert fast.dtype == torch.int64 and torch.equal(fast, plain)
    # the static step's logits are the forward's
    tokens = torch.cat([model.class_tokens(labels, 12, "cpu"), torch.randint(0, K + 1, (12, model.config.seq_len))], 1)
    tokens[:, 1:][tokens[:, 1:] == K] = model.mask_token
    context = model.context(sketches(12), 12)
    step = StaticStep(model, 12, "eager")
    step.bind(context)
    with torch.no_grad():
        torch.testing.assert_close(step(tokens), model.code_logits(tokens, context), atol=0, rtol=0)


def test_sketch_prior_trains_and_samples_with_and_without_sketches():
    model = sketch_prior(class_dropout=0.2, sketch_dropout=0.2).train()
    labels = torch.tensor([0, 1, 2, -1])
    codes = torch.randint(0, K, (4, 4, 4), generator=seeded(1))
    out = model(codes, labels, sketches(4))
    out.loss.backward()
    assert torch.isfinite(out.loss) and model.null_sketch.grad is not None
    model.eval()
    greedy = lambda **kw: model.sample(labels, options=SamplingOptions(guidance=1.0, temperature=0), generator=seeded(0), **kw)  # noqa: E731
    with_sketch, without = greedy(sketch=sketches(4)), greedy()
    assert not torch.equal(with_sketch, without)
    guided = model.sample(labels, options=SamplingOptions(guidance=3.0), sketch=sketches(4), generator=seeded(0))
    assert int(guided.min()) >= 0 and int(guided.max()) < K
    assert model.masked_ce(codes, labels, sketches(4), generator=seeded(0)).shape == (4,)


def test_sketch_prior_training_drops_class_sketch_or_both():
    model = sketch_prior(class_dropout=0.2, sketch_dropout=0.3).train()
    torch.manual_seed(0)
    labels, keep = model.drop_conditions(torch.zeros(20_000, dtype=torch.long))
    null_class, no_sketch = labels == model.null_class, ~keep
    share = lambda m: float(m.float().mean())  # noqa: E731
    assert abs(share(null_class & no_sketch) - 0.2) < 0.015  # both
    assert abs(share(~null_class & no_sketch) - 0.3) < 0.015  # the sketch alone
    assert abs(share(null_class & ~no_sketch) - 0.2) < 0.015  # the class alone
    class_only = tiny_prior(class_dropout=0.1).train()
    labels, keep = class_only.drop_conditions(torch.zeros(20_000, dtype=torch.long))
    assert keep is None and abs(share(labels == class_only.null_class) - 0.1) < 0.01


def test_capabilities_registry_and_checkpoint_round_trip(tmp_path):
    model = tiny_prior()
    assert PRIORS["masked"] is MaskedPrior and MaskedPrior.config_class is MaskedPriorConfig
    assert (model.exact_likelihood, model.any_mask, model.conditions) == (False, True, frozenset({"class"}))
    with pytest.raises(NotImplementedError, match="no exact likelihood"):
        model.score(torch.zeros(1, 3, 4, dtype=torch.long), None)
    with pytest.raises(ValueError, match="divisible"):
        MaskedPrior(MaskedPriorConfig(dim=30, heads=4))
    save_checkpoint(tmp_path, model, PriorRecord(tmp_path, MaskedPrior, model.config))
    loaded = load_model(PriorRecord.read(tmp_path))
    labels, options = torch.tensor([0, 1, 2]), SamplingOptions(settings={"steps": 4})
    assert type(loaded) is MaskedPrior
    assert torch.equal(loaded.sample(labels, options=options, generator=seeded(0)), model.sample(labels, options=options, generator=seeded(0)))


def test_the_trainer_trains_it(tmp_path):
    torch.manual_seed(0)
    maps = torch.randint(0, K, (3, 3, 4), generator=seeded(1))
    labels = torch.arange(48) % 3
    split = Split(maps[labels].to(torch.int16), labels)  # as exported codes come in memory
    model = tiny_prior()
    before = float(model.masked_ce(maps, torch.arange(3), generator=seeded(0)).mean())
    cfg = TrainConfig(steps=60, batch_size=16, lr=3e-3, warmup_steps=5, eval_every=1000, save_every="1000",
                      workers=0, device="cpu")
    result = fit(model, split, prepare=batch_preparer(model.config), evaluate=lambda m: {}, save=lambda m, metrics: None,
                 run_dir=tmp_path, cfg=cfg)
    assert result.step == 60
    after = float(model.eval().masked_ce(maps, torch.arange(3), generator=seeded(0)).mean())
    assert after < 0.5 * before
