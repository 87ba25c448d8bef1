"""Every leakage probe of issue 18 on a set of models, side by side: does forgotten knowledge come back?

``run_probes(models, tokenizer, forget_rows, settings)`` runs, for each model (typically the
unlearned model, a reference such as the retain-only twin or another method, and the model
before unlearning):

- ``quantization``: ``eval.probes.knowledge`` of the forget rows (and the retain rows, to tell
  "the knowledge came back" from "the model broke") in full precision and after each
  round-to-nearest width of ``settings.bits`` (``eval.probes.quantization``);
- ``relearn``: the forget rows split (seeded) into a part to fine-tune on and a held-out part;
  for each k of ``settings.relearn_steps`` the model is fine-tuned k SFT steps on the first
  (``experiments.relearn.finetune``) and the held-out part's knowledge is measured, before and
  after; the fine-tuned part's own knowledge shows the fine-tuning took;
- ``infilling``: the partial-reveal curve (``eval.probes.infilling``) over the forget answers'
  own tokens (the template tail stays visible) for each reveal ratio and order;
- ``generation``: sampled answers to the forget questions (``eval.probes.leakage``), and, where
  the rows carry paraphrased questions (TOFU, the demo world) and ``settings.leak_paraphrased``,
  the same to those (``paraphrased``: its own rows in the table).

Everything is deterministic given ``settings.seed``. The result is a JSON-ready dict
(``format: mdu_jax.probes/1``); ``eval.probes.table.format_probe_table`` prints it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Sequence

from mdu_jax.eval import scoring as S
from mdu_jax.eval.probes import infilling, leakage, quantization
from mdu_jax.eval.probes.knowledge import SamplerSettings, answer_triples, check_rows, knowledge
from mdu_jax.experiments.relearn import finetune, split_pairs
from mdu_jax.models.config import ModelConfig
from mdu_jax.training.config import OptimSection

log = logging.getLogger("mdu_jax.probes")

PROBES = ("quantization", "relearn", "infilling", "generation")
RELEARN_REMAT = "dots_no_batch"   # configs/tofu_llada8b.yaml's model.remat_policy
RELEARN_CHUNK = 128               # and its objective.chunk_size
FORMAT = "mdu_jax.probes/1"


@dataclasses.dataclass
class ProbeSettings:
    """What each probe runs (see the module docstring); ``validate`` names a bad value."""

    probes: tuple[str, ...] = PROBES
    bits: tuple[str, ...] = ("int8", "int4")
    ratios: tuple[float, ...] = (0.25, 0.5, 0.75, 0.9)
    orders: tuple[str, ...] = ("random",)
    relearn_steps: tuple[int, ...] = (10,)
    relearn_fraction: float = 0.5
    relearn_lr: float = 1e-5
    relearn_batch_size: int = 8
    leak_samples: int = 8
    leak_temperature: float = 1.0
    leak_algorithms: tuple[str, ...] | None = None
    leak_paraphrased: bool = True   # also sample the rows' paraphrased questions, where they have them
    sampler: SamplerSettings = dataclasses.field(default_factory=SamplerSettings)
    mc_samples: int = 32
    seed: int = 0
    batch_size: int = 32

    def validate(self) -> None:
        """Raises ValueError naming the first bad setting."""
        unknown = [p for p in self.probes if p not in PROBES]
        if unknown or not self.probes:
            raise ValueError(f"probes: expected some of {list(PROBES)}, got {list(self.probes)}")
        bad = [b for b in self.bits if b not in quantization.BITS]
        if bad:
            raise ValueError(f"bits: expected some of {list(quantization.BITS)}, got {bad}")
        bad = [r for r in self.ratios if not 0.0 <= r < 1.0]
        if bad or not self.ratios:
            raise ValueError(f"ratios: expected reveal ratios in [0, 1), got {list(self.ratios)}")
        bad = [o for o in self.orders if o not in infilling.ORDERS]
        if bad or not self.orders:
            raise ValueError(f"orders: expected some of {list(infilling.ORDERS)}, got {list(self.orders)}")
        if not self.relearn_steps or any(int(k) < 0 for k in self.relearn_steps):
            raise ValueError(f"relearn_steps: expected step counts >= 0, got {list(self.relearn_steps)}")
        if not 0.0 < self.relearn_fraction < 1.0:
            raise ValueError(f"relearn_fraction: expected 0 < f < 1, got {self.relearn_fraction}")
        if not self.relearn_lr > 0:
            raise ValueError(f"relearn_lr: expected > 0, got {self.relearn_lr}")
        if self.leak_samples < 1:
            raise ValueError(f"leak_samples: expected >= 1, got {self.leak_samples}")
        if not self.leak_temperature > 0:
            raise ValueError(f"leak_temperature: expected > 0, got {self.leak_temperature}")
        for name in ("relearn_batch_size", "mc_samples", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")

    def to_json(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict."""
        return dataclasses.asdict(self)


