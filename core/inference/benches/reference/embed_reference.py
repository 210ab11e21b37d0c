"""Python reference for the embedding benchmark (core/inference/benches/embed.rs).

Runs all-MiniLM-L6-v2 through sentence-transformers on PyTorch (CPU), the stack most users
would otherwise pick, on the same verified model files the Rust side uses, and measures the
same two things as the Rust side:

* the latency of ``model.encode(one_sentence)``, warm, every run recorded,
* the wall time of ``model.encode(batch, batch_size=len(batch))``, every run recorded,

then returns the embeddings so that the caller can check they equal its own.

Protocol: one JSON object on stdin::

    {"model_dir": "...", "threads": 2, "single": "...", "batch": ["...", ...],
     "runs": 300, "batch_runs": 20, "warmup": 20}

and one JSON object on stdout::

    {"engine": "...", "threads": 2, "load_ms": 812.0,
     "single_ms": [...], "batch_ms": [...],
     "single_embedding": [...], "batch_embeddings": [[...], ...]}

Nothing is fetched from a model hub: the script assembles a sentence-transformers model folder
(``modules.json``, ``1_Pooling/config.json``, ``tokenizer_config.json``...) of symlinks to the
verified files plus small config files it writes itself, in the benchmark scratch directory
(``NEXUS_BENCH_CACHE``, default ``~/.cache/nexus-bench``), and runs with the hub switched off.
Set up the interpreter with ``core/inference/benches/reference/setup.sh``.
"""

import json
import os
import sys
import time
from pathlib import Path

# Never reach a model hub, and keep the tokenizer from starting its own threads.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
# Keep stderr quiet (no progress bars, no advisory warnings): the caller prints a table.
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ["TRANSFORMERS_VERBOSITY"] = "error"
os.environ["TQDM_DISABLE"] = "1"

# The folder layout sentence-transformers expects for all-MiniLM-L6-v2 (as published):
# Transformer -> mean Pooling -> Normalize.
MODULES = [
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
]
TOKENIZER_CONFIG = {
    "do_lower_case": True,
    "model_max_length": 512,
    "tokenizer_class": "BertTokenizer",
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "pad_token": "[PAD]",
    "unk_token": "[UNK]",
    "mask_token": "[MASK]",
    "strip_accents": None,
    "tokenize_chinese_chars": True,
}
LINKED = ["config.json", "tokenizer.json", "model.safetensors", "sentence_bert_config.json"]


def assemble(model_dir: Path) -> Path:
    """A sentence-transformers folder for the verified files in ``model_dir`` (idempotent)."""
    cache = Path(os.environ.get("NEXUS_BENCH_CACHE", Path.home() / ".cache" / "nexus-bench"))
    out = cache / f"st-{model_dir.name}"
    (out / "1_Pooling").mkdir(parents=True, exist_ok=True)
    (out / "2_Normalize").mkdir(exist_ok=True)

    def link(target: Path, at: Path) -> None:
        if at.is_symlink() or at.exists():
            if at.is_symlink() and Path(os.readlink(at)) == target:
                return
            at.unlink()
        at.symlink_to(target)

    for name in LINKED:
        link(model_dir / name, out / name)
    link(model_dir / "pooling_config.json", out / "1_Pooling" / "config.json")
    (out / "modules.json").write_text(json.dumps(MODULES, indent=2))
    (out / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG, indent=2))
    return out


def main() -> None:
    request = json.load(sys.stdin)
    threads = int(request.get("threads", 2))

    import torch

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    import sentence_transformers
    from sentence_transformers import SentenceTransformer

    started = time.perf_counter()
    model = SentenceTransformer(str(assemble(Path(request["model_dir"]))), device="cpu")
    model.eval()
    load_ms = (time.perf_counter() - started) * 1e3

    single = request["single"]
    batch = request["batch"]

    def encode_one():
        return model.encode(single, normalize_embeddings=True, convert_to_numpy=True)

    def encode_batch():
        return model.encode(
            batch, batch_size=len(batch), normalize_embeddings=True, convert_to_numpy=True
        )

    with torch.inference_mode():
        for _ in range(int(request.get("warmup", 20))):
            encode_one()
        single_ms = []
        for _ in range(int(request["runs"])):
            t = time.perf_counter()
            one = encode_one()
            single_ms.append((time.perf_counter() - t) * 1e3)
        encode_batch()
        batch_ms = []
        for _ in range(int(request["batch_runs"])):
            t = time.perf_counter()
            many = encode_batch()
            batch_ms.append((time.perf_counter() - t) * 1e3)

    json.dump(
        {
            "engine": f"sentence-transformers {sentence_transformers.__version__}"
            f" / torch {torch.__version__.split('+')[0]}",
            "threads": torch.get_num_threads(),
            "load_ms": load_ms,
            "single_ms": single_ms,
            "batch_ms": batch_ms,
            "single_embedding": one.tolist(),
            "batch_embeddings": many.tolist(),
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
