"""MEMIT / AlphaEdit hyper-parameters, one typed dataclass, with defaults per model family.

Public references: MEMIT (Meng et al. 2023) GPT-J/GPT-2 XL configs, EasyEdit's Llama MEMIT
configs, AlphaEdit (Fang et al. 2025) configs. The SmolLM2-135M entry (llama family, 30 layers,
d=576) is measured (docs/layer-choice.md, ``benchmarks/layer_sweep.py``); other depths get the
reference layer window scaled to the same relative depth. This module is the one place that
chooses the edited layers ([editing] layers overrides it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from kbsync.errors import ConfigError

ALGORITHMS = ("memit", "alphaedit")
TARGET_DTYPES = ("float32", "bfloat16")


@dataclass(frozen=True)
class EditHyperParams:
    algorithm: str = "memit"  # "memit" | "alphaedit"
    layers: tuple[int, ...] = (4, 5, 6, 7, 8)  # edited MLP output projections, in order
    # 1) target vectors z (Adam on delta at the last edited layer, subject's last token)
    v_steps: int = 25
    v_lr: float = 0.5
    kl_factor: float = 0.0625  # weight of KL("{subject} is a" next-token distribution)
    clamp_factor: float = 4.0  # ||delta_i|| <= clamp_factor * ||h_i||
    weight_decay: float = 1e-3  # weight of ||delta||^2 / ||h||^2
    early_stop_loss: float = 5e-2  # an edit's delta is frozen once its loss is below this
    early_stop_prob: float = 0.0  # ENCORE: ... or once exp(-nll_i), the target's mean per-token probability, reaches this (0: off)
    norm_anchor: bool = False  # NAS: rescale each solved z_i to the unedited norm ||h_i|| (memit.py)
    n_prefixes: int = 5  # random model-generated prefixes (plus the bare prompt)
    prefix_len: int = 10  # tokens per prefix
    prefix_seed: int = 0
    kl_prompt: str = "{} is a"
    max_batch_tokens: int = 2048  # upper-block tokens per target-optimisation chunk: bounds its memory (~1 MB each, SmolLM2)
    target_dtype: str = "float32"  # matrix products of the upper blocks during target optimisation
    paraphrase_templates: int = 2  # context templates (from the first) each paraphrase is optimised in; 0: none
    merge_same_subject: bool = True  # edits of one subject in a batch share one delta (MEMIT-Merge; targets.py)
    # 2-3) spread over layers: dW = R K^T (cov_lambda C + K K^T)^-1, C mean-normalised E[k k^T]
    cov_lambda: float = 15000.0  # MEMIT's mom2_update_weight
    cov_samples: int = 100000  # texts in the second-moment corpus
    norm_constraint: float = 0.0  # ENCORE: alpha of + alpha ||dW||_F^2 in the objective (solve.py; 0: off)
    edit_memory: float = 1.0  # MEMIT: weight mu of earlier batches' keys, (lam C + mu K_p K_p^T + K K^T)^-1 (0: off)
    # 5) AlphaEdit: P = null space of C (eigenvalues < threshold); dW = R K^T P (S P + l2 I)^-1
    nullspace_threshold: float = 2e-2
    alphaedit_l2: float = 10.0  # "L2" in the public AlphaEdit configs (the paper writes I)
    batch_rows: int = 256  # rows per forward pass when computing keys

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ConfigError(f"unknown edit algorithm {self.algorithm!r}; use one of {', '.join(ALGORITHMS)}")
        if not self.layers or list(self.layers) != sorted(set(self.layers)):
            raise ConfigError(f"edit layers {list(self.layers)} must be distinct and increasing, e.g. [4, 5, 6, 7, 8]")
        for name in ("v_steps", "v_lr", "cov_lambda", "cov_samples", "clamp_factor"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"edit hyper-parameter {name} must be positive, got {getattr(self, name)!r}")
        if self.target_dtype not in TARGET_DTYPES:
            raise ConfigError(f"unknown target_dtype {self.target_dtype!r}; use one of {', '.join(TARGET_DTYPES)}")
        if self.max_batch_tokens < 1:
            raise ConfigError(f"max_batch_tokens must be positive, got {self.max_batch_tokens!r}")
        if not 0.0 <= self.early_stop_prob < 1.0:
            raise ConfigError(f"early_stop_prob must be in [0, 1) (0: off), got {self.early_stop_prob!r}")
        if self.edit_memory < 0:
            raise ConfigError(f"edit_memory must be >= 0 (0: off), got {self.edit_memory!r}")
        if self.norm_constraint < 0:
            raise ConfigError(f"norm_constraint must be >= 0 (0: off), got {self.norm_constraint!r}")
        if "{}" not in self.kl_prompt:
            raise ConfigError(f"kl_prompt {self.kl_prompt!r} needs a '{{}}' for the subject, e.g. '{{}} is a'")

    @property
    def preserved_weight(self) -> float:
        """Weight of earlier batches' keys K_p K_p^T in the solve (0: not kept): AlphaEdit's S always holds
        them (weight 1); MEMIT only with edit_memory."""
        return 1.0 if self.algorithm == "alphaedit" else self.edit_memory

    def replace(self, **changes: Any) -> EditHyperParams:
        if "layers" in changes:
            changes["layers"] = tuple(int(x) for x in changes["layers"])
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["layers"] = list(self.layers)
        return d


def scaled_layers(n_layers: int, first: int = 4, last: int = 8, depth: int = 32) -> tuple[int, ...]:
    """The reference window first..last of a depth-layer model, at the same relative depth."""
    a = min(round(first * n_layers / depth), n_layers - 1)
    b = min(max(round(last * n_layers / depth), a), n_layers - 1)
    return tuple(range(a, b + 1))


# SmolLM2-135M: measured (docs/layer-choice.md): layers 4-8 with λ = 1000 reach ES 1.00 / PS 0.92 at 100 edits
# and ES 0.97 / PS 0.88 at 500, neighbourhood within 0.04 of the unedited model; λ = 15000 gives ES 0.67.
# Targets: Adam at lr 1.0 with ENCORE's stop at p = 0.9 takes about 12 steps instead of 25 at about the same
# quality (50 CounterFact edits, greedy efficacy / paraphrase accuracy 0.98 / 0.52 against lr 0.5, 25 steps:
# 0.98 / 0.54; ES / PS / NS 1.00 / 0.96 / 0.72 against 1.00 / 0.94 / 0.74; docs/benchmarks.md, docs/bench/cpu/).
# Rows: 3 prefixes and paraphrases in the bare template only (7 rows an edit instead of 11) are 1.5x faster and
# as good, on counterfact-train 0-99 / 100-199: ES 1.00 / 1.00, PS 0.96 / 0.93, NS 0.71 / 0.64, greedy efficacy
# 0.98 / 0.94, paraphrase 0.47 / 0.42, against 5 prefixes and 2 paraphrase templates: 0.99 / 1.00, 0.96 / 0.93,
# 0.70 / 0.63, 0.96 / 0.92, 0.46 / 0.43 (unedited NS 0.71 / 0.67; docs/benchmarks.md, docs/bench/cpu/N100_*.json).
SMOLLM2_135M = EditHyperParams(layers=(4, 5, 6, 7, 8), cov_lambda=1000.0, cov_samples=2000, v_lr=1.0,
                               early_stop_prob=0.9, n_prefixes=3, paraphrase_templates=1)


# Gemma 3 270M (18 layers, d = 640; builtin:gemma3-270m): measured with benchmarks/layer_sweep.py on 30
# counterfact-train edits, C from the 512 shipped samples (docs/models.md): ES/PS/NS 2-5 λ 1000 1.00/0.97/0.67,
# 2-5 λ 5000 1.00/0.90/0.67, 1-4 λ 5000 1.00/0.87/0.73, 1-4 λ 10000 0.87/0.73/0.80 (unedited NS 0.80); and
# `kbsync eval` on 100 counterfact-val cases with 1-4 λ 5000: ES 0.98, PS 0.91, NS 0.81 -> 0.79. Targets as SmolLM2's.
GEMMA3_270M = SMOLLM2_135M.replace(layers=(1, 2, 3, 4), cov_lambda=5000.0, cov_samples=512)


def defaults_for(family: str, n_layers: int) -> EditHyperParams:
    """Reference defaults for a model family ("llama", "gpt2", "gptj", "gpt_neox", "gemma3", ...)."""
    if family == "llama" and n_layers == 30:  # SmolLM2-135M's depth
        return SMOLLM2_135M
    if family == "gemma3" and n_layers == 18:  # Gemma 3 270M's depth
        return GEMMA3_270M
    if family == "llama":  # EasyEdit Llama-2/3 MEMIT: layers 4-8, lr 0.5, clamp 4, wd 1e-3
        return EditHyperParams(layers=scaled_layers(n_layers))
    if family == "gpt2":  # MEMIT GPT-2 XL: layers 13-17 of 48, clamp 0.75, wd 0.5, lambda 20000
        return EditHyperParams(layers=scaled_layers(n_layers, 13, 17, 48), v_steps=20,
                               clamp_factor=0.75, weight_decay=0.5, cov_lambda=20000.0)
    if family == "gptj":  # MEMIT GPT-J: layers 3-8 of 28, clamp 0.75, wd 0.5, lambda 15000
        return EditHyperParams(layers=scaled_layers(n_layers, 3, 8, 28), v_steps=25,
                               clamp_factor=0.75, weight_decay=0.5)
    if family == "gpt_neox":  # MEMIT GPT-NeoX-20B: layers 6-10 of 44
        return EditHyperParams(layers=scaled_layers(n_layers, 6, 10, 44), v_steps=20,
                               clamp_factor=0.75, weight_decay=0.5)
    return EditHyperParams(layers=scaled_layers(n_layers))
