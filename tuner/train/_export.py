"""The tuned model out: ``model.safetensors`` (the weights) and ``model.json`` (what it takes to rebuild it).

The weights are those of the very model the report measured on the test split,
so a model rebuilt with ``load_model`` gives the report's test loss again. A
plug-in is saved as the factory's own module (no wrapper), so its state dict
loads into a fresh ``factory(input_shape, n_outputs, **args)``.

``model.json`` also says how raw data became the model's inputs: the scaling
(``feature_scaling``) or, for a table with categories or missing values, the
whole fitted preprocessing (``preprocessing``: per column the fill value, the
one-hot levels, the scaling). ``encode_rows`` applies either to raw rows.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_model as _load_weights
from safetensors.torch import save_model as _save_weights
from torch import nn

from tuner.errors import RegtuneError
from tuner.knobs import Knobs
from tuner.spec import JobSpec, ModelSpec
from tuner.train._data import Dataset
from tuner.train._models import MLP
from tuner.train._module import PluginModel, dropout_modules, make_plugin
from tuner.train._tables import TablePrep

__all__ = ["FORMAT", "MODEL_JSON", "MODEL_WEIGHTS", "encode_rows", "export_model", "load_model"]

FORMAT = "regtune-model/1"
MODEL_WEIGHTS = "model.safetensors"
MODEL_JSON = "model.json"


def _bare(model: nn.Module) -> nn.Module:
    return model.net if isinstance(model, PluginModel) else model


def _model_spec(spec: ModelSpec) -> dict[str, Any]:
    """The model part of the spec, only the fields of its kind (so it validates again as it is)."""
    if spec.kind == "module":
        return spec.model_dump(mode="json", include={"kind", "factory", "args", "dropout_layers"})
    return spec.model_dump(mode="json", exclude_none=True)


def export_model(out_dir: Path, model: nn.Module, *, spec: JobSpec, data: Dataset, params: dict[str, float],
                 measured: dict[str, Any] | None = None) -> None:
    """Write the weights and the description of a trained model into ``out_dir``.

    Args:
        model: as ``train`` returned it (the MLP, or a plug-in wrapped).
        params: the configuration's knob values (flat, as the report gives them).
        measured: the report's metrics of this model (test loss, …), recorded for reference.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    bare = _bare(model)
    knobs = Knobs.from_params(params, spec.model.dropout_slots)
    meta: dict[str, Any] = {
        "format": FORMAT,
        "job": spec.name,
        "model": _model_spec(spec.model),
        "input_shape": list(data.input_shape),
        "n_outputs": data.n_outputs,
        "task": data.task,
        "params": params,
        "knobs": {"l1": knobs.l1, "l2": knobs.l2, "dropout": list(knobs.dropout),
                  "input_dropout": knobs.input_dropout, "label_smoothing": knobs.label_smoothing},
        "feature_names": data.feature_names,
        # a table's preprocessing holds its scaling: feature_scaling is then null
        "feature_scaling": {"mean": data.feature_mean, "std": data.feature_std, "per": data.scaling}
        if spec.dataset.standardize and data.preprocessing is None else None,
        "preprocessing": data.preprocessing.as_dict() if data.preprocessing is not None else None,
        "classes": data.classes if data.task == "classification" else None,
        "target_scaling": {"mean": data.target_mean, "std": data.target_scale}
        if data.task == "regression" and spec.dataset.standardize else None,
    }
    if spec.model.kind in ("module", "cnn"):
        meta["dropout_layers"] = {name: p for (name, _), p in
                                  zip(dropout_modules(bare), knobs.dropout or [0.0] * len(dropout_modules(bare)),
                                      strict=True)}
    if measured is not None:
        meta["measured"] = measured
    _save_weights(bare, str(out_dir / MODEL_WEIGHTS))
    (out_dir / MODEL_JSON).write_text(json.dumps(meta, indent=2))


def _meta(folder: Path) -> dict[str, Any]:
    try:
        meta: dict[str, Any] = json.loads((folder / MODEL_JSON).read_text())
    except (OSError, ValueError) as exc:
        raise RegtuneError(f"{folder} holds no readable {MODEL_JSON}: {exc}") from None
    if meta.get("format") != FORMAT:
        raise RegtuneError(f"{folder / MODEL_JSON} is not a {FORMAT} description (format {meta.get('format')!r})")
    return meta


def encode_rows(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> torch.Tensor:
    """Raw rows of a table (column name → value, as in the data file) as the exported model's inputs.

    They are prepared as the training data was: a table's missing values filled, its categories one-hot
    encoded and its numbers scaled with what was fitted on the training split; other tables only scaled.

    Args:
        path: the folder holding ``model.json``.

    Raises:
        RegtuneError: the model was not trained on a table, or a row misses a column or holds a bad value.
    """
    folder = Path(path)
    meta = _meta(folder)
    if len(meta["input_shape"]) != 1:
        raise RegtuneError(f"the model in {folder} takes inputs of shape {meta['input_shape']}, not table rows")
    try:
        if meta.get("preprocessing"):
            X = TablePrep.from_dict(meta["preprocessing"]).encode(rows)
        else:
            X = np.asarray([[float(row[n]) for n in meta["feature_names"]] for row in rows], dtype=np.float64)
            if scaling := meta.get("feature_scaling"):
                X = (X - np.asarray(scaling["mean"])) / np.asarray(scaling["std"])
    except KeyError as exc:
        raise RegtuneError(f"a row has no column {exc.args[0]!r}, which the model in {folder} reads") from None
    except (TypeError, ValueError) as exc:
        raise RegtuneError(f"cannot encode the rows for the model in {folder}: {exc}") from None
    return torch.as_tensor(X, dtype=torch.float32)


def load_model(path: str | Path) -> nn.Module:
    """The exported model, rebuilt with its weights, in eval mode.

    A plug-in is rebuilt by its factory, which must be on offer here as it was where it was tuned.

    Args:
        path: the folder holding ``model.json`` and ``model.safetensors``.

    Raises:
        RegtuneError: the folder does not hold an exported model, or the weights do not fit it.
    """
    folder = Path(path)
    meta = _meta(folder)
    spec = ModelSpec.model_validate(meta["model"])
    n_out = int(meta["n_outputs"])
    input_shape = tuple(int(d) for d in meta["input_shape"])
    model: nn.Module
    if spec.kind in ("module", "cnn"):
        model = make_plugin(spec, input_shape, n_out, seed=0)
        for (_, module), p in zip(dropout_modules(model), meta.get("dropout_layers", {}).values(), strict=False):
            module.p = float(p)
    else:
        n_in = 1
        for d in input_shape:
            n_in *= d
        model = MLP(n_in, spec.hidden or [], n_out, spec.activation, spec.batch_norm)
    try:
        _load_weights(model, str(folder / MODEL_WEIGHTS), strict=True)
    except (OSError, RuntimeError) as exc:
        raise RegtuneError(f"the weights in {folder / MODEL_WEIGHTS} do not fit the model {MODEL_JSON} "
                           f"describes: {exc}") from None
    return model.eval()