def _scores(cfg, params, tokenizer, rows, s: ProbeSettings) -> dict[str, Any]:
    return knowledge(cfg, params, tokenizer, rows, s.sampler, mc_samples=s.mc_samples, seed=s.seed,
                     batch_size=s.batch_size)


def quantization_probe(cfg: ModelConfig, params, tokenizer, forget_rows, retain_rows, s: ProbeSettings) -> dict:
    """{precision ('float', 'int8', 'int4'): {split ('forget', 'retain'): knowledge}}."""
    out = {}
    for name in ("float",) + tuple(s.bits):
        weights = params if name == "float" else quantization.quantize_params(cfg, params, quantization.BITS[name])
        out[name] = {"forget": _scores(cfg, weights, tokenizer, forget_rows, s)}
        if retain_rows:
            out[name]["retain"] = _scores(cfg, weights, tokenizer, retain_rows, s)
    return out


def relearn_split(rows: Sequence[dict], s: ProbeSettings) -> tuple[list[dict], list[dict]]:
    """(rows fine-tuned on, held-out rows) of the relearning probe: ``relearn.split_pairs`` at the seed."""
    return split_pairs(list(rows), s.relearn_fraction, seed=s.seed)


def relearn_probe(cfg: ModelConfig, params, tokenizer, forget_rows, s: ProbeSettings) -> dict:
    """{'train_rows', 'held_out_rows', 'before': knowledge of the held-out rows, 'steps': {k:
    {'held_out', 'train', 'final_loss'}}} for each k of ``s.relearn_steps``."""
    train, held = relearn_split(forget_rows, s)
    pairs = [S.response_ids(tokenizer, r["question"], r["answer"]) for r in train]
    # Constant rate, no update guard: an attack that diverges is a failed attack, not an error.
    optim = OptimSection(lr=s.relearn_lr, schedule="constant", warmup_ratio=0.0, max_update_ratio=0.0)
    out: dict[str, Any] = {"train_rows": len(train), "held_out_rows": len(held),
                           "before": _scores(cfg, params, tokenizer, held, s), "steps": {}}
    # Train with the shipped full-size configs' memory settings (rematerialised dots, the loss
    # over sequence chunks): the same numbers, and what bench/probes_memory sizes at 8B.
    train_cfg = cfg.replace(remat_policy=RELEARN_REMAT) if cfg.remat_policy == "none" else cfg
    for k in s.relearn_steps:
        tuned, losses = finetune(train_cfg, params, pairs, steps=int(k), optim=optim,
                                 batch_size=s.relearn_batch_size, seed=s.seed, chunk_size=RELEARN_CHUNK)
        out["steps"][str(int(k))] = {"held_out": _scores(cfg, tuned, tokenizer, held, s),
                                     "train": _scores(cfg, tuned, tokenizer, train, s),
                                     "final_loss": losses[-1] if losses else None}
    return out


def infilling_probe(cfg: ModelConfig, params, tokenizer, forget_rows, s: ProbeSettings) -> dict:
    """{order: InfillingCurve.to_json()} on the forget answers (template tail always visible)."""
    triples = answer_triples(tokenizer, forget_rows)
    return {order: infilling.infilling_curve(cfg, params, triples, s.ratios, order=order, seed=s.seed,
                                             batch_size=s.batch_size).to_json()
            for order in s.orders}


