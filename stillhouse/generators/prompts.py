"""Hard prompts for query generation: zero-shot and Promptagator few-shot (Dai et al., 2022).

Promptagator's prompt is a short task instruction, at most 8 (document, query) examples from the
task's own labeled data, then the target document followed by an open ``Query:`` slot. Documents are
truncated to a token budget so that 8 examples fit the context; truncations are counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stillhouse.retrievers.errors import UserError

MAX_PROMPTAGATOR_EXAMPLES = 8
DEFAULT_INSTRUCTION = "Write a search query that the document answers."


@dataclass(frozen=True)
class Example:
    """One labeled (document, query) pair shown in a prompt."""

    doc_id: str
    document: str
    query: str


@dataclass
class PromptBuilder:
    """Builds prompt strings for a tokenizer, truncating documents to token budgets."""

    tokenizer: object
    instruction: str = DEFAULT_INSTRUCTION
    max_doc_tokens: int = 256
    max_example_doc_tokens: int = 96
    truncated: int = field(default=0, init=False)

    def _truncate(self, text: str, budget: int, count: bool) -> str:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) <= budget:
            return text
        if count:
            self.truncated += 1
        return self.tokenizer.decode(ids[:budget], skip_special_tokens=True)

    def block(self, document: str, query: str | None, example: bool) -> str:
        budget = self.max_example_doc_tokens if example else self.max_doc_tokens
        text = self._truncate(" ".join(document.split()), budget, count=not example)
        return f"Document: {text}\nQuery:" + (f" {query}\n\n" if query is not None else "")

    def prefix(self, examples: list[Example]) -> str:
        """Instruction plus example blocks: everything before the target document."""
        return f"{self.instruction}\n\n" + "".join(self.block(e.document, e.query, True) for e in examples)

    def build(self, document: str, examples: list[Example]) -> str:
        return self.prefix(examples) + self.block(document, None, False)


def check_examples(examples: list[Example], limit: int = MAX_PROMPTAGATOR_EXAMPLES, where: str = "examples") -> None:
    if not examples:
        raise UserError(f"{where}: the prompt-example set is empty; the train split must have judged pairs "
                        "(or set prompt = \"zero-shot\")")
    if len(examples) > limit:
        raise UserError(f"{where}: {len(examples)} prompt examples given; Promptagator uses at most {limit}")
