"""What an uploaded file holds, read once on upload: a table's columns (CSV, Parquet), an npz's arrays, a zip's images.

The file is read as a stream (a CSV row at a time, an npz array's header before its data, a
zip's images one by one), so a large upload is summarized without being held in memory. Every
refusal names where: a CSV's line (and column), an npz's array, a zip's member.
"""

from __future__ import annotations

import codecs
import csv
import itertools
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from numpy.lib import format as fmt

from api.errors import ApiError
from tuner.errors import DataError, Issue
from tuner.train import archive_images, scan_images

__all__ = ["summarize"]

MISSING = ("", "nan", "na", "n/a", "null", "none")  # as the CSV reader counts a missing target
_BOOLS = ("true", "false")
_MAX_LINE_BYTES = 16 * 2**20
_KINDS = ("boolean", "integer", "float", "string")  # a column's dtype: the widest kind any of its values needs


def _refuse(where: str, message: str) -> ApiError:
    return ApiError(422, "invalid_dataset", f"the file cannot be read: {where}: {message}",
                    [Issue("body", f"{where}: {message}")])


def summarize(path: Path, fmt: str, *, max_files: int = 100_000, max_unpacked_bytes: int = 2 * 2**30
              ) -> dict[str, Any]:
    """``{rows, columns: [{name, dtype, missing}]}`` for a table, ``{rows, shape: {array: [dims]}}`` for an npz,
    ``{rows, images: {classes: {class: images}, sizes}, shape}`` for a zip of images.

    Args:
        max_files, max_unpacked_bytes: a zip's caps on its members and on their unpacked bytes.

    Raises:
        ApiError: 422 ``invalid_dataset`` naming the line, column, array or member that cannot be read, or
            the zip member past ``max_files``; 413 ``body_too_large`` naming the member past
            ``max_unpacked_bytes``.
    """
    with path.open("rb") as fh:
        if fmt == "zip":
            return _zip(fh, max_files, max_unpacked_bytes)
        return {"csv": _csv, "npz": _npz, "parquet": _parquet}[fmt](fh)


def _lines(fh: BinaryIO) -> Iterator[str]:
    for number in itertools.count(1):
        raw = fh.readline(_MAX_LINE_BYTES)
        if not raw:
            return
        if len(raw) == _MAX_LINE_BYTES and not raw.endswith(b"\n"):
            raise _refuse(f"line {number}", f"longer than {_MAX_LINE_BYTES // 2**20} MiB")
        try:
            yield raw.removeprefix(codecs.BOM_UTF8 if number == 1 else b"").decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _refuse(f"line {number}", f"not UTF-8 text (byte {exc.start + 1} of the line)") from None


def _kind(value: str) -> int:
    """The index in ``_KINDS`` of the narrowest kind that holds ``value``."""
    if value.lower() in _BOOLS:
        return 0
    try:
        int(value)
        return 1
    except ValueError:
        pass
    try:
        float(value)
        return 2
    except ValueError:
        return 3


def _csv(fh: BinaryIO) -> dict[str, Any]:
    reader = csv.reader(_lines(fh), strict=True)  # a stray or unclosed quote is refused, not read as text
    header: list[str] | None = None
    kinds: list[int] = []
    missing: list[int] = []
    rows = 0
    try:
        for row in reader:
            if not row:
                continue
            if header is None:
                header = [name.strip() for name in row]
                if dup := sorted({n for n in header if header.count(n) > 1}):
                    raise _refuse(f"line {reader.line_num}", f"the header names column {dup[0]!r} twice")
                kinds, missing = [-1] * len(header), [0] * len(header)
                continue
            if len(row) != len(header):
                raise _refuse(f"line {reader.line_num}", f"{len(row)} fields, but the header has {len(header)}")
            rows += 1
            for i, value in enumerate(row):
                value = value.strip()
                if value.lower() in MISSING:
                    missing[i] += 1
                else:
                    kinds[i] = max(kinds[i], _kind(value))
    except csv.Error as exc:
        raise _refuse(f"line {reader.line_num}", f"not valid CSV ({exc})") from None
    if header is None or rows == 0:
        raise _refuse("line 1" if header is None else "line 2", "a CSV needs a header row and at least one data row")
    columns = [{"name": name, "dtype": _KINDS[k] if k >= 0 else "empty", "missing": m}
               for name, k, m in zip(header, kinds, missing, strict=True)]
    return {"rows": rows, "columns": columns}