def generation_probe(cfg: ModelConfig, params, tokenizer, forget_rows, s: ProbeSettings) -> dict:
    """``eval.probes.leakage.generation_leakage`` of the forget questions; with
    ``s.leak_paraphrased`` and rows that carry paraphrased questions, also 'paraphrased': {'rows':
    how many, and the same for those rows asked in their paraphrased form}."""
    def leak(rows):
        return leakage.generation_leakage(cfg, params, tokenizer, rows, s.sampler, samples=s.leak_samples,
                                          temperature=s.leak_temperature, algorithms=s.leak_algorithms, seed=s.seed,
                                          batch_size=s.batch_size)

    out = leak(forget_rows)
    paraphrased = leakage.paraphrased_rows(forget_rows) if s.leak_paraphrased else []
    if paraphrased:
        out["paraphrased"] = {"rows": len(paraphrased), **leak(paraphrased)}
    return out


def _probe_one(probe: str, cfg: ModelConfig, params, tokenizer, forget_rows, retain_rows, s: ProbeSettings) -> dict:
    if probe == "quantization":
        return quantization_probe(cfg, params, tokenizer, forget_rows, retain_rows, s)
    if probe == "relearn":
        return relearn_probe(cfg, params, tokenizer, forget_rows, s)
    if probe == "infilling":
        return infilling_probe(cfg, params, tokenizer, forget_rows, s)
    return generation_probe(cfg, params, tokenizer, forget_rows, s)


def run_probes(models: dict[str, Any], tokenizer, forget_rows: Sequence[dict], settings: ProbeSettings, *,
               retain_rows: Sequence[dict] | None = None,
               model_paths: dict[str, str] | None = None) -> dict[str, Any]:
    """{'format', 'models', 'settings', 'rows', 'probes': {probe: {model label: result}}, 'seconds'}.

    models: {label: (ModelConfig, params)} or {label: a function returning them}, in table
    column order, all sharing `tokenizer`. A function is called when its model's turn comes and
    its params are dropped after every probe has run on them, so only one model's weights (plus
    a probe's quantised or fine-tuned copy) are held at a time: what a full-size run needs.
    forget_rows / retain_rows: {question, answer[, fact]} dicts (retain rows only feed the
    quantisation probe's utility check).
    """
    settings.validate()
    if not models:
        raise ValueError("models: nothing to probe")
    forget_rows = check_rows(forget_rows, "forget rows")
    retain_rows = check_rows(retain_rows, "retain rows") if retain_rows else []
    if "relearn" in settings.probes and len(forget_rows) < 2:
        raise ValueError(f"relearn: needs at least 2 forget rows to hold some out, got {len(forget_rows)}")
    result: dict[str, Any] = {"format": FORMAT, "models": dict(model_paths or {label: None for label in models}),
                              "settings": settings.to_json(),
                              "rows": {"forget": len(forget_rows), "retain": len(retain_rows)},
                              "probes": {p: {} for p in settings.probes},
                              "seconds": {p: 0.0 for p in settings.probes}}
    vocab = None
    for label, model in models.items():
        cfg, params = model() if callable(model) else model
        if vocab is not None and cfg.vocab_size != vocab[1]:
            raise ValueError(f"models: they must share one tokenizer, but {label!r} has a vocabulary of "
                             f"{cfg.vocab_size} and {vocab[0]!r} one of {vocab[1]}")
        vocab = vocab or (label, cfg.vocab_size)
        for probe in settings.probes:
            started = time.time()
            log.info("probe %s: %s", probe, label)
            result["probes"][probe][label] = _probe_one(probe, cfg, params, tokenizer, forget_rows, retain_rows,
                                                        settings)
            result["seconds"][probe] = round(result["seconds"][probe] + time.time() - started, 1)
        del params
    return result


__all__ = ["PROBES", "FORMAT", "ProbeSettings", "quantization_probe", "relearn_split", "relearn_probe",
           "infilling_probe", "generation_probe", "run_probes"]
