"""Image folders: one subfolder per class of PNG or JPEG files, read through Pillow as (n, C, H, W) arrays.

The images come from a folder under REGTUNE_DATA_DIR (``source: images``) or from an uploaded
zip of such a folder (``source: upload``), read member by member and never unpacked onto disk.
Either way the class of an image is the name of its folder, every image is converted to
grayscale or RGB, resized to one size and scaled to [0, 1]; standardization (per channel, on
the training split) is left to the caller, as for every other source.

A zip member is refused, not skipped, when it could do harm unpacked: an absolute path, a
``..`` part, a symbolic link (``unsafe_member``). Hidden files and folders (``.DS_Store``,
macOS's ``__MACOSX``) and files that are not PNG or JPEG are skipped.
"""

from __future__ import annotations

import re
import stat
import warnings
import zipfile
from collections import Counter
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np

from tuner.errors import DataError
from tuner.spec import DatasetSpec, path_rule

if TYPE_CHECKING:
    from PIL.Image import Image as PilImage

__all__ = ["IMAGE_SUFFIXES", "ImageFile", "ImageScan", "archive_images", "folder_images", "read_images",
           "scan_images", "unsafe_member"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_FORMATS = ("PNG", "JPEG")  # the decoders Pillow may try (a camera's MPO opens as a JPEG)
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
# what Pillow raises on a file it cannot read, and zipfile on a member compressed by a method it lacks
# (NotImplementedError) or whose CRC does not match (BadZipFile)
_UNREADABLE = (OSError, ValueError, SyntaxError, NotImplementedError, zipfile.BadZipFile)
_SKIPPED = "__MACOSX"  # macOS's resource forks beside the files of a zip it made


@dataclass(frozen=True)
class ImageFile:
    """One image: its class (the folder's name), its name in errors (``cat/001.png``), how to open it."""

    label: str
    name: str
    open: Callable[[], IO[bytes]]


@dataclass(frozen=True)
class ImageScan:
    """What the images hold, read from their headers (or, with ``verify``, from their decoded pixels)."""

    files: list[ImageFile]
    counts: dict[str, int]  # images per class, by class name
    gray: bool  # every image is grayscale: channels default to 1
    sizes: Counter[tuple[int, int]]  # (height, width) -> images of that size
    first_of_size: dict[tuple[int, int], str]  # a name of one image of each size, for errors

    @property
    def channels(self) -> int:
        return 1 if self.gray else 3


def unsafe_member(info: zipfile.ZipInfo) -> str | None:
    """The rule a zip member breaks, or None: it must unpack to a plain file or folder inside the archive's root."""
    name = info.filename
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        return "must be named without control characters"
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "must be a relative path (an absolute one would unpack outside the folder)"
    if ".." in parts:
        return "must not have a '..' part (it would unpack outside the folder)"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "must not be a symbolic link"
    if info.flag_bits & 0x1:
        return "is encrypted, which cannot be read"
    return None


def _skipped(parts: tuple[str, ...]) -> bool:
    return any(p.startswith(".") or p == _SKIPPED for p in parts) or not parts[-1].lower().endswith(IMAGE_SUFFIXES)


def _opener(path: Path) -> Callable[[], IO[bytes]]:
    return lambda: path.open("rb")


def folder_images(root: Path, rel: str) -> list[ImageFile]:
    """The images of the folder ``rel`` under ``root``: ``<class>/<image>`` files, links kept inside ``root``.

    Raises:
        DataError: on ``dataset.path``: the folder breaks the path rules, is missing, or leads out of ``root``.
    """
    if (broken := path_rule(rel)) is not None:
        raise DataError.one("dataset.path", broken, rel)
    folder = (root / rel).resolve()
    if not folder.is_relative_to(root) or any(p.startswith(".") for p in folder.relative_to(root).parts):
        raise DataError.one("dataset.path", f"must stay inside REGTUNE_DATA_DIR and name no hidden folder, but "
                            f"{rel!r} leads to {folder}", rel)
    if not folder.is_dir():
        raise DataError.one("dataset.path", f"{rel!r} in {root} (REGTUNE_DATA_DIR, or a 'data' folder in the "
                            "working directory when it is unset) must be a folder with one subfolder per class",
                            rel)
    files: list[ImageFile] = []
    for sub in sorted(folder.iterdir()):
        if sub.name.startswith(".") or sub.name == _SKIPPED or not sub.is_dir():
            continue
        for path in sorted(sub.iterdir()):
            if _skipped((sub.name, path.name)):
                continue
            name = f"{sub.name}/{path.name}"
            real = path.resolve()
            if not real.is_relative_to(root) or any(p.startswith(".") for p in real.relative_to(root).parts):
                raise DataError.one("dataset.path", f"{name} in {rel!r} is a link out of REGTUNE_DATA_DIR or to a "
                                    "hidden file", rel)
            if not real.is_file():  # a FIFO would block the read, a folder is no image
                raise DataError.one("dataset.path", f"{name} in {rel!r} must be a regular file", rel)
            files.append(ImageFile(label=sub.name, name=name, open=_opener(real)))
    return files


def archive_images(archive: zipfile.ZipFile, field: str = "dataset.id") -> list[ImageFile]:
    """The images of a zip of ``<class>/<image>`` members (under one top folder or none).

    Raises:
        DataError: on ``field``, naming the member and the rule it breaks (``unsafe_member``, or an image
            outside a class folder).
    """
    members: list[tuple[tuple[str, ...], zipfile.ZipInfo]] = []
    for info in archive.infolist():
        if (broken := unsafe_member(info)) is not None:
            raise DataError.one(field, f"member {info.filename!r} {broken}", info.filename)
        parts = tuple(p for p in info.filename.replace("\\", "/").split("/") if p not in ("", "."))
        if info.is_dir() or not parts or _skipped(parts):
            continue
        members.append((parts, info))
    tops = {parts[0] for parts, _ in members}
    strip = 1 if len(tops) == 1 and all(len(parts) == 3 for parts, _ in members) else 0  # zip of one folder
    files = []
    for parts, info in sorted(members, key=lambda m: m[0]):
        inner = parts[strip:]
        if len(inner) != 2:
            raise DataError.one(field, f"member {info.filename!r} must sit in a class folder (<class>/<image>, "
                                "the folder's name is the class), under one top folder or none", info.filename)
        files.append(ImageFile(label=inner[0], name="/".join(inner),
                               open=lambda info=info: archive.open(info)))  # type: ignore[misc]
    return files


def _open_image(file: ImageFile, where: str, field: str) -> tuple[IO[bytes], PilImage]:
    from PIL import Image

    fh = file.open()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # a huge image is refused, not read
            return fh, Image.open(fh, formats=_FORMATS)  # no other decoder is tried on untrusted bytes
    except (*_UNREADABLE, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        fh.close()
        reason = "it is not a PNG or JPEG image" if isinstance(exc, Image.UnidentifiedImageError) else str(exc)
        raise DataError.one(field, f"{file.name} in {where} cannot be read as an image: {reason}",
                            file.name) from None


def scan_images(files: list[ImageFile], where: str, field: str = "dataset.path", verify: bool = False) -> ImageScan:
    """Classes, sizes and modes of ``files``, read from each image's header (``verify``: decoding it all).

    Raises:
        DataError: on ``field``: no images, fewer than 2 classes, or a file Pillow cannot read (named).
    """
    from PIL import Image

    sizes: Counter[tuple[int, int]] = Counter()
    first: dict[tuple[int, int], str] = {}
    gray = True
    for file in files:
        fh, img = _open_image(file, where, field)
        with fh, img as opened:
            if verify:
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("error", Image.DecompressionBombWarning)
                        opened.load()
                except _UNREADABLE as exc:
                    raise DataError.one(field, f"{file.name} in {where} cannot be decoded: {exc}",
                                        file.name) from None
            gray = gray and opened.mode in _GRAY_MODES
            size = (opened.height, opened.width)
        sizes[size] += 1
        first.setdefault(size, file.name)
    counts = dict(sorted(Counter(f.label for f in files).items()))
    if len(counts) < 2:
        raise DataError.one(field, f"{where} must hold at least 2 class folders of PNG or JPEG images, but it holds "
                            f"{len(counts)} ({', '.join(counts) or 'no images'})")
    return ImageScan(files=files, counts=counts, gray=gray, sizes=sizes, first_of_size=first)


def _size(scan: ImageScan, spec: DatasetSpec, where: str) -> tuple[int, int]:
    if spec.size is not None:
        return spec.size[0], spec.size[1]
    if len(scan.sizes) > 1:
        (a, _), (b, _) = scan.sizes.most_common(2)
        raise DataError.one("dataset.size", f"the images of {where} differ in size ({a[0]}x{a[1]} in "
                            f"{scan.first_of_size[a]}, {b[0]}x{b[1]} in {scan.first_of_size[b]}): give "
                            "size: [height, width] to resize them all to")
    return next(iter(scan.sizes))


def read_images(spec: DatasetSpec, root: Path, max_cells: int | None = None, archive: Path | None = None
                ) -> tuple[np.ndarray, np.ndarray, list[str], None, str]:
    """The images as (n, C, H, W) values in [0, 1], their class names (strings), pixel names; a classification.

    Args:
        root: REGTUNE_DATA_DIR, where ``spec.path`` (source images) is resolved.
        max_cells: the most values (images × C × H × W) the resized images may hold.
        archive: an uploaded zip to read instead of ``spec.path``.

    Raises:
        DataError: naming the field (``dataset.path``, ``dataset.id``, ``dataset.size``) and the image.
    """
    from PIL import Image

    field = "dataset.id" if archive is not None else "dataset.path"
    where = f"upload {spec.id}" if archive is not None else repr(spec.path)
    if archive is not None and (spec.target or spec.split.column or spec.max_levels):
        raise DataError.one("dataset.target" if spec.target else "dataset.split.column" if spec.split.column
                            else "dataset.max_levels",
                            f"applies to an uploaded table (CSV or Parquet), but upload {spec.id} is a zip of images "
                            "(the class of an image is its folder's name)")
    with zipfile.ZipFile(archive) if archive is not None else nullcontext() as zf:
        files = archive_images(zf) if zf is not None else folder_images(root, spec.path or "")
        scan = scan_images(files, where, field)
        height, width = _size(scan, spec, where)
        channels = spec.channels or scan.channels
        n = len(files)
        if max_cells is not None and n * channels * height * width > max_cells:
            raise DataError.one(field, f"{where} holds {n} images of {channels}x{height}x{width} = "
                                f"{n * channels * height * width} values, more than the {max_cells} allowed "
                                "(REGTUNE_MAX_DATA_CELLS); give a smaller size")
        X = np.empty((n, channels, height, width), dtype=np.float64)
        for i, file in enumerate(files):
            fh, img = _open_image(file, where, field)
            try:
                with fh, img as opened:
                    pixels = opened.convert("L" if channels == 1 else "RGB")
                    if pixels.size != (width, height):
                        pixels = pixels.resize((width, height), Image.Resampling.BILINEAR)
                    array = np.asarray(pixels, dtype=np.float64) / 255.0
            except _UNREADABLE as exc:
                raise DataError.one(field, f"{file.name} in {where} cannot be decoded: {exc}", file.name) from None
            X[i] = array[None] if channels == 1 else array.transpose(2, 0, 1)
    y = np.asarray([f.label for f in files])
    width_digits = len(str(channels * height * width - 1))
    names = [f"x{i:0{width_digits}d}" for i in range(channels * height * width)]
    return X, y, names, None, "classification"

