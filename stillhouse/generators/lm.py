"""Causal language models for query generation: loading, checks, device and dtype."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from stillhouse.retrievers.errors import UserError

_CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")


@dataclass
class CausalLM:
    """A frozen causal LM, its tokenizer (left padding for generation) and where it runs."""

    model: object
    tokenizer: object
    device: str
    model_dir: Path

    @property
    def context_window(self) -> int:
        config = self.model.config
        return int(getattr(config, "max_position_embeddings", 0) or self.tokenizer.model_max_length)


def check_causal(model_dir: Path) -> dict:
    """The model's config, or a UserError if it is not a decoder-only LM."""
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise UserError(f"{model_dir}: no config.json; a generator must be a transformers model folder")
    config = json.loads(config_path.read_text())
    architectures = config.get("architectures") or []
    if not any(a.endswith(_CAUSAL_SUFFIXES) for a in architectures) or config.get("is_encoder_decoder"):
        raise UserError(
            f"{model_dir}: {', '.join(architectures) or config.get('model_type', 'this model')} is not a causal LM; "
            "query generation needs a decoder-only model such as SmolLM2 or Gemma-3"
        )
    return config


def load_causal_lm(model_dir: Path, device: str | None = None) -> CausalLM:
    """Load a local causal LM frozen in eval mode: bf16 on GPU, fp32 on CPU."""
    check_causal(model_dir)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, local_files_only=True).to(device).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return CausalLM(model, tokenizer, device, model_dir)
