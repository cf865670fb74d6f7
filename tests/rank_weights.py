"""Run one `vq` command under torchrun and have every rank save the weights it ended with, so a
test can check that the ranks stayed identical: `torchrun ... tests/rank_weights.py DUMP_DIR vq-args...`."""

import os
import sys
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", category=FutureWarning)

import vq.pipeline.train.fit_prior  # noqa: E402
import vq.pipeline.train.fit_tokenizer  # noqa: E402
import vq.pipeline.train.trainer  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

trained = []
real_fit = vq.pipeline.train.trainer.fit


def fit(model, *args, **kwargs):
    trained.append(model)
    return real_fit(model, *args, **kwargs)


vq.pipeline.train.fit_tokenizer.fit = vq.pipeline.train.fit_prior.fit = fit

from vq.cli.main import app  # noqa: E402

dump = Path(sys.argv[1])
try:
    app(sys.argv[2:], standalone_mode=False)
finally:
    if trained:
        state = {k: v.detach().cpu().contiguous() for k, v in trained[-1].state_dict().items()}
        save_file(state, dump / f"rank{os.environ['RANK']}.safetensors")
