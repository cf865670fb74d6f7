"""The codes a fixed seed draws on a tiny model, written down before the generation code was
rebuilt around `Pipeline` (issue 16): a refactor that changes what a seed draws fails here.
torch is pinned (2.14.1), so the CPU kernels and the generator's stream are fixed."""

import torch

from vq.pipeline.generate.options import SamplingOptions
from vq.pipeline.generate.draw import complete_codes
from vq.stage2_prior import AutoregressivePrior, PriorConfig, sample_codes_fast


def tiny_prior() -> AutoregressivePrior:
    torch.manual_seed(0)
    cfg = PriorConfig(codebook_size=16, height=3, width=4, num_classes=3, dim=32, depth=2, heads=2, dropout=0.0)
    return AutoregressivePrior(cfg).eval()


def test_guided_top_k_draws_are_pinned():
    drawn = sample_codes_fast(tiny_prior(), torch.tensor([0, 1, 2, -1]), guidance=2.0, temperature=1.0, top_k=8,
                              generator=torch.Generator().manual_seed(7))
    assert drawn.tolist() == [
        [[10, 9, 4, 12], [10, 13, 6, 6], [12, 9, 0, 8]],
        [[7, 4, 12, 12], [7, 7, 13, 4], [0, 3, 13, 13]],
        [[5, 3, 11, 11], [4, 12, 11, 7], [14, 7, 4, 3]],
        [[2, 15, 1, 15], [7, 6, 13, 0], [13, 13, 3, 14]],
    ]


def test_reranked_completion_is_pinned():
    known = torch.randint(0, 16, (1, 3, 4), generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(3, 4, dtype=torch.bool)
    mask[2] = True  # known codes after unknown ones: 4 candidates per completion, ranked by the prior
    done = complete_codes(tiny_prior(), known, mask, 1, 2, SamplingOptions(2.0, 1.0, None, None, 3), 4)
    assert done.tolist() == [
        [[15, 7, 5, 6], [7, 6, 5, 11], [15, 0, 0, 1]],
        [[4, 6, 4, 15], [7, 13, 4, 3], [15, 0, 0, 1]],
    ]
