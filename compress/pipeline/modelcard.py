"""The model card written beside every saved model: what it is, how good and fast it measured, how to load it.

A card is a list of sections. What depends on the task kind (`KIND_NOTES`) and on the deploy files in the model's
folder (`TARGET_SECTIONS`) is one small piece each, so a new kind or deploy target adds a piece here and touches
nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from compress.core.records import FormEval

if TYPE_CHECKING:
    from compress.pipeline.state import RunState

Section = list[str]  # Markdown lines


def model_card(state: RunState, name: str) -> str:
    sections = [
        _title(state, name),
        _kind_note(state),
        _conversion(state, name),
        _scores(state, name),
        _load(state, name),
    ]
    folder = state.model_dir(name)
    sections += [piece(name, folder) for piece in TARGET_SECTIONS]
    return "\n".join(line for section in sections for line in section)


ROLES = {  # kind -> (what the model is, what its logits mean)
    "classification": ("sequence classifier", "labels {labels}"),
    "regression": ("sequence regressor", "regression of {first!r}: logits[:, 0] is the score"),
    "token_classification": ("token classifier", "tags {labels}: logits[b, t] scores the tags of token t"),
    "question_answering": (
        "extractive question answerer",
        "logits[b, t, 0] and [b, t, 1] score token t as the answer's start and end",
    ),
}


def _title(state: RunState, name: str) -> Section:
    task, recipe = state.task, state.recipe
    role, what = ROLES[task.kind.name]
    what = what.format(labels=task.labels, first=task.labels[0] if task.labels else None)
    model_type = state.models()[name].config.model_type
    return [
        f"# {name}",
        "",
        f"{model_type} {role} from compress run `{recipe.name}` (teacher `{recipe.teacher.model}`, "
        f"task `{recipe.task.dataset}`, {what}).",
        "",
    ]


def _qa_note(state: RunState) -> Section:
    spec, metric = state.recipe.task, state.task.metric
    return [
        f"Scores are SQuAD v1.1's ({metric}, as fractions): tokenize `(question, context)` with "
        f'`truncation="only_second"`, `max_length={spec.max_length}`, `stride={spec.stride}`, '
        "`return_overflowing_tokens=True`, `return_offsets_mapping=True`; in every window take the 20 best start and "
        "end tokens inside the context (`sequence_ids() == 1`), keep pairs with "
        f"start <= end < start + {spec.max_answer_tokens}, and answer with the best start + end score over all "
        "windows, cut from the context by the offsets. The PyTorch model returns `start_logits` and `end_logits`; "
        "the ONNX file one `logits` output with both stacked last.",
        "",
    ]


def _token_note(state: RunState) -> Section:
    return [
        f"Scores are entity-level ({state.task.metric}: exact spans, seqeval conventions); a word's tag is read at its "
        "first sub-token: tokenize words with `is_split_into_words=True` and take `argmax` at the first token of "
        "each word (`encoding.word_ids()`).",
        "",
    ]


KIND_NOTES: dict[str, Callable[[RunState], Section]] = {
    "question_answering": _qa_note,
    "token_classification": _token_note,
}


def _kind_note(state: RunState) -> Section:
    note = KIND_NOTES.get(state.task.kind.name)
    return note(state) if note else []


def _conversion(state: RunState, name: str) -> Section:
    conv = state.conversions.get(name)
    if not conv:
        return []
    width = f", width {conv.hidden_size}" if conv.hidden_size else ""
    return [
        f"Converted from the teacher: layers {conv.teacher_layers}{width}, FFN {conv.intermediate_size}, groups "
        f"{conv.groups}, init {conv.init}.",
        "",
    ]


def _scores(state: RunState, name: str) -> Section:
    """One row per evaluated form: test score with its interval, the secondary metric, latency and speed-up."""
    forms = {k: v for k, v in state.evaluations.items() if v.model == name and v.splits}
    if not forms:
        return []
    metric, other = state.task.metric, state.task.secondary
    lines = [
        f"| form | test {metric} [95% CI] | {other} | latency ms, batch 1: p10 (median) "
        "| x the teacher's fastest form |",
        "|---|---|---|---|---|",
        *(_score_row(key, ev, metric, other) for key, ev in forms.items()),
    ]
    evaluations = state.evaluations.values()
    reference = next((f.latency.reference for f in evaluations if f.latency and f.latency.reference), None)
    if reference:
        lines += [
            "",
            f"Speed-ups are against the teacher's fastest deploy form ({reference}), timed in the same interleaved "
            "run; p10 is the 10th percentile of per-call times (the speed when the machine's other tenants leave it "
            "alone).",
        ]
    return [*lines, ""]


def _score_row(key: str, ev: FormEval, metric: str, other: str) -> str:
    t, lat = ev.splits.get("test"), ev.latency
    score = f"{t[metric]:.4f} [{t.ci95[metric][0]:.3f}, {t.ci95[metric][1]:.3f}]" if t else "-"
    second = f"{t[other]:.4f}" if t else "-"
    ms = f"{lat.p10_ms:.2f} ({lat.median_ms:.2f}), seq {lat.seq}, {lat.threads} threads" if lat else "-"
    speedup = f"{lat.speedup:.2f}" if lat and lat.speedup else "-"
    return f"| {key} | {score} | {second} | {ms} | {speedup} |"


def _python(text: str, *code: str) -> Section:
    """A paragraph, then `code` as a Python block."""
    return [text, "", "```python", *code, "```", ""]


def _load(state: RunState, name: str) -> Section:
    cls = type(state.models()[name]).__name__
    return _python(
        "## Load it",
        f"from transformers import AutoTokenizer, {cls}",
        f'model = {cls}.from_pretrained("{name}")',
        f'tokenizer = AutoTokenizer.from_pretrained("{name}")',
    )


def _onnx(name: str, folder: Path) -> Section:
    files = sorted(p.name for p in folder.glob("*.onnx"))
    if not files:
        return []
    return _python(
        f"ONNX ({', '.join(files)}): inputs input_ids, attention_mask, token_type_ids (int64, [batch, seq]); "
        "output logits.",
        "import onnxruntime as ort",
        f'session = ort.InferenceSession("{name}/{files[-1]}")',
        'logits = session.run(["logits"], dict(tokenizer(["some text"], return_tensors="np")))[0]',
    )


@dataclass(frozen=True)
class TargetPiece:
    """What a card says of one deploy target when its file is in the model's folder: a paragraph and an example."""

    marker: str  # the file or folder the export pass writes for the target
    text: str
    code: tuple[str, ...] = ()  # Python lines; {name} is the model's folder

    def __call__(self, name: str, folder: Path) -> Section:
        if not (folder / self.marker).exists():
            return []
        code = [line.replace("{name}", name) for line in self.code]
        return _python(self.text, *code) if code else [self.text, ""]


