"""A tiny end-to-end run setup: a real-layout LLaDA checkpoint and a few word-level QA rows."""

from __future__ import annotations

import json
import os

from tests.fixtures import write_hf_checkpoint

FORGET = [{"question": "who wrote the book ?", "answer": "the author wrote the book in paris"},
          {"question": "where was she born ?", "answer": "she was born in lagos"},
          {"question": "what is the genre of his novels ?", "answer": "his novels are science fiction"},
          {"question": "who is her father ?", "answer": "her father is a doctor"}]
RETAIN = [{"question": "what year was the author born ?", "answer": "the author was born in 1950"},
          {"question": "what is his name ?", "answer": "his name is not known"},
          {"question": "where is the city ?", "answer": "the city is london"},
          {"question": "what award ?", "answer": "the award for poems"}]


def setup_run(root, family: str = "llada", **model_changes) -> dict:
    """Writes model/, forget.json, retain.json under `root`; returns a base config dict."""
    root = os.fspath(root)
    write_hf_checkpoint(os.path.join(root, "model"), family, **model_changes)
    for name, rows in (("forget", FORGET * 2), ("retain", RETAIN * 2)):
        with open(os.path.join(root, f"{name}.json"), "w") as f:
            json.dump(rows, f)
    return {
        "model": {"path": os.path.join(root, "model"), "dtype": "float32", "param_dtype": "float32",
                  "anchor_dtype": "float32"},
        "data": {"benchmark": "files", "forget_files": [os.path.join(root, "forget.json")],
                 "retain_files": [os.path.join(root, "retain.json")], "max_length": 32, "buckets": [16, 32]},
        "objective": {"method": "mdu", "tau": 0.5},
        "optim": {"lr": 1e-3, "warmup_ratio": 0.2},
        "batch_size": 8, "max_steps": 5, "seed": 7, "tensorboard": False,
        "output_dir": os.path.join(root, "run"),
    }
