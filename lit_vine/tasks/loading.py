"""Reading the rows of one dataset split: local jsonl / json / parquet files, ``save_to_disk``
folders, folders of ``<split>.<ext>`` files, or hub datasets by name.

Every row comes with its row number (for jsonl: its line number) so that errors can name the
file, the row and the field.
"""

from __future__ import annotations

import json
from pathlib import Path

Rows = list[tuple[int, dict]]
DATA_SUFFIXES = (".jsonl", ".json", ".parquet")


class DataError(ValueError):
    """A data file or row is unusable; the message names the file, the row and the field."""


def load_split(spec: str, source: str | None = None, config: str | None = None) -> tuple[str, Rows]:
    """The rows named by ``spec`` and a label of where they came from.

    ``spec`` is one of: a local file (``.jsonl``/``.json``/``.parquet``); ``<location>@<split>``
    where location is a local folder or a hub dataset name; or a bare split name of ``source``.
    ``config`` is the hub configuration (e.g. ``main`` for ``openai/gsm8k``).
    """
    if "@" in spec:
        location, split = spec.rsplit("@", 1)
    elif spec.endswith(DATA_SUFFIXES) or Path(spec).is_file():
        return spec, read_file(Path(spec))
    elif source is None:
        raise DataError(f"split {spec!r}: not a data file ({', '.join(DATA_SUFFIXES)}) and no source is set")
    else:
        location, split = source, spec
    folder = Path(location).expanduser()
    if folder.is_dir():
        return _load_folder(folder, split)
    if folder.suffix in DATA_SUFFIXES or location.startswith((".", "/", "~")):
        raise DataError(f"data source not found: {location}")
    return _load_hub(location, config, split)


def _load_folder(folder: Path, split: str) -> tuple[str, Rows]:
    if (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file():
        import datasets

        saved = datasets.load_from_disk(str(folder))
        if isinstance(saved, datasets.DatasetDict):
            if split not in saved:
                raise DataError(f"{folder}: no split {split!r} (has {', '.join(saved)})")
            saved = saved[split]
        return f"{folder}@{split}", _numbered(saved.to_list())
    for suffix in DATA_SUFFIXES:
        if (folder / f"{split}{suffix}").is_file():
            path = folder / f"{split}{suffix}"
            return str(path), read_file(path)
    raise DataError(f"{folder}: no saved dataset and no {split}.jsonl / {split}.json / {split}.parquet")


def _load_hub(name: str, config: str | None, split: str) -> tuple[str, Rows]:
    import datasets

    return f"{name}[{config or ''}]@{split}", _numbered(datasets.load_dataset(name, config, split=split).to_list())


def read_file(path: Path) -> Rows:
    """Rows of a jsonl, json (a list of objects, or JSON lines) or parquet file."""
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    if path.suffix == ".parquet":
        import pyarrow.parquet

        return _numbered(pyarrow.parquet.read_table(path).to_pylist())
    raw = path.read_bytes()
    if path.suffix == ".json":
        text = _decode(path, raw)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            if err.msg != "Extra data":  # "Extra data" after the first object: it is JSON lines
                raise DataError(f"{path}, line {err.lineno}: malformed JSON ({err.msg}, column {err.colno})") from None
        else:
            if not isinstance(data, list):
                raise DataError(f"{path}: expected a JSON list of objects, got {type(data).__name__}")
            return _check_objects(path, _numbered(data))
    elif path.suffix != ".jsonl":
        raise DataError(f"{path}: unsupported file type (use {', '.join(DATA_SUFFIXES)})")
    rows = []
    for number, line in enumerate(raw.split(b"\n"), start=1):
        text = _decode(path, line, number)
        if not text.strip():
            continue
        try:
            rows.append((number, json.loads(text)))
        except json.JSONDecodeError as err:
            raise DataError(f"{path}, line {number}: malformed JSON ({err.msg}, column {err.colno})") from None
    return _check_objects(path, rows)


def _decode(path: Path, raw: bytes, line: int | None = None) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = line or raw.count(b"\n", 0, err.start) + 1
        raise DataError(f"{path}, line {line}: not valid UTF-8 (byte {raw[err.start]:#04x})") from None


def _check_objects(path: Path, rows: Rows) -> Rows:
    for number, row in rows:
        if not isinstance(row, dict):
            raise DataError(f"{path}, row {number}: expected a JSON object, got {type(row).__name__}")
    return rows


def _numbered(records: list[dict]) -> Rows:
    return list(enumerate(records, start=1))
