#!/usr/bin/env bash
# Creates the Python reference environment for the embedding benchmark (benches/embed.rs):
# sentence-transformers on PyTorch (CPU), the stack most users would otherwise pick.
#
# The virtual environment lives OUTSIDE the repository, in the benchmark scratch directory, and
# everything comes from the Python package index through pip. PyPI's Linux torch wheel declares
# its CUDA libraries as dependencies and refuses to import without them, so they are installed
# too (about 6 GB on disk); nothing uses a GPU. Idempotent: an environment that already imports
# the pinned versions is reused.
#
# Usage: core/inference/benches/reference/setup.sh
#   NEXUS_BENCH_CACHE  scratch directory (default: ~/.cache/nexus-bench)
# Prints the venv's python on its last line, e.g.
#   NEXUS_PY_REFERENCE=$(core/inference/benches/reference/setup.sh | tail -n1) \
#     cargo bench -p nexus-inference --bench embed
set -euo pipefail

# Pinned so that runs are comparable; bump deliberately.
TORCH_VERSION="2.15.0"
ST_VERSION="6.2.0"

CACHE="${NEXUS_BENCH_CACHE:-$HOME/.cache/nexus-bench}"
VENV="$CACHE/py-embed"
PY="$VENV/bin/python"

check() {
    "$PY" - "$TORCH_VERSION" "$ST_VERSION" <<'PYEOF' >/dev/null 2>&1
import sys
import torch, sentence_transformers
assert torch.__version__.split("+")[0] == sys.argv[1], torch.__version__
assert sentence_transformers.__version__ == sys.argv[2], sentence_transformers.__version__
PYEOF
}

if [[ -x "$PY" ]] && check; then
    echo "python reference already set up in $VENV" >&2
    echo "$PY"
    exit 0
fi

mkdir -p "$CACHE"
if [[ ! -x "$PY" ]]; then
    echo "creating $VENV" >&2
    python3 -m venv "$VENV"
fi
echo "installing torch $TORCH_VERSION and sentence-transformers $ST_VERSION (a few GB)" >&2
"$PY" -m pip install --quiet --upgrade pip >&2
"$PY" -m pip install --quiet "torch==$TORCH_VERSION" "sentence-transformers==$ST_VERSION" >&2
check || { echo "error: the reference environment does not import" >&2; exit 1; }
echo "$PY"
