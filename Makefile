# The README's two commands: `make demo` (train the default pipeline on Fashion-MNIST) and
# `make test`. Both set up what they need: a .venv with torch pinned, the project, the data.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUNS ?= runs
FASHION_MNIST := /usr/share/datasets/fashion-mnist

.PHONY: demo test data browser bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e '.[test,serve]'
	touch $@

# Debian's package when we are root and apt is there; otherwise vq fetches the Hugging Face copy.
data:
	@if [ -d $(FASHION_MNIST) ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
		|| echo "apt could not install dataset-fashion-mnist; vq will fetch Fashion-MNIST through datasets"; \
	else echo "no $(FASHION_MNIST): vq will fetch Fashion-MNIST through datasets on first use"; fi

# The whole chain with the demo presets: tokenizer -> codes -> prior -> a grid of samples per class.
# Re-running continues (or just re-evaluates) the runs already there instead of refusing them.
resume_if = $$([ -e $(1)/train_state.safetensors ] && echo --resume)
demo: $(STAMP) data
	$(BIN)/vq fit-tokenizer --preset demo --out $(RUNS)/tokenizer $(call resume_if,$(RUNS)/tokenizer)
	$(BIN)/vq fit-prior --preset demo --tokenizer $(RUNS)/tokenizer --out $(RUNS)/prior $(call resume_if,$(RUNS)/prior)
	$(BIN)/vq sample -n 10 --tokenizer $(RUNS)/tokenizer --prior $(RUNS)/prior
	@echo "open the web studio over these runs: $(BIN)/vq serve --tokenizer $(RUNS)/tokenizer --prior $(RUNS)/prior"

# Speed tables: sampling, and training throughput (add --folder DIR to bench/train.py for the
# 100,000-PNG start-up and memory row; bench/photo_folder.py makes such a folder).
bench: $(STAMP)
	$(BIN)/python bench/sampling.py
	$(BIN)/python bench/train.py --skip-folder

# The browser test drives Debian's chromium (Playwright cannot download a browser here).
browser:
	@if command -v chromium >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
		|| echo "apt could not install chromium; the browser test will be skipped"; \
	else echo "no chromium: the browser test will be skipped (apt-get install chromium)"; fi

test: $(STAMP) data browser
	HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 WANDB_MODE=offline $(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) *.egg-info
