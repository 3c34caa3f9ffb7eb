"""The `compress` command line. Every user error is one line on stderr and exit code 2."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from compress.core.errors import CompressError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help=__doc__)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 140)  # logs in files/CI: no 80-column wrap
_debug = False


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="show full tracebacks")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="warnings and errors only")] = False,
) -> None:
    """Compress BERT teachers into fast SqueezeBERT students."""
    global _debug
    _debug = debug
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=err, show_path=False, rich_tracebacks=debug)],
        force=True,
    )
    for noisy in ("datasets", "urllib3", "httpx", "filelock", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # transformers resets its logger level on import; set it after
    if not debug:
        warnings.filterwarnings("ignore")


Sets = Annotated[list[str] | None, typer.Option("--set", "-s", help="override a recipe key: passes.distill.epochs=3")]


@app.command()
def validate(recipe: Path, set_: Sets = None) -> None:
    """Check a recipe (keys, types, pass names and options) without running it."""
    from compress.pipeline.registry import resolve_passes
    from compress.recipe import load_recipe
    from compress.study.search import check_study

    r = load_recipe(recipe, set_)
    resolve_passes(r, str(recipe))
    if r.search is not None:  # all that compress search would refuse before any work
        check_study(r, str(recipe))
    typer.echo(f"{recipe}: ok ({len(r.passes)} passes: {', '.join(p.name for p in r.passes)})")


@app.command()
def run(recipe: Path, set_: Sets = None) -> None:
    """Run a recipe; results go to <output_dir>/<name>/."""
    from compress.pipeline.runner import run_recipe
    from compress.recipe import load_recipe

    result = run_recipe(load_recipe(recipe, set_), str(recipe))
    typer.echo(f"results: {result.folder}")


@app.command("glue")
def glue_cmd(
    glue_dir: Annotated[
        Path,
        typer.Argument(
            help="GLUE folder: CoLA/, SST-2/, MRPC/, STS-B/, QQP/, MNLI/, QNLI/, RTE/ with train.tsv, dev.tsv"
        ),
    ],
    recipe: Annotated[
        Path | None,
        typer.Option(help="recipe template; its task section is replaced per task (default: the shipped one)"),
    ] = None,
    set_: Sets = None,
    tasks: Annotated[
        str | None, typer.Option(help="comma-separated subset, e.g. CoLA,STS-B,MNLI-m (default: every folder found)")
    ] = None,
    out: Annotated[Path, typer.Option(help="where glue.md and glue.json go")] = Path("reports/glue"),
) -> None:
    """Run one recipe over the GLUE tasks (dev = test); a paper-style table of teacher vs student and speed-ups."""
    from compress.glue.glue import TEMPLATE, run_glue
    from compress.recipe import load_recipe

    names = [t.strip() for t in tasks.split(",") if t.strip()] if tasks else None
    template = recipe or TEMPLATE
    folder = run_glue(glue_dir, load_recipe(template, set_), str(template), names, out)
    typer.echo(f"GLUE table: {folder}/glue.md ({folder}/glue.json)")


@app.command("search")
def search_cmd(
    recipe: Path,
    set_: Sets = None,
    storage: Annotated[
        str | None,
        typer.Option(
            help="sqlite:///..., postgresql://..., journal:PATH or env COMPRESS_STORAGE; "
            "default sqlite:///<output_dir>/<study>/study.db"
        ),
    ] = None,
    workers: Annotated[
        int, typer.Option(min=1, help="worker processes on this machine (they share the CPU threads)")
    ] = 1,
    resume: Annotated[
        bool, typer.Option("--resume", help="continue (or join) an existing study with the same space")
    ] = False,
    force_new: Annotated[
        bool, typer.Option("--force-new", help="delete an existing study of this name and start over")
    ] = False,
    worker: Annotated[int | None, typer.Option(hidden=True)] = None,
) -> None:
    """Search the recipe's search: space with Optuna (accuracy vs latency), then finalize (search.finalize.top_k)."""
    from compress.finalize.finalize import finalize
    from compress.study.info import read_info
    from compress.study.search import search

    folder = search(recipe, set_, storage=storage, workers=workers, resume=resume, force_new=force_new, worker=worker)
    if worker is not None:
        return
    if read_info(folder).search.finalize.top_k:
        finalize(folder, storage=storage)
    typer.echo(f"study: {folder} (next: compress report {folder})")


