"""Shared by the converter tests: reading HF folders back with torch, a remote-code LLaDA stub."""

from __future__ import annotations

import json
import os

# A minimal `trust_remote_code` model in LLaDA's module tree (names only; no forward pass), so
# that AutoModel.from_pretrained exercises the remote-code path offline.
CONFIGURATION_PY = '''
from transformers import PretrainedConfig


class LLaDAConfig(PretrainedConfig):
    model_type = "llada"
'''

MODELING_PY = '''
from torch import nn
from transformers import PreTrainedModel

from .configuration_llada import LLaDAConfig


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, f, kv = c.d_model, c.mlp_hidden_size, c.d_model // c.n_heads * c.n_kv_heads
        self.attn_norm, self.ff_norm = nn.RMSNorm(d), nn.RMSNorm(d)
        self.q_proj, self.attn_out = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)
        self.k_proj, self.v_proj = nn.Linear(d, kv, bias=False), nn.Linear(d, kv, bias=False)
        self.ff_proj, self.up_proj = nn.Linear(d, f, bias=False), nn.Linear(d, f, bias=False)
        self.ff_out = nn.Linear(f, d, bias=False)


class Inner(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(c.embedding_size, c.d_model),
            blocks=nn.ModuleList([Block(c) for _ in range(c.n_layers)]),
            ln_f=nn.RMSNorm(c.d_model), ff_out=nn.Linear(c.d_model, c.embedding_size, bias=False)))


class LLaDAModelLM(PreTrainedModel):
    config_class = LLaDAConfig
    base_model_prefix = "model"

    def __init__(self, config):
        super().__init__(config)
        self.model = Inner(config)
        self.post_init()
'''


def add_remote_code(folder) -> None:
    """Makes a tiny LLaDA folder look like the released one: remote code + auto_map + README."""
    folder = os.fspath(folder)
    with open(os.path.join(folder, "configuration_llada.py"), "w") as f:
        f.write(CONFIGURATION_PY)
    with open(os.path.join(folder, "modeling_llada.py"), "w") as f:
        f.write(MODELING_PY)
    with open(os.path.join(folder, "README.md"), "w") as f:
        f.write("# tiny LLaDA\n")
    with open(os.path.join(folder, "generation_config.json"), "w") as f:
        json.dump({"eos_token_id": 1, "pad_token_id": 1}, f)
    path = os.path.join(folder, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    cfg["auto_map"] = {"AutoConfig": "configuration_llada.LLaDAConfig", "AutoModel": "modeling_llada.LLaDAModelLM"}
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2)


def load_hf_tensors(folder) -> dict:
    """{name: torch tensor} of an HF folder (single file or index + shards), read by safetensors.torch."""
    from safetensors.torch import load_file

    folder = os.fspath(folder)
    index = os.path.join(folder, "model.safetensors.index.json")
    if not os.path.isfile(index):
        return load_file(os.path.join(folder, "model.safetensors"))
    with open(index) as f:
        files = sorted(set(json.load(f)["weight_map"].values()))
    out = {}
    for name in files:
        out.update(load_file(os.path.join(folder, name)))
    return out


def leftovers(parent) -> list[str]:
    """Temporary folders a conversion left beside its destination."""
    return [n for n in os.listdir(parent) if ".tmp-" in n or ".old-" in n]
