#!/usr/bin/env bash
# Fill the folder that bench/gpu_full.sh carries to a GPU machine (default .whl, which git ignores):
#
# - wheels of what the machine's image lacks or holds in other versions: x-transformers (pinned in
#   pyproject.toml) and its pure-Python needs (einx, loguru, frozendict, torch-einops-utils,
#   einops), and the CLI's typer with its needs (pydantic and pydantic-core, rich, ...), each at the
#   version installed in PYTHON's environment, the one the tests ran with. torch, numpy, sympy,
#   packaging, safetensors, scipy, pillow and torchvision are the machine's own. datasets, wandb
#   and huggingface_hub are not carried: vq imports them only for Hugging Face data, --wandb, and
#   `vq save` / the Hub (tests/test_legacy.py checks that sampling needs none of them);
# - Fashion-MNIST's IDX files (fashion-mnist/), from where vq finds them here;
# - the cached evaluation classifier of Fashion-MNIST (classifier/), when runs/classifier holds
#   it, so `vq eval` there does not spend the lease training it.
#
#     bash bench/gpu_wheels.sh                              # for the GPU machine's Python 3.12
#     PYVER=3.11 DEST=/tmp/whl311 bash bench/gpu_wheels.sh  # for a rehearsal with this venv
#
# The device call then names .whl in `carry` (64 MiB for the whole tree; this is about 35 MiB).
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${DEST:-.whl}
PYTHON=${PYTHON:-.venv/bin/python}
PYVER=${PYVER:-3.12}
PACKAGES=(x-transformers einx loguru frozendict torch-einops-utils einops
          typer pydantic pydantic-core annotated-types typing-inspection typing-extensions annotated-doc shellingham
          rich markdown-it-py mdurl pygments)

mkdir -p "$DEST"
rm -f "$DEST"/*.whl  # one version of each: two would stop the install
mapfile -t SPECS < <("$PYTHON" - "${PACKAGES[@]}" <<'EOF'
import importlib.metadata as md, sys
for name in sys.argv[1:]:
    print(f"{name}=={md.version(name)}")
EOF
)
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$DEST" "${SPECS[@]}"
printf '%s\n' "${SPECS[@]}" >"$DEST/MANIFEST.txt"

SRC=$("$PYTHON" -c "from vq.pipeline.data.idx import fashion_mnist_dir; print(fashion_mnist_dir() or '')")
if [[ -z $SRC ]]; then
    echo "Fashion-MNIST's IDX files were not found (set VQ_FASHION_MNIST_DIR)" >&2
    exit 1
fi
mkdir -p "$DEST/fashion-mnist"
cp "$SRC"/train-images-idx3-ubyte* "$SRC"/train-labels-idx1-ubyte* "$SRC"/t10k-images-idx3-ubyte* \
   "$SRC"/t10k-labels-idx1-ubyte* "$DEST/fashion-mnist/"

# The classifier cache is keyed by the dataset's description, the same there as here.
rm -rf "$DEST/classifier"
for run in runs/classifier/*/; do
    [[ -f $run/config.json ]] || continue
    grep -q '"spec": "fashion-mnist"' "$run/config.json" && grep -q '"complete": true' "$run/config.json" || continue
    mkdir -p "$DEST/classifier/$(basename "$run")"
    cp "$run/config.json" "$run/model.safetensors" "$DEST/classifier/$(basename "$run")/"
done

ls -la "$DEST" "$DEST/fashion-mnist"
SIZE=$(du -sm "$DEST" | cut -f1)
echo "$DEST: $SIZE MiB"
if (( SIZE > 56 )); then
    echo "over 56 MiB: with the working tree it may not fit the 64 MiB a device call carries" >&2
    exit 1
fi