@app.command("finalize")
def finalize_cmd(
    study: Annotated[Path, typer.Argument(help="a study folder (results/<study>)")],
    top_k: Annotated[
        int | None,
        typer.Option("--top-k", min=1, help="front students to retrain; default search.finalize.top_k (or 1)"),
    ] = None,
    retime: Annotated[
        bool, typer.Option("--retime", help="only time the finished final students, baselines and teacher again")
    ] = False,
    out: Annotated[
        Path | None, typer.Option(help="where to write the timing record; default <study>/final/frontier.json")
    ] = None,
    storage: Annotated[
        str | None, typer.Option(help="the study's storage URL, if search.json recorded it without its password")
    ] = None,
) -> None:
    """Retrain the best distinct front students at full budget, train the baselines, time them all with the teacher."""
    from compress.finalize.finalize import finalize

    path = finalize(study, top_k, retime=retime, out=out, storage=storage)
    typer.echo(f"frontier: {path} (next: compress report {study})")


@app.command("report")
def report_cmd(
    sources: Annotated[
        list[Path], typer.Argument(help="study folders (results/<study>) or run folders; several are overlaid")
    ],
    out: Annotated[Path | None, typer.Option(help="report folder; default reports/<name of the first source>")] = None,
    storage: Annotated[
        str | None, typer.Option(help="a study's storage URL, if search.json recorded it without its password")
    ] = None,
) -> None:
    """Pareto report: index.html (interactive, offline), report.md + pareto.png, trials.csv."""
    from compress.report.report import build

    folder = build(sources, out or Path("reports") / "-".join(s.name for s in sources), storage)
    typer.echo(f"report: {folder}/index.html ({folder}/report.md)")


@app.command()
def passes() -> None:
    """List available passes (built-in and plugins) and their options."""
    from compress.pipeline.registry import available_passes, describe_config

    console = Console()
    for name, cls in available_passes().items():
        table = Table(title=f"[bold]{name}[/] - {cls.summary()}", title_justify="left", show_edge=False)
        for col in ("option", "type", "default", "description"):
            table.add_column(col)
        for row in describe_config(cls.Config):
            table.add_row(*row)
        console.print(table)
        console.print()


@app.command("convert")
def convert_cmd(
    teacher: Annotated[str, typer.Argument(help="BERT folder (e.g. results/<run>/models/teacher) or hub id")],
    out: Annotated[Path, typer.Argument(help="output folder (save_pretrained layout, tokenizer included)")],
    layers: Annotated[int | None, typer.Option(help="number of layers to keep (evenly spaced)")] = None,
    groups: Annotated[str, typer.Option(help="q,k,v,post_attention,intermediate,output")] = "4,4,4,1,4,4",
    init: Annotated[str, typer.Option(help="permuted | identity | random")] = "permuted",
    intermediate_size: Annotated[int | None, typer.Option(help="smaller FFN width")] = None,
) -> None:
    """Convert a BERT into a SqueezeBERT student, no recipe needed.

    `permuted` here reorders channels only; the least-squares block fit needs task data, so it runs in
    the recipe's `convert` pass (option fit_samples).
    """
    import json

    from compress.convert.build import convert
    from compress.core.atomic import atomic_dir
    from compress.core.groups import Groups
    from compress.modeling.loading import load_student, load_tokenizer

    try:
        parsed = Groups.parse(groups)
    except ValueError as e:
        raise CompressError(f"--groups: {e}") from None
    model = load_student(teacher)
    student, report = convert(model, layers, parsed, intermediate_size, init)
    tokenizer = load_tokenizer(teacher)
    with atomic_dir(out) as tmp:
        student.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "conversion.json").write_text(json.dumps(report, indent=2))
    kept = report.get("energy_kept_per_layer")
    typer.echo(
        f"{out}: SqueezeBERT, layers {report['layers']}, groups {groups}"
        + (f", energy kept {sum(kept) / len(kept):.3f}" if kept else "")
    )


@app.command("bench")
def bench_cmd(
    path: Annotated[Path, typer.Argument(help="a model folder or a run folder (results/<name>)")],
    backends: Annotated[
        str, typer.Option(help="comma list of torch, torch-int8, ort, ort-int8, openvino[-int8], executorch[-int8]")
    ] = "torch,ort,ort-int8",
    batch: int = 1,
    seq: int = 128,
    threads: int = 2,
    runs: Annotated[int, typer.Option(min=5)] = 30,
    repeats: Annotated[
        int, typer.Option(min=1, help="independent measurements; >= 3 re-runs one slowed by machine load")
    ] = 1,
    json_out: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """Latency (p10, median, p90, IQR, CV) of saved models under torch eager and ONNX Runtime fp32/int8."""
    import json

    from compress.deploy.bench import bench, table

    rows = bench(path, [b.strip() for b in backends.split(",") if b.strip()], batch, seq, threads, runs, repeats)
    if json_out:
        typer.echo(json.dumps(rows, indent=2))
        return
    Console(width=max(120, Console().width)).print(table(rows, batch, seq, threads, runs, repeats))


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        app(standalone_mode=True)
    except CompressError as e:
        if _debug:
            raise
        # messages hold [brackets]: extras, keys
        err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