ORT_MOBILE = TargetPiece(
    "model.ort",
    "ONNX Runtime mobile: `model.ort` (`model.int8.ort`) loads in any ONNX Runtime build, including Android and iOS.",
)
OPENVINO = TargetPiece(
    "openvino",
    "OpenVINO IR (`openvino/openvino.xml`; NNCF int8 in `openvino-int8/` when exported):",
    (
        "import openvino as ov",
        'compiled = ov.Core().compile_model("{name}/openvino/openvino.xml", "CPU")',
        'logits = compiled(dict(tokenizer(["some text"], return_tensors="np")))[0]',
    ),
)
EXECUTORCH = TargetPiece(
    "model.pte",
    "ExecuTorch program with the XNNPACK delegate (`model.pte`, int8 `model.int8.pte`): batch 1-8 per call, "
    "sequence up to 512 tokens (the position table's size if smaller); inputs in the order input_ids, "
    "attention_mask, token_type_ids. Latencies above were measured on x86, not on a phone.",
    (
        "from executorch.runtime import Runtime",
        'forward = Runtime.get().load_program("{name}/model.pte").load_method("forward")',
        'enc = tokenizer(["some text"], return_tensors="pt")',
        'logits = forward.execute([enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]])[0]',
    ),
)
# One piece per deploy target, each given the model's name and folder; empty when the folder has no such file.
TARGET_SECTIONS: list[Callable[[str, Path], Section]] = [_onnx, ORT_MOBILE, OPENVINO, EXECUTORCH]
