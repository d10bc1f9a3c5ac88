"""Your own few examples: a JSONL file of labeled pairs instead of a judged split, and per-data-set instructions."""

from __future__ import annotations

import json
from pathlib import Path

import luigi
import pytest

from stillhouse.pipelines.config import load_config
from stillhouse.pipelines.dag import generation_entries
from stillhouse.pipelines.tasks.data import LoadDataset
from stillhouse.pipelines.tasks.generation import SelectExamples, spec
from stillhouse.retrievers.errors import UserError
from tests.conftest import REPO

SMOKE_TEXT = (REPO / "configs" / "smoke.toml").read_text()


def smoke_config(tmp_path: Path, extra: str = "") -> Path:
    """configs/smoke.toml with ``extra`` lines added to its [generation] table."""
    path = tmp_path / "smoke.toml"
    path.write_text(SMOKE_TEXT.replace("[generation]\n", "[generation]\n" + extra, 1))
    return path


def select(config: Path, workdir: Path, slice_root: Path):
    """Run SelectExamples of the config's first generation entry (and its LoadDataset) here; its split."""
    entry = generation_entries(load_config(config), slice_root)[0]
    task = SelectExamples(workdir=str(workdir), gen=spec(SelectExamples, entry))
    assert luigi.build([task], local_scheduler=True, log_level="WARNING")
    return task.load()


def examples_dataset(config: Path, slice_root: Path) -> dict:
    return dict(generation_entries(load_config(config), slice_root)[0]["examples_dataset"])


def test_an_examples_file_of_the_selected_pairs_reproduces_the_selection(tmp_path: Path, slice_root: Path) -> None:
    """The prompt, tuning and filter pairs SelectExamples draws from the judged train split, written to a JSONL
    file in that order, give the same roles back: same documents, same document texts, same queries, so every
    prompt and soft prompt built from them is the same."""
    judged = select(smoke_config(tmp_path), tmp_path / "w", slice_root)
    roles = ("prompt", "tune", "filter_eval")
    lines = [json.dumps({"query": e.query, "doc_id": e.doc_id}) for role in roles for e in getattr(judged, role)]
    (tmp_path / "examples.jsonl").write_text("\n".join(lines) + "\n")
    own = select(smoke_config(tmp_path, 'examples = "examples.jsonl"\n'), tmp_path / "w", slice_root)
    for role in roles:
        assert getattr(own, role) == getattr(judged, role)
    assert own.held_out == []


def test_documents_given_as_text_and_bad_lines(tmp_path: Path, slice_root: Path) -> None:
    judged = select(smoke_config(tmp_path), tmp_path / "w", slice_root)
    pairs = [*judged.prompt, *judged.tune, *judged.filter_eval]
    rows = [{"query": e.query, "doc_id": e.doc_id} for e in pairs]
    rows[0] = {"query": "what does a written example look like", "title": "Mine", "text": "A document I wrote."}
    config = smoke_config(tmp_path, 'examples = "examples.jsonl"\n')
    path = tmp_path / "examples.jsonl"

    def write(items: list) -> None:
        path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in items) + "\n")

    write(rows)
    own = select(config, tmp_path / "w2", slice_root)
    assert (own.prompt[0].doc_id, own.prompt[0].document) == ("example-doc-1", "Mine. A document I wrote.")
    bad_lines = {
        "not JSON": ([*rows[:2], "{oops", *rows[3:]], f"{path}:3: malformed JSON"),
        "empty query": ([*rows[:4], {"query": " ", "doc_id": pairs[4].doc_id}, *rows[5:]], f"{path}:5: empty query"),
        "unknown id": ([*rows[:1], {"query": "q", "doc_id": "no-such-doc"}, *rows[2:]],
                       f"{path}:2: doc_id 'no-such-doc' is not in the scifact corpus"),
        "same document": ([*rows[:2], {**rows[2], "doc_id": rows[1]["doc_id"]}, *rows[3:]],
                          f"{path}:3: document {rows[1]['doc_id']!r} is already the example of line 2"),
        "same query": ([*rows[:3], {**rows[3], "query": rows[2]["query"].upper()}, *rows[4:]],
                       f"{path}:4: the query of line 3 again"),
    }
    for name, (items, message) in bad_lines.items():
        write(items)
        examples_split = LoadDataset(workdir=str(tmp_path / "w3"), **examples_dataset(config, slice_root))
        with pytest.raises(UserError) as caught:
            examples_split.build(tmp_path / "unused")
        assert str(caught.value).startswith(message), name
    write(rows[:5])
    with pytest.raises(UserError, match=r"5 examples, but \[generation\] of .* needs"):
        load_config(config)
    with pytest.raises(UserError, match=r"missing\.jsonl is not a file"):
        load_config(smoke_config(tmp_path, 'examples = "missing.jsonl"\n'))
    with pytest.raises(UserError, match=r"examples .* or examples_dataset .* not both"):
        load_config(smoke_config(tmp_path, 'examples = "examples.jsonl"\nexamples_dataset = "scifact"\n'))


def test_a_data_sets_instruction_replaces_the_default_for_that_data_set(tmp_path: Path, slice_root: Path) -> None:
    default = generation_entries(load_config(smoke_config(tmp_path)), slice_root)[0]["instruction"]
    own = 'instructions = { scifact = "Write the claim this abstract supports.", cranfield = "Ask it." }\n'
    entry = generation_entries(load_config(smoke_config(tmp_path, own)), slice_root)[0]
    assert entry["instruction"] == "Write the claim this abstract supports." != default
