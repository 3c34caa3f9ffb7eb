"""Reading task files: tables (.csv/.tsv/.json/.jsonl/.parquet), CoNLL columns, SQuAD JSON, a folder of splits,
a Hugging Face dataset id, and unlabeled texts for distillation. Each returns plain DataFrames; what the columns
mean is `compress.data.sources`' job.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from compress.core.errors import CompressError
from compress.data.conll import read_conll
from compress.data.squad import read_squad

SPLITS = ("train", "validation", "test")
READERS: dict[str, Callable[..., pd.DataFrame]] = {
    ".csv": pd.read_csv,
    ".tsv": lambda p, **kw: pd.read_csv(p, sep="\t", **kw),
    ".json": pd.read_json,
    ".jsonl": lambda p, **kw: pd.read_json(p, lines=True, **kw),
    ".parquet": pd.read_parquet,
}
_CONLL = (".txt", ".conll")  # CoNLL column files: token classification only


def read_one(path: Path, kind: str = "classification") -> pd.DataFrame:
    conll = kind == "token_classification"
    if path.suffix.lower() in _CONLL and conll:
        return read_conll(path)
    if kind == "question_answering":
        if path.suffix.lower() != ".json":
            raise CompressError(
                f"{path}: question answering reads SQuAD v1.1 .json files (train.json, validation.json, test.json)"
            )
        return read_squad(path)
    reader = READERS.get(path.suffix.lower())
    if path.suffix.lower() in _CONLL and not conll:
        raise CompressError(
            f"{path}: a {path.suffix} file is read as CoNLL columns (task.kind: token_classification); use one of "
            f"{', '.join(READERS)}"
        )
    if reader is None:
        raise CompressError(f"{path}: unsupported file type; use one of {', '.join(READERS)}")
    try:
        return reader(path)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as e:
        raise CompressError(f"{path}: could not be read as {path.suffix} ({e}); check the file") from e


_ALIASES = {"validation": ("valid", "dev")}


def read_files(path: Path, kind: str) -> dict[str, pd.DataFrame]:
    conll = kind == "token_classification"
    if path.is_file():
        return {"train": read_one(path, kind)}
    if path.is_dir():
        found = {}
        for split in SPLITS:
            names = (split, *_ALIASES.get(split, ()))  # CoNLL-2003 ships valid.txt; many folders have dev.*
            suffixes = (*READERS, *(_CONLL if conll else ()))
            files = [p for name in names for p in sorted(path.glob(f"{name}.*")) if p.suffix.lower() in suffixes]
            if files:
                found[split] = read_one(files[0], kind)
        if "train" not in found:
            raise CompressError(
                f"{path}: folder has no train.{{csv,tsv,json,jsonl,parquet,txt}}; add one or point task.dataset at a "
                "file"
            )
        return found
    raise CompressError(f"task.dataset {str(path)!r}: no such file or folder")


def read_hub(name: str, config: str | None) -> dict[str, pd.DataFrame]:
    import datasets

    try:
        dd = datasets.load_dataset(name, config)
    except Exception as e:  # datasets raises many types (ConnectionError, DatasetNotFoundError, ValueError)
        raise CompressError(
            f"could not load Hugging Face dataset {name!r}"
            + (f" (config {config!r})" if config else "")
            + f": {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} - offline? use a local file "
            "or folder for task.dataset, or run once with internet to fill the datasets cache"
        ) from e
    out = {}
    for split, ds in dd.items():
        canonical = {"dev": "validation", "valid": "validation"}.get(split, split)
        if canonical not in SPLITS:
            continue
        df = ds.to_pandas()
        for col, feat in ds.features.items():  # ClassLabel ints -> their names, so labels read well
            if hasattr(feat, "names") and col in df:
                df[col] = df[col].map(lambda i, n=feat.names: n[i] if 0 <= i < len(n) else None)
        if df.notna().any().all():
            out[canonical] = df
    return out


def read_texts(path: str, column: str, pair_column: str | None) -> pd.DataFrame:
    """Texts without labels for distillation: a .txt file (one text per line) or a table with `column`
    (and `pair_column` for sentence-pair tasks); returned with the task's column names `text`[, `text_pair`]."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise CompressError(
            f"unlabeled texts {path!r}: no such file; give a .txt (one text per line) or a table ({', '.join(READERS)})"
        )
    if p.suffix.lower() == ".txt":
        if pair_column:
            raise CompressError(
                f"unlabeled texts {path}: a sentence-pair task needs two texts per example; give a table with "
                f"{column!r} and {pair_column!r}"
            )
        lines = [line.strip() for line in p.read_text(encoding="utf-8", errors="replace").splitlines()]
        return pd.DataFrame({"text": [t for t in lines if t]})
    df = read_one(p)
    wanted = [column, *([pair_column] if pair_column else [])]
    missing = [c for c in wanted if c not in df.columns]
    if missing:
        raise CompressError(
            f"unlabeled texts {path}: no column {missing[0]!r}; columns are {list(df.columns)} - set "
            "distill.unlabeled_column"
        )
    out = pd.DataFrame(
        {"text": df[column].astype(str)} | ({"text_pair": df[pair_column].astype(str)} if pair_column else {})
    ).dropna()
    return out[out["text"].str.strip().str.len() > 0].reset_index(drop=True)
