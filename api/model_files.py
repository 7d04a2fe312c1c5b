"""A job's tuned model as one archive: the service keeps ``model.safetensors`` and ``model.json`` together."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from tuner.train import MODEL_JSON, MODEL_WEIGHTS

__all__ = ["MODEL_FILES", "pack_model"]

MODEL_FILES = (MODEL_WEIGHTS, MODEL_JSON)


def pack_model(folder: Path) -> bytes:
    """A zip of the two files ``tuner.run_job`` exported into ``folder`` (``tuner.load_model`` reads them)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in MODEL_FILES:
            zf.write(folder / name, arcname=name)
    return buf.getvalue()
