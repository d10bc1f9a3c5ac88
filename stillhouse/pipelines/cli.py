"""``stillhouse`` command line: run the DAG, run its ablations, show its status, export its indexes, cut a data
slice.

User errors (bad config, data, model sources) print one ``error:`` line and exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from stillhouse.retrievers.errors import UserError

log = logging.getLogger("stillhouse")
EXIT_USER_ERROR = 2


class _DropUserErrorTracebacks(logging.Filter):
    """Luigi logs a failed task with its traceback; for a UserError the CLI prints one line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], UserError):
            return False
        return not (record.name.startswith("luigi") and "UserError" in record.getMessage())


class _ConsoleFormatter(logging.Formatter):
    """Luigi's own tracebacks go to the run log only; the CLI prints a one-line summary on failure."""

    def format(self, record: logging.LogRecord) -> str:
        if record.name.startswith("luigi") and (record.exc_info or record.exc_text):
            record = logging.makeLogRecord({**record.__dict__, "exc_info": None, "exc_text": None})
        return super().format(record)


def setup_logging(workdir: Path, verbose: bool) -> Path:
    """Console: stillhouse progress and luigi warnings. File: everything, tracebacks included."""
    import luigi.configuration

    luigi.configuration.get_config().set("core", "no_configure_logging", "true")
    log_dir = workdir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_file = log_dir / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    root = logging.getLogger()
    root.setLevel(logging.DEBUG)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.DEBUG if verbose else logging.INFO)
    console.setFormatter(_ConsoleFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    console.addFilter(_DropUserErrorTracebacks())
    file_handler = logging.FileHandler(log_file)
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"))
    root.addHandler(console)
    root.addHandler(file_handler)
    for noisy in ("luigi-interface", "luigi", "urllib3", "httpx", "sentence_transformers", "filelock", "faiss.loader"):
        logging.getLogger(noisy).setLevel(logging.WARNING if not verbose else logging.DEBUG)
    return log_file


def _parser() -> argparse.ArgumentParser:
    from stillhouse import __version__

    parser = argparse.ArgumentParser(
        prog="stillhouse", description="An unlabeled corpus and a few labeled examples in, trained retrievers out: "
                                       "run the DAG of a config, its ablations and its status, search and export "
                                       "what it built, cut a data slice. `stillhouse COMMAND -h` for each command.")
    parser.add_argument("--version", action="version", version=f"stillhouse {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("run", "run the DAG of CONFIG"), ("status", "show which tasks of CONFIG are done"),
                            ("ablate", "train a student of CONFIG with one component off at a time"),
                            ("export", "export the indexes a finished run of CONFIG built")):
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("config", type=Path)
        cmd.add_argument("--data-dir", help="BEIR root folder (default: [data] dir, then $STILLHOUSE_BEIR_DIR)")
        cmd.add_argument("--workdir", type=Path, help="artifact root (default: the config's workdir)")
        cmd.add_argument("--datasets", help="comma-separated subset of the config's data sets")
        cmd.add_argument("-v", "--verbose", action="store_true")
        if name != "export":
            cmd.add_argument("--eval-split", help="evaluate on this split instead of [data] split (generation and "
                                                  "training unchanged): select settings on train, report test")
        if name == "status":
            cmd.add_argument("--graph", action="store_true", help="print the DAG's task families and their edges "
                                                                  "(from requires()) as a Mermaid flowchart")
        if name in ("run", "status"):
            cmd.add_argument("--retrievers", help="comma-separated report rows to build (and what they need), "
                                                  "e.g. bm25,fused-teachers: no generation or training report")
        if name == "ablate":
            from stillhouse.pipelines.ablation import VARIANTS

            cmd.add_argument("--variants", default="",
                             help=f"comma-separated subset of {', '.join(VARIANTS)} (default: all; ensemble only "
                                  "for a student with its own teacher_weights)")
            cmd.add_argument("--student", choices=("dense", "sparse"), default="dense",
                             help="which student the variants train (default: dense)")
            cmd.add_argument("--seeds", default="",
                             help="comma-separated training seeds, e.g. 13,7,42: every variant trains one student "
                                  "per seed and its row is the mean +- sd (default: the config's seed or seeds)")
        if name == "export":
            from stillhouse.retrievers.export import FORMATS

            cmd.add_argument("--to", type=Path, required=True, help="target folder (one sub-folder per format)")
            cmd.add_argument("--formats", default=",".join(FORMATS), help=f"comma-separated subset of "
                                                                          f"{', '.join(FORMATS)} (default: all)")
            cmd.add_argument("--force", action="store_true", help="replace an existing target")
            cmd.add_argument("--index-name", default="stillhouse", help="OpenSearch/Elasticsearch index name")
            cmd.add_argument("--bulk-mb", type=float, default=50.0,
                             help="OpenSearch/Elasticsearch: split the bulk NDJSON into files of at most this many "
                                  "MB (default 50; the services refuse requests over 100 MB by default)")
            cmd.add_argument("--example-query", default="", help="query for the example bodies "
                                                                 "(default: the first judged query)")
        if name in ("run", "ablate"):
            cmd.add_argument("--device", help="cpu, or cuda:N for the N-th GPU only (default: the first visible GPU, "
                                              "else the CPU); every stage's provenance.json records what it ran on")
            cmd.add_argument("--workers", type=int, default=1, help="Luigi worker processes in this process")
            cmd.add_argument("--gpus", default="auto",
                             help="GPU slots: at most this many model stages run at once, each on its own GPU "
                                  "(recorded in its provenance.json); auto: one per visible GPU, 0: no slots. "
                                  "A luigid needs [resources] gpu = the GPUs of all its machines")
            cmd.add_argument("--scheduler-url", help="central luigid, e.g. http://127.0.0.1:8082 "
                                                      "(default: Luigi's local scheduler)")
    find = sub.add_parser("search", help="answer queries with a built retriever or hybrid of CONFIG")
    find.add_argument("config", type=Path)
    find.add_argument("query", nargs="?", help="the query text; '-' reads one query per line from standard input")
    find.add_argument("--retriever", help="a retriever, student or [hybrid] name (default: the first hybrid, "
                                          "else the first retriever)")
    find.add_argument("--dataset", help="the data set whose indexes answer (default: the first the retriever is "
                                        "built for)")
    find.add_argument("--k", type=int, default=10, help="documents per query (default 10)")
    find.add_argument("--queries", type=Path, help="a TSV (id<TAB>text) or JSONL ({_id, text}) file of queries: "
                                                   "answered as a TREC run")
    find.add_argument("--out", type=Path, help="with --queries: the TREC run file (default: standard output)")
    find.add_argument("--timings", type=Path, help="with --queries: answer each query alone (after a warm-up pass) "
                                                   "and write its query cost as JSON here instead of a run")
    find.add_argument("--repeats", type=int, default=2, help="with --timings: timed passes (default 2)")
    find.add_argument("--list", action="store_true", help="list the retrievers and hybrids of CONFIG, their data "
                                                          "sets and whether each is built (TSV)")
    find.add_argument("--data-dir", help="BEIR root folder (default: [data] dir, then $STILLHOUSE_BEIR_DIR)")
    find.add_argument("--workdir", type=Path, help="artifact root (default: the config's workdir)")
    find.add_argument("--datasets", help=argparse.SUPPRESS)
    find.add_argument("-v", "--verbose", action="store_true")
    cut = sub.add_parser("slice", help="copy a small, self-consistent slice of a BEIR data set (for smoke runs)")
    cut.add_argument("source", type=Path, help="a BEIR data set folder, e.g. ../shared/beir/scifact")
    cut.add_argument("target", type=Path, help="new folder (its name is the data set's name in configs)")
    cut.add_argument("--split", default="test")
    cut.add_argument("--extra-splits", default="train", help="comma-separated splits sliced alongside")
    cut.add_argument("--docs", type=int, default=400)
    cut.add_argument("--queries", type=int, default=40)
    cut.add_argument("--corpus-only", action="store_true",
                     help="write a corpus of your own instead: corpus.jsonl with ids renamed, no queries or qrels, "
                          "and examples.jsonl beside it with --queries labeled pairs of --split")
    return parser


def cmd_slice(args: argparse.Namespace) -> int:
    from stillhouse.eval.beir_data import copy_corpus_only, copy_slice

    if args.target.exists():
        raise UserError(f"{args.target}: already exists; pick a new folder")
    if not any((args.source / name).is_file() for name in ("corpus.jsonl", "corpus.jsonl.gz")):
        raise UserError(f"{args.source}: no corpus.jsonl[.gz]; give a BEIR data set folder")
    if args.corpus_only:
        documents, pairs = copy_corpus_only(args.source, args.target, args.split, max_docs=args.docs,
                                            examples=args.queries)
        print(f"{args.target}: corpus.jsonl ({documents} documents, ids renamed) and examples.jsonl ({pairs} labeled "
              f"pairs of {args.split}); no queries or judgements")
        return 0
    extra = tuple(s for s in args.extra_splits.split(",") if s and (args.source / "qrels" / f"{s}.tsv").is_file())
    copy_slice(args.source, args.target, args.split, max_docs=args.docs, max_queries=args.queries,
               extra_splits=extra)
    print(f"{args.target}: {args.docs} documents at most, {args.queries} {args.split} queries"
          f"{' (+ ' + ', '.join(extra) + ')' if extra else ''}")
    return 0


def _prepare(args: argparse.Namespace):
    """Config, work dir, data dir and the DAG's root, with every user error raised up front."""
    from stillhouse.eval.beir_data import data_dir_from_env, resolve_dataset_dir
    from stillhouse.pipelines.config import load_config
    from stillhouse.pipelines.dag import build_roots

    chosen = [d.strip() for d in args.datasets.split(",") if d.strip()] if args.datasets is not None else None
    cfg = load_config(args.config, chosen)
    workdir = (args.workdir or Path(cfg.workdir)).expanduser().resolve()
    data_dir = data_dir_from_env(args.data_dir or cfg.data.dir)
    # The examples' data set too: it may be one --datasets left out (examples from SciFact, students for Cranfield).
    examples = [cfg.generation.examples_dataset] if cfg.generation and cfg.generation.examples_dataset else []
    for dataset in dict.fromkeys([*cfg.data.datasets, *examples]):
        if not (data_dir and (data_dir / dataset).is_dir()):
            resolve_dataset_dir(dataset, data_dir, download=cfg.data.download and data_dir is not None)
    assert data_dir is not None
    only = [n.strip() for n in (getattr(args, "retrievers", None) or "").split(",") if n.strip()]
    return cfg, workdir, build_roots(cfg, workdir, data_dir.resolve(), getattr(args, "eval_split", None), only)


def _failures_since(workdir: Path, since: float) -> list[dict]:
    from stillhouse.pipelines.tasks.base import failure_dir

    found = []
    for path in sorted(failure_dir(str(workdir)).glob("*.json")):
        record = json.loads(path.read_text())
        if record["time"] >= since:
            found.append(record)
    return found


def use_device(device: str | None) -> None:
    """``--device``: narrow the GPUs this process (and its Luigi workers, trainers included) can see."""
    if device is None:
        return
    if device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        return
    index = device.removeprefix("cuda:")
    if not device.startswith("cuda:") or not index.isdigit():
        raise UserError(f"--device {device}: give cpu or cuda:N (N a GPU index)")
    os.environ["CUDA_VISIBLE_DEVICES"] = index
    import torch

    if not torch.cuda.is_available():
        raise UserError(f"--device {device}: no such GPU is visible to torch here; use --device cpu or another "
                        "index")


def use_gpu_slots(gpus: str) -> None:
    """``--gpus``: the GPU slots of this run (``stillhouse.pipelines.gpu_slots``), after ``--device`` narrowed
    what is visible."""
    from stillhouse.pipelines import gpu_slots

    if gpus != "auto" and not gpus.isdigit():
        raise UserError(f"--gpus {gpus}: give auto or a number of GPU slots (0: none)")
    devices = gpu_slots.slot_devices(None if gpus == "auto" else int(gpus))
    gpu_slots.configure(devices)


def cmd_run(args: argparse.Namespace) -> int:
    use_device(args.device)
    use_gpu_slots(args.gpus)
    cfg, workdir, roots = _prepare(args)
    return _build(args, cfg, workdir, roots)


def with_seeds(cfg, seeds: str):
    """``ablate --seeds 13,7,42``: both students' ``seeds`` replaced, so each variant trains one student per seed
    (a seed's training task is shared with any run that trained the same seed)."""
    if not seeds.strip():
        return cfg
    try:
        chosen = [int(seed) for seed in seeds.split(",") if seed.strip()]
    except ValueError:
        raise UserError(f"ablate --seeds {seeds}: give comma-separated integers, e.g. 13,7,42") from None
    if len(set(chosen)) != len(chosen):
        raise UserError(f"ablate --seeds {seeds}: a seed is listed twice")
    from stillhouse.pipelines.config import STUDENT_SECTIONS

    update = {section: getattr(cfg, section).model_copy(update={"seeds": chosen})
              for section in STUDENT_SECTIONS if getattr(cfg, section) is not None}
    return cfg.model_copy(update=update)


def cmd_ablate(args: argparse.Namespace) -> int:
    from stillhouse.pipelines.ablation import ablation_rows, default_variants
    from stillhouse.pipelines.dag import report_task
    from stillhouse.pipelines.tasks.report import AblationReport

    use_device(args.device)
    use_gpu_slots(args.gpus)
    cfg, workdir, roots = _prepare(args)
    cfg = with_seeds(cfg, args.seeds)
    data_dir = Path(roots[0].entries[0]["dataset"]["data_dir"])
    variants = [v.strip() for v in args.variants.split(",") if v.strip()] or default_variants(cfg)
    rows, skipped = ablation_rows(cfg, workdir, data_dir, variants, student=args.student,
                                  eval_split=args.eval_split)
    full = f"{args.student} student: full"
    tested = {**dict(roots[0].baselines), **({"full": full} if any(r["name"] == full for r in rows) else {})}
    return _build(args, cfg, workdir, [report_task(AblationReport, str(workdir), rows, list(cfg.eval.metrics),
                                                   baselines=tested, skipped=skipped)])


def cmd_export(args: argparse.Namespace) -> int:
    from stillhouse.pipelines.dag import built_indexes
    from stillhouse.retrievers.export import checked_formats, export

    formats = checked_formats([f.strip() for f in args.formats.split(",") if f.strip()])  # before reading anything
    if args.bulk_mb <= 0:
        raise UserError("export --bulk-mb: give a positive size in MB")
    cfg, workdir, roots = _prepare(args)
    setup_logging(workdir, args.verbose)
    built, first_query = built_indexes(cfg, roots[0])
    for folder in export(built, args.to.expanduser().resolve(), formats, args.force, args.index_name,
                         args.example_query or first_query, workdir=workdir, bulk_max_bytes=int(args.bulk_mb * 1e6)):
        print(folder)
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    """Rank documents for one query, for each line of standard input, or for a file of queries (a TREC run)."""
    from stillhouse.pipelines.dag import search_task
    from stillhouse.pipelines.search import open_searcher, read_queries, titles
    from stillhouse.retrievers.runs import write_trec_run

    if args.list:
        return _list_searchable(args)
    if (args.query is None) == (args.queries is None):
        raise UserError("search: give a query (or '-' for standard input) or --queries FILE, not both")
    if args.timings and not args.queries:
        raise UserError("search --timings: give the queries to time with --queries FILE")
    if args.timings and not args.timings.parent.is_dir():
        raise UserError(f"search --timings {args.timings}: no folder {args.timings.parent}; create it or choose "
                        "another path")
    if args.k < 1:
        raise UserError("search --k: give a positive number of documents")
    if args.out and not args.out.parent.is_dir():
        raise UserError(f"search --out {args.out}: no folder {args.out.parent}; create it or choose another path")
    queries = read_queries(args.queries) if args.queries else None
    cfg, workdir, roots = _prepare(args)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    entries = roots[0].entries
    names = list(dict.fromkeys(e["name"] for e in entries))
    name = args.retriever or next(iter(cfg.hybrid), None) or names[0]
    choices = [e for e in entries
               if e["name"] == name and (not args.dataset or e["dataset"]["dataset"] == args.dataset)]
    if not choices:
        where = f" on {args.dataset}" if args.dataset else ""
        raise UserError(f"search --retriever: {name!r} is not a retriever of {args.config}{where} "
                        f"({', '.join(names)})")
    task = search_task(str(workdir), dict(choices[0]["dataset"]), dict(choices[0]["retriever"]))
    if not task.complete():
        raise UserError(f"search: {name} on {choices[0]['dataset']['dataset']} is not built yet; run "
                        f"`stillhouse run {args.config}` first")
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # the answer is the output; loading bars would interleave with it
    loading = time.perf_counter()
    searcher = open_searcher(task)
    loaded_in = time.perf_counter() - loading
    print(f"{name} on {choices[0]['dataset']['dataset']}: loaded in {loaded_in:.1f} s", file=sys.stderr)
    if args.timings:
        return _write_query_cost(args, searcher, name, choices[0]["dataset"]["dataset"], queries, loaded_in)
    if queries is not None:
        run, _ = searcher.search(queries, args.k)
        out = args.out or Path("/dev/stdout")
        write_trec_run(run, out, name)
        if args.out:
            print(f"{args.out}: {len(run)} queries, top {args.k} each ({name})")
        return 0
    lines = (line.strip() for line in sys.stdin) if args.query == "-" else iter([args.query])
    names_of = titles(task.dataset_task().out_dir / "corpus.jsonl")  # once, not per query
    for text in (line for line in lines if line):
        started = time.perf_counter()
        run, parts = searcher.search({"q": text}, args.k)
        seconds = time.perf_counter() - started
        hits = run["q"]
        members = list(parts)
        print(f"# {text}  ({name}, {1000 * seconds:.0f} ms)")
        print("rank\tdoc\tscore" + "".join(f"\t{m}" for m in members) + "\ttitle")
        for rank, (doc_id, score) in enumerate(hits.items(), start=1):
            member_scores = "".join(f"\t{parts[m]['q'][doc_id]:.3f}" for m in members)
            print(f"{rank}\t{doc_id}\t{score:.4f}{member_scores}\t{names_of.get(doc_id, '')[:90]}")
        sys.stdout.flush()
    return 0


def _list_searchable(args: argparse.Namespace) -> int:
    """Every retriever and hybrid of the config, per data set, and whether its search is built (TSV)."""
    from stillhouse.pipelines.dag import search_task

    _, workdir, roots = _prepare(args)
    print("retriever\tdataset\tstate")
    for entry in roots[0].entries:
        task = search_task(str(workdir), dict(entry["dataset"]), dict(entry["retriever"]))
        print(f"{entry['name']}\t{entry['dataset']['dataset']}\t{'built' if task.complete() else 'not built'}")
    return 0


def _write_query_cost(args: argparse.Namespace, searcher, name: str, dataset: str, queries: dict[str, str],
                      loaded_in: float) -> int:
    """Time each query alone (``stillhouse.eval.query_cost.timed_searches``) and write the cost as JSON."""
    import platform
    import statistics

    import torch

    from stillhouse.artifacts import write_json_atomic
    from stillhouse.eval.query_cost import timed_searches

    if args.repeats < 1:
        raise UserError("search --repeats: give at least one timed pass")
    times = timed_searches(lambda text: searcher.search({"q": text}, args.k), list(queries.values()), args.repeats)
    cost = {"retriever": name, "dataset": dataset, "queries": len(queries), "repeats": args.repeats, "k": args.k,
            "mean_ms": statistics.fmean(times), "median_ms": statistics.median(times), "load_s": loaded_in,
            "torch_threads": torch.get_num_threads(), "machine": platform.platform()}
    write_json_atomic(args.timings, cost)
    print(f"{args.timings}: {name}, {cost['mean_ms']:.2f} ms per query (mean of {len(times)})")
    return 0


def _build(args: argparse.Namespace, cfg, workdir: Path, roots: list) -> int:
    """Run ``roots`` with Luigi (local or central scheduler), then print and publish each root's page."""
    import luigi
    import luigi.configuration
    import luigi.rpc

    log_file = setup_logging(workdir, args.verbose)
    started = time.time()
    settings = {"workers": args.workers, "local_scheduler": not args.scheduler_url}
    if args.scheduler_url:
        settings.update(central_scheduler_settings(args.scheduler_url))
    log.info("running %s on %s (workdir %s, log %s)", cfg.name, ", ".join(cfg.data.datasets), workdir, log_file)
    from stillhouse.pipelines.gpu_slots import configured_devices

    if slots := configured_devices():
        log.info("GPU slots: %s (at most %d model stages at once)", ", ".join(slots), len(slots))
    from stillhouse.pipelines.tasks.base import WORKER_PID_ENV

    # A stage's user error stops this worker taking more work (SIGUSR1), unless Luigi's handler for it is off.
    if not luigi.configuration.get_config().getboolean("worker", "no_install_shutdown_handler", False):
        os.environ[WORKER_PID_ENV] = str(os.getpid())
    try:
        result = luigi.build(roots, detailed_summary=True, **settings)
        if args.scheduler_url:
            result = _wait_for_other_workers(roots, settings, args.scheduler_url, workdir, started, result)
    except luigi.rpc.RPCError as exc:
        raise UserError(f"--scheduler-url {args.scheduler_url}: cannot reach luigid ({exc}); start it with "
                        "`luigid --port PORT` or drop the option to use the local scheduler") from None
    finally:
        os.environ.pop(WORKER_PID_ENV, None)
    mine = {task.task_id for task in _all_tasks(roots) if not task.complete()}
    failures = [f for f in _failures_since(workdir, started) if f["task_id"] in mine]
    user_errors = [f for f in failures if f["user_error"]]
    if user_errors:
        for failure in user_errors:
            print(f"error: {failure['message']}", file=sys.stderr)
        return EXIT_USER_ERROR
    if failures or not all(root.complete() for root in roots):
        for failure in failures:
            print(f"error: {failure['task_id']} failed: {failure['type']}: {failure['message']} "
                  f"(traceback in {log_file})", file=sys.stderr)
        if not failures:
            print(f"error: the DAG did not complete ({result.status.name}); see {log_file}", file=sys.stderr)
        return 1
    _log_work_done(roots, started)
    for root in roots:
        link, page = root.publish_as
        _publish(root, workdir, link)
        print((root.out_dir / page).read_text())
        print(f"{link}: {workdir / link} -> {root.out_dir}")
    return 0


def central_scheduler_settings(scheduler_url: str) -> dict:
    """Luigi settings for workers of a central ``luigid``: stay while the DAG has pending tasks (idle at most two
    minutes), poll every second, and fail in seconds when the scheduler is unreachable."""
    import luigi.configuration

    config = luigi.configuration.get_config()
    config.set("worker", "keep_alive", "true")
    config.set("worker", "wait_interval", "1")
    config.set("worker", "max_keep_alive_idle_duration", "120")
    config.set("core", "rpc-retry-wait", "5")
    return {"scheduler_url": scheduler_url}


def _wait_for_other_workers(roots: list, settings: dict, scheduler_url: str, workdir: Path, started: float, result):
    """Under a central ``luigid``, return only when this DAG is done or failed, as a local run does.

    A Luigi worker with ``keep_alive`` stays while the scheduler holds PENDING tasks of its DAG, but leaves as soon as
    the rest is RUNNING in another worker (for example the last root), and then reports those tasks as not run. So
    while another worker runs a task of this DAG, wait; once none does, build again, which runs whatever became
    pending (a task of a worker that died is failed by ``luigid`` and runnable again). Luigi has no option for this.
    """
    import luigi
    import luigi.rpc

    scheduler = luigi.rpc.RemoteScheduler(scheduler_url)
    ours = {task.task_id for task in _all_tasks(roots)}
    rebuilt_idle = False
    while not all(root.complete() for root in roots):
        if any(f["task_id"] in ours for f in _failures_since(workdir, started)):
            break
        running = ours & set(scheduler.task_list(status="RUNNING", search=None, limit=False))
        if running:
            log.info("waiting for %d task(s) of this DAG running in other workers: %s", len(running),
                     ", ".join(sorted(running)[:3]))
            rebuilt_idle = False
            time.sleep(5)
            continue
        if rebuilt_idle:  # nothing runs elsewhere and building again did not finish it: report what is left
            break
        result = luigi.build(roots, detailed_summary=True, **settings)
        rebuilt_idle = True
    return result


def _all_tasks(roots) -> list:
    from stillhouse.pipelines.dag import walk

    return list({task.task_id: task for root in roots for task in walk(root)}.values())


def _log_work_done(roots, started: float) -> None:
    """Say how many tasks this run executed (by any worker) and how many were already done. A task whose output is
    gone (an intermediate folder deleted once what it fed was built) was not needed: Luigi stops at complete tasks."""
    records = [t.out_dir / "provenance.json" for t in _all_tasks(roots)]
    present = [json.loads(path.read_text()) for path in records if path.is_file()]
    ran = sum(record["finished"] >= started for record in present)
    log.info("ran %d of %d tasks (%d already done%s)", ran, len(records), len(present) - ran,
             f", {len(records) - len(present)} not needed" if len(present) < len(records) else "")


def _publish(root, workdir: Path, name: str) -> None:
    """Point ``<workdir>/<name>`` at the newest report folder (an atomic symlink swap)."""
    link = workdir / name
    tmp = workdir / f".{name}.{os.getpid()}"
    if tmp.is_symlink():
        tmp.unlink()
    tmp.symlink_to(root.out_dir.relative_to(workdir))
    os.replace(tmp, link)


def cmd_status(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    _, _, roots = _prepare(args)
    if args.graph:
        from stillhouse.pipelines.dag import family_graph, mermaid

        print(mermaid(family_graph(roots)))
        return 0
    table = Table(title=f"stillhouse status: {args.config}")
    for column in ("task", "fingerprint", "state"):
        table.add_column(column)
    done = 0
    tasks = _all_tasks(roots)
    for task in tasks:
        complete = task.complete()
        done += complete
        table.add_row(task.label(), task.fingerprint(), "done" if complete else "pending")
    Console().print(table)
    print(f"{done}/{len(tasks)} tasks done")
    return 0


def require_module(module: str, extra: str, purpose: str) -> None:
    """A UserError naming the extra to install when an optional module is missing."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise UserError(f"{purpose} needs the module {module!r}, which is not installed: pip install "
                        f"'stillhouse[{extra}]' (README, Install)")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command != "slice":
            require_module("faiss", "cpu", "dense indexing and search (FAISS; [gpu] on a CUDA machine)")
        if args.command == "export" and "milvus" in args.formats:
            require_module("pymilvus", "export", "the Milvus Lite export")
        commands = {"run": cmd_run, "status": cmd_status, "ablate": cmd_ablate, "export": cmd_export,
                    "search": cmd_search, "slice": cmd_slice}
        return commands[args.command](args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
