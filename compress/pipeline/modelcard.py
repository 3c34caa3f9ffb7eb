"""The model card written beside every saved model: what it is, how good and fast it measured, how to load it."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from compress.pipeline.state import RunState


def model_card(state: RunState, name: str) -> str:
    model = state.models()[name]
    task, metric, other = state.task, state.task.metric, state.task.secondary
    role, what = {
        "classification": ("sequence classifier", f"labels {task.labels}"),
        "regression": ("sequence regressor", f"regression of {task.labels[0]!r}: logits[:, 0] is the score"),
        "token_classification": ("token classifier", f"tags {task.labels}: logits[b, t] scores the tags of token t"),
        "question_answering": ("extractive question answerer", "logits[b, t, 0] and [b, t, 1] score token t as the answer's start and end"),
    }[task.kind.name]
    lines = [
        f"# {name}",
        "",
        f"{model.config.model_type} {role} from compress run "
        f"`{state.recipe.name}` (teacher `{state.recipe.teacher.model}`, task `{state.recipe.task.dataset}`, {what}).",
        "",
    ]
    if task.kind.name == "question_answering":
        spec = state.recipe.task
        lines += [
            f'Scores are SQuAD v1.1\'s ({metric}, as fractions): tokenize `(question, context)` with `truncation="only_second"`, '
            f"`max_length={spec.max_length}`, `stride={spec.doc_stride}`, `return_overflowing_tokens=True`, `return_offsets_mapping=True`; "
            "in every window take the 20 best start and end tokens inside the context (`sequence_ids() == 1`), keep pairs with "
            f"start <= end < start + {spec.max_answer_tokens}, and answer with the best start + end score over all windows, "
            "cut from the context by the offsets. The PyTorch model returns `start_logits` and `end_logits`; the ONNX file one "
            "`logits` output with both stacked last.",
            "",
        ]
    if task.kind.per_token:
        lines += [
            f"Scores are entity-level ({metric}: exact spans, seqeval conventions); a word's tag is read at its first "
            "sub-token: tokenize words with `is_split_into_words=True` and take `argmax` at the first token of each word "
            "(`encoding.word_ids()`).",
            "",
        ]
    conv = state.conversions.get(name)
    if conv:
        lines += [f"Converted from the teacher: layers {conv.teacher_layers}, groups {conv.groups}, init {conv.init}.", ""]
    forms = {k: v for k, v in state.evaluations.items() if v.model == name and v.splits}
    if forms:
        reference = next((f.latency.reference for f in state.evaluations.values() if f.latency and f.latency.reference), None)
        lines += [
            f"| form | test {metric} [95% CI] | {other} | latency ms, batch 1: p10 (median) | x the teacher's fastest form |",
            "|---|---|---|---|---|",
        ]
        for key, ev in forms.items():
            t, lat = ev.splits.get("test"), ev.latency
            acc = f"{t[metric]:.4f} [{t.ci95[metric][0]:.3f}, {t.ci95[metric][1]:.3f}]" if t else "-"
            f1 = f"{t[other]:.4f}" if t else "-"
            ms = f"{lat.p10_ms:.2f} ({lat.median_ms:.2f}), seq {lat.seq}, {lat.threads} threads" if lat else "-"
            lines.append(f"| {key} | {acc} | {f1} | {ms} | {f'{lat.speedup:.2f}' if lat and lat.speedup else '-'} |")
        if reference:
            lines += [
                "",
                f"Speed-ups are against the teacher's fastest deploy form ({reference}), timed in the same interleaved run; p10 is the "
                "10th percentile of per-call times (the speed when the machine's other tenants leave it alone).",
            ]
        lines.append("")
    onnx_files = sorted(p.name for p in state.model_dir(name).glob("*.onnx"))
    cls = type(model).__name__
    lines += [
        "## Load it",
        "",
        "```python",
        f"from transformers import AutoTokenizer, {cls}",
        f'model = {cls}.from_pretrained("{name}")',
        f'tokenizer = AutoTokenizer.from_pretrained("{name}")',
        "```",
        "",
    ]
    if onnx_files:
        lines += [
            f"ONNX ({', '.join(onnx_files)}): inputs input_ids, attention_mask, token_type_ids (int64, [batch, seq]); output logits.",
            "",
            "```python",
            "import onnxruntime as ort",
            f'session = ort.InferenceSession("{name}/{onnx_files[-1]}")',
            'logits = session.run(["logits"], dict(tokenizer(["some text"], return_tensors="np")))[0]',
            "```",
            "",
        ]
    folder = state.model_dir(name)
    if (folder / "model.ort").exists():
        lines += ["ONNX Runtime mobile: `model.ort` (`model.int8.ort`) loads in any ONNX Runtime build, including Android and iOS.", ""]
    if (folder / "openvino").is_dir():
        lines += [
            "OpenVINO IR (`openvino/openvino.xml`; NNCF int8 in `openvino-int8/` when exported):",
            "",
            "```python",
            "import openvino as ov",
            f'compiled = ov.Core().compile_model("{name}/openvino/openvino.xml", "CPU")',
            'logits = compiled(dict(tokenizer(["some text"], return_tensors="np")))[0]',
            "```",
            "",
        ]
    if (folder / "model.pte").exists():
        lines += [
            "ExecuTorch program with the XNNPACK delegate (`model.pte`, int8 `model.int8.pte`): batch 1-8 per call, sequence up to "
            "512 tokens (the position table's size if smaller); inputs in the order input_ids, attention_mask, token_type_ids. "
            "Latencies above were measured on x86, not on a phone.",
            "",
            "```python",
            "from executorch.runtime import Runtime",
            f'forward = Runtime.get().load_program("{name}/model.pte").load_method("forward")',
            'enc = tokenizer(["some text"], return_tensors="pt")',
            'logits = forward.execute([enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]])[0]',
            "```",
            "",
        ]
    return "\n".join(lines)
