"""Dataset spec strings ("csv:train.csv", "wds:shards/{0..9}.tar", "synthetic:500") parsed once, into a `DataSpec`.

Training, `data pack`, `data inspect` and evaluation all read a spec through `parse_spec`, and a CSV's delimiter
through `csv_separator`, so the same file is read the same way by every command.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from typing import Any

SCHEMES = ("synthetic", "csv", "tsv", "captions", "wds")
OPTIONS = {"synthetic": {"two_shape_prob", "supersample"},
           "csv": {"image_key", "caption_key", "sep", "root"},
           "captions": set(),
           "wds": {"shuffle_shards", "shuffle_buffer", "resampled"}}
SEPARATORS = ",\t;|"  # what detection chooses among
AUTO = "auto"  # data.csv_separator's spelling of "detect it"


@dataclass(frozen=True)
class DataSpec:
    """scheme: one of SCHEMES; path: file, folder or shard pattern ('' or the sample count for synthetic);
    options: the reader's keyword options (see OPTIONS), already checked against the scheme."""

    scheme: str
    path: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def count(self) -> int | None:
        """N of synthetic:N (None: the caller's default size)."""
        return int(self.path) if self.scheme == "synthetic" and self.path else None

    @property
    def kind(self) -> str:
        """The reader: tsv is a csv with tabs."""
        return "csv" if self.scheme == "tsv" else self.scheme

    def __str__(self) -> str:
        return f"{self.scheme}:{self.path}" if self.path else self.scheme


def _scheme_and_path(spec: str) -> tuple[str, str]:
    scheme, colon, rest = spec.partition(":")
    if colon and scheme in SCHEMES:
        return scheme, rest
    if spec == "synthetic":
        return "synthetic", ""
    lower = spec.lower()
    if lower.endswith(".csv"):
        return "csv", spec
    if lower.endswith(".tsv"):
        return "tsv", spec
    if ".tar" in lower or "{" in spec:
        return "wds", spec
    if os.path.isdir(spec):
        return "captions", spec
    raise ValueError(f"unknown dataset {spec!r}: use synthetic[:N], csv:PATH, tsv:PATH, captions:DIR (images with "
                     "a same-name .txt caption) or wds:PATTERN")


def parse_spec(spec: str | DataSpec, **options: Any) -> DataSpec:
    """'csv:data/train.csv' -> DataSpec('csv', 'data/train.csv'); a bare path is recognised by its form.

    `options` (added to a DataSpec's own) that are None are ignored, and so is sep="auto"; one that does not apply to
    the scheme is an error. tsv: reads tabs unless a sep is given.
    """
    scheme, path = (spec.scheme, spec.path) if isinstance(spec, DataSpec) else _scheme_and_path(spec)
    merged = {**(spec.options if isinstance(spec, DataSpec) else {}),
              **{k: v for k, v in options.items() if v is not None and not (k == "sep" and v == AUTO)}}
    kind = "csv" if scheme == "tsv" else scheme
    unknown = sorted(set(merged) - OPTIONS[kind])
    if unknown:
        raise ValueError(f"option(s) {unknown} do not apply to {kind} datasets (valid: {sorted(OPTIONS[kind])})")
    if scheme == "synthetic" and path and not path.isdigit():
        raise ValueError(f"synthetic:N needs an integer sample count, got {path!r}")
    if scheme == "tsv":
        merged.setdefault("sep", "\t")
    return DataSpec(scheme, path, merged)


def with_csv_settings(spec: str | DataSpec, image_key: str | None = None, caption_key: str | None = None,
                      sep: str | None = None) -> DataSpec:
    """parse_spec plus the CSV settings a command always has (train's data.csv_*, data pack's --csv-*): they apply to
    csv/tsv specs and are ignored for the other kinds."""
    spec = parse_spec(spec)
    return parse_spec(spec, image_key=image_key, caption_key=caption_key, sep=sep) if spec.kind == "csv" else spec


def csv_separator(path: str, sep: str | None = None) -> str:
    """`sep` if set (not None / "auto"); else the delimiter of the header line among , TAB ; | (csv.Sniffer), else ','.

    The header is where the delimiter is surest: column names rarely contain one, captions often do.
    """
    if sep is not None and sep != AUTO:
        return sep
    with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
        header = f.readline()
    try:
        return csv.Sniffer().sniff(header, delimiters=SEPARATORS).delimiter
    except csv.Error:  # one column, or nothing to go on
        return ","