def _arrow_dtype(kind: Any) -> str:
    import pyarrow as pa

    for test, name in ((pa.types.is_boolean, "boolean"), (pa.types.is_integer, "integer"),
                       (pa.types.is_floating, "float"), (pa.types.is_string, "string"),
                       (pa.types.is_large_string, "string"), (pa.types.is_dictionary, "string")):
        if test(kind):
            return name
    return str(kind)


def _parquet(fh: BinaryIO) -> dict[str, Any]:
    """Columns and their missing values, counted one record batch at a time (never the whole table)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pfile = pq.ParquetFile(fh)
        schema = pfile.schema_arrow
        missing = [0] * len(schema)
        for batch in pfile.iter_batches(batch_size=65_536):
            for i, column in enumerate(batch.columns):
                missing[i] += column.null_count
    except (pa.ArrowException, OSError) as exc:
        raise _refuse("the file", f"not Parquet: {str(exc)[:300]}") from None
    if len(set(schema.names)) != len(schema.names):
        dup = next(n for n in schema.names if schema.names.count(n) > 1)
        raise _refuse(f"column {dup!r}", "named twice")
    columns = [{"name": f.name, "dtype": _arrow_dtype(f.type), "missing": m}
               for f, m in zip(schema, missing, strict=True)]
    return {"rows": pfile.metadata.num_rows, "columns": columns}


def _npz(fh: BinaryIO) -> dict[str, Any]:
    """The shape of every array, read from the headers: no array is loaded, no pickle accepted."""
    shapes: dict[str, list[int]] = {}
    try:
        with zipfile.ZipFile(fh) as archive:
            for info in archive.infolist():
                name = info.filename.removesuffix(".npy")
                with archive.open(info) as member:
                    try:
                        version = fmt.read_magic(member)
                        read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
                        shape, _, dtype = read(member)
                    except ValueError as exc:
                        raise _refuse(f"array {name!r}", f"not a .npy array ({exc})") from None
                if dtype.hasobject:
                    raise _refuse(f"array {name!r}", "holds Python objects (pickles are not accepted)")
                shapes[name] = [int(d) for d in shape]
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise _refuse("the archive", f"not an .npz (a zip of .npy arrays): {exc}") from None
    for key in ("X", "y"):
        if key not in shapes:
            raise _refuse(f"array {key!r}", f"missing; the file holds {', '.join(shapes) or 'no arrays'}")
    X, y = shapes["X"], shapes["y"]
    if len(X) < 2 or y != X[:1]:
        raise _refuse("array 'y'", f"X must have an examples axis and y one value per example, but got X {X}, y {y}")
    return {"rows": X[0], "shape": shapes}


def _zip(fh: BinaryIO, max_files: int, max_unpacked_bytes: int) -> dict[str, Any]:
    """Classes, image counts and sizes of a zip of ``<class>/<image>`` members, each image decoded once.

    The caps are checked on the central directory before any member is read; ``zipfile`` reads no
    member past the size the directory declares, so the declared sizes bound what is unpacked.
    """
    try:
        with zipfile.ZipFile(fh) as archive:
            infos = archive.infolist()
            if len(infos) > max_files:
                raise _refuse(f"member {infos[max_files].filename!r}", f"past the {max_files} members a zip may "
                              "hold (REGTUNE_MAX_UPLOAD_FILES)")
            total = 0
            for info in infos:
                total += info.file_size
                if total > max_unpacked_bytes:
                    raise ApiError(413, "body_too_large", f"the zip would unpack to more than {max_unpacked_bytes} "
                                   f"bytes (REGTUNE_MAX_UNPACKED_BYTES), past it at member {info.filename!r}",
                                   [Issue("body", f"member {info.filename!r}: past REGTUNE_MAX_UNPACKED_BYTES")])
            try:
                scan = scan_images(archive_images(archive, field="body"), "the zip", field="body", verify=True)
            except DataError as exc:
                raise _refuse("the zip", exc.issues[0].message) from None
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise _refuse("the archive", f"not a zip: {exc}") from None
    n = len(scan.files)
    sizes = [[h, w] for (h, w), _ in scan.sizes.most_common(10)]
    shape = {"X": [n, scan.channels, *sizes[0]]} if len(scan.sizes) == 1 else None
    return {"rows": n, "images": {"classes": scan.counts, "sizes": sizes}, "shape": shape}
