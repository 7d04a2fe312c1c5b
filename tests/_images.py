"""Small generated image folders for the tests: one subfolder per class, PNG or JPEG written with Pillow."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

CLASSES = ("bright", "dark", "striped")


def write_images(folder: Path, *, per_class: int = 12, size: tuple[int, int] = (8, 8), rgb: bool = False,
                 classes: tuple[str, ...] = CLASSES, suffix: str = ".png") -> Path:
    """``folder/<class>/<i>.png``: each class a different picture (a bright or a dark centre, stripes) under noise."""
    from PIL import Image

    rng = np.random.default_rng(0)
    h, w = size
    for k, name in enumerate(classes):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.uniform(60, 120, size=(h, w))
            if k % 3 == 0:
                pixels[h // 4: 3 * h // 4, w // 4: 3 * w // 4] += 120
            elif k % 3 == 1:
                pixels[h // 4: 3 * h // 4, w // 4: 3 * w // 4] -= 50
            else:
                pixels[::2] += 100
            gray = np.clip(pixels, 0, 255).astype(np.uint8)
            image = Image.fromarray(np.stack([gray, gray[::-1], gray.T if h == w else gray], axis=-1) if rgb
                                    else gray, "RGB" if rgb else "L")
            image.save(folder / name / f"{i:03d}{suffix}")
    return folder


def zip_folder(folder: Path, top: str | None = None) -> bytes:
    """The folder's files as a zip (under ``top/`` when given), as a user's archiver would pack it."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                rel = path.relative_to(folder).as_posix()
                archive.write(path, f"{top}/{rel}" if top else rel)
    return buf.getvalue()


def zip_members(members: dict[str, bytes], links: tuple[str, ...] = ()) -> bytes:
    """A zip of these members (names as given, unchecked); ``links`` are added as symbolic links to /etc/passwd."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name), data)
        for name in links:
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777 << 16)  # S_IFLNK | rwx
            archive.writestr(info, "/etc/passwd")
    return buf.getvalue()
