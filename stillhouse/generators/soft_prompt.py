"""SPTAR soft prompts (Peng et al., 2023, "Soft Prompt Tuning for Augmenting Dense Retrieval with
Large Language Models", §3.2): a prompt of ``n`` trainable virtual-token embeddings is prepended to a
frozen causal LM and trained on a few labeled pairs to minimize

    L(θ_prompt) = - Σ_(d,q) Σ_t log p(q_t | q_<t, [soft prompt; examples; d]; θ_LM frozen)     (SPTAR Eq. 1)

i.e. the NLL of the query given soft prompt + in-prompt example pairs + document. Training uses peft's
PromptTuning (initialized from the hard prompt's instruction text) and the transformers Trainer; the
result is a standard peft adapter folder plus ``stillhouse.json`` naming the LM it belongs to.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

from stillhouse.generators.nll import encode_pair
from stillhouse.generators.prompts import Example, PromptBuilder
from stillhouse.retrievers.errors import UserError
from stillhouse.settings import SoftPromptSettings

log = logging.getLogger(__name__)
ADAPTER_META = "stillhouse.json"


def lm_identity(model) -> dict:
    """What a soft prompt depends on: the LM's architecture, width and vocabulary."""
    config = model.config
    return {"model_type": config.model_type, "hidden_size": int(config.hidden_size),
            "vocab_size": int(config.vocab_size)}


def training_texts(builder: PromptBuilder, pairs: list[Example], example_pool: list[Example], per_prompt: int,
                   seed: int) -> list[tuple[str, str]]:
    """(prompt, target) per tuning pair, each prompt holding ``per_prompt`` examples drawn from the pool."""
    rng = random.Random(seed)
    texts = []
    for pair in pairs:
        candidates = [e for e in example_pool if e.doc_id != pair.doc_id]
        chosen = rng.sample(candidates, min(per_prompt, len(candidates)))
        texts.append((builder.build(pair.document, chosen), f" {pair.query}\n"))
    return texts


def train_soft_prompt(lm, builder: PromptBuilder, pairs: list[Example], example_pool: list[Example],
                      settings: SoftPromptSettings, out_dir: Path) -> dict:
    """Train a soft prompt and save it as a peft adapter in ``out_dir``; return training stats."""
    import torch
    from datasets import Dataset
    from peft import PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    if not pairs:
        raise UserError("soft prompt: the tuning set is empty; give the train split some judged pairs")
    torch.manual_seed(settings.seed)
    config = PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=settings.virtual_tokens,
                                prompt_tuning_init=PromptTuningInit.TEXT,
                                prompt_tuning_init_text=builder.instruction,
                                tokenizer_name_or_path=str(lm.model_dir))
    model = get_peft_model(lm.model, config)
    rows = []
    for prompt, target in training_texts(builder, pairs, example_pool, settings.examples_per_prompt, settings.seed):
        ids, labels = encode_pair(lm.tokenizer, prompt, target, settings.max_length)
        rows.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels})
    lm.tokenizer.padding_side = "right"
    on_gpu = lm.device.startswith("cuda")
    args = TrainingArguments(output_dir=str(out_dir / "trainer"), num_train_epochs=settings.epochs,
                             per_device_train_batch_size=settings.batch_size, learning_rate=settings.learning_rate,
                             lr_scheduler_type="linear", warmup_steps=0.1, logging_steps=1, save_strategy="no",
                             report_to=[], seed=settings.seed, bf16=on_gpu, use_cpu=not on_gpu,
                             disable_tqdm=False, remove_unused_columns=False)
    trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                      data_collator=DataCollatorForSeq2Seq(lm.tokenizer, padding=True, label_pad_token_id=-100))
    result = trainer.train()
    lm.tokenizer.padding_side = "left"
    model.save_pretrained(out_dir)
    meta = {"lm": lm_identity(lm.model), "instruction": builder.instruction,
            "virtual_tokens": settings.virtual_tokens, "train_pairs": len(rows),
            "train_loss": float(result.training_loss), "log": trainer.state.log_history}
    (out_dir / ADAPTER_META).write_text(json.dumps(meta, indent=2))
    return meta


def load_soft_prompt(lm, adapter_dir: Path):
    """The LM wrapped with a saved soft prompt; refuses a prompt trained for another LM."""
    from peft import PeftModel

    meta_path = adapter_dir / ADAPTER_META
    if not meta_path.is_file():
        raise UserError(f"{adapter_dir}: not a stillhouse soft prompt (no {ADAPTER_META})")
    trained_for = json.loads(meta_path.read_text())["lm"]
    if trained_for != lm_identity(lm.model):
        raise UserError(f"{adapter_dir}: soft prompt was trained for another LM ({trained_for['model_type']}, "
                        f"hidden {trained_for['hidden_size']}); retrain it for {lm.model_dir.name}")
    return PeftModel.from_pretrained(lm.model, adapter_dir).eval()
