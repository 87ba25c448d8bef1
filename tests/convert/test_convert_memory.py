"""The converter's host memory follows the largest tensor, not the checkpoint (the README: "peak
host memory about two copies of the largest tensor").

``python -m checkpoints_convert import`` runs in its own process on a 0.4 GB bf16 LLaDA-layout
checkpoint whose largest tensors (embedding and LM head, 32000 x 1024) are 66 MB each, and on a
1 MB one; the peak resident set sizes come from the kernel (``bench.convert_memory``'s launcher,
``os.wait4``). The difference is the memory the tensors cost: measured 2.6 copies of the largest
tensor (168 MB; the tiny run's 0.26 GB is Python, JAX and orbax). Bound: 3.5 copies, while a
converter that held the whole model would need the checkpoint's 6.1 copies at least.
"""

import sys

import pytest

from bench.convert_memory import build_checkpoint, run_measured

GB = 10**9
LARGEST = 32000 * 1024 * 2  # bytes of the bf16 embedding (and of the LM head)


@pytest.mark.slow
def test_import_peak_memory_is_a_few_largest_tensors(tmp_path):
    peaks, sizes = {}, {}
    for name, (layers, hidden, mlp, vocab) in {"tiny": (1, 128, 256, 1024), "big": (8, 1024, 4096, 32000)}.items():
        sizes[name] = build_checkpoint(str(tmp_path / name), layers, hidden, mlp, vocab, shard_bytes=GB)
        command = [sys.executable, "-m", "checkpoints_convert", "import", "--src", str(tmp_path / name), "--dst",
                   str(tmp_path / f"{name}_ckpt"), "--no-progress"]
        peaks[name], _ = run_measured(command, timeout=600)
    assert sizes["big"] > 6 * LARGEST
    extra = peaks["big"] - peaks["tiny"]
    assert extra <= 3.5 * LARGEST, f"import held {extra / LARGEST:.1f} copies of the largest tensor"
