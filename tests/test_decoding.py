"""Decoding constraints as logits processors, on real token ids from the real SmolLM2 tokenizer."""

from __future__ import annotations

from pathlib import Path

import torch

from stillhouse.generators.generate import DocumentSpanBlocker, GeneratedNGramBlocker, shared_prefix


def test_shared_prefix_leaves_every_prompt_a_token_of_its_own() -> None:
    assert shared_prefix([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 9]]) == [1, 2]
    assert shared_prefix([[1, 2, 3], [1, 2, 3]]) == [1, 2]
    assert shared_prefix([[7, 8]]) == [7]
    assert shared_prefix([[1], [1, 2]]) == []
    assert shared_prefix([]) == []


def test_document_span_blocker_stops_a_verbatim_copy(smollm2_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    document = tokenizer("Document: Effect of smoking reduction on lung cancer risk\nQuery:")["input_ids"]
    copied = tokenizer(" Effect of smoking reduction on", add_special_tokens=False)["input_ids"]
    following = tokenizer(" Effect of smoking reduction on lung", add_special_tokens=False)["input_ids"][len(copied)]
    prompt_width = 3
    rows = torch.tensor([[0] * prompt_width + copied, [0] * prompt_width + copied[::-1]])
    blocker = DocumentSpanBlocker(prompt_width, [document, document], max_tokens=len(copied))
    scores = blocker(rows, torch.zeros(2, len(tokenizer)))
    assert scores[0, following] == float("-inf") and torch.isfinite(scores[0]).sum() == len(tokenizer) - 1
    assert torch.isfinite(scores[1]).all()  # the reversed words are no span of the document
    shorter = DocumentSpanBlocker(prompt_width, [document, document], max_tokens=len(copied) + 1)
    assert torch.isfinite(shorter(rows, torch.zeros(2, len(tokenizer)))).all()  # not long enough yet


def test_generated_ngram_blocker_ignores_the_prompt() -> None:
    blocker = GeneratedNGramBlocker(prompt_width=4, n=2)
    rows = torch.tensor([[5, 6, 5, 6, 5, 6, 5], [5, 6, 5, 6, 1, 2, 3]])
    scores = blocker(rows, torch.zeros(2, 10))
    assert scores[0, 6] == float("-inf")  # "5 6" was generated already; "5" may not be followed by "6" again
    assert torch.isfinite(scores[1]).all()  # "5 6" only occurs in the prompt


def test_prefix_sharing_with_a_sliding_window(smollm2_dir: Path) -> None:
    """Gemma-3 style sliding-window layers count padding slots: the shared prefix is used only while a whole
    row fits the window, and there it decodes exactly what whole prompts decode."""
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

    from stillhouse.generators.generate import DecodeSettings, exact_with_padding_inside, generate

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    config = Gemma3TextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=48,
                              layer_types=["sliding_attention", "full_attention"])
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(config).eval()
    assert exact_with_padding_inside(model, 48) and not exact_with_padding_inside(model, 49)

    prompts = [f"Write a query.\n\nDocument: {text}\nQuery:" for text in
               ("smoking and lung cancer risk", "vitamin D in pregnancy outcomes of the mother and child",
                "bullying")]
    settings = DecodeSettings(max_new_tokens=6, batch_size=3)
    shared = generate(model, tokenizer, prompts, settings, 4096)
    whole = generate(model, tokenizer, prompts, DecodeSettings(max_new_tokens=6, batch_size=3, share_prefix=False),
                     4096)
    assert [g[0].text for g in shared] == [g[0].text for g in whole]
