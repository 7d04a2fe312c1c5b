"""The job spec: the one contract between the CLI, the API and the runner.

A spec is read in two steps: ``check_spec`` finds every broken rule (it changes
nothing), then ``complete`` fills in the default stages and puts a baseline
first. ``parse_spec`` and ``load_spec`` do both.
"""

from tuner.spec._data import SKLEARN_DATASETS, DatasetSpec, path_rule
from tuner.spec._job import JobSpec
from tuner.spec._load import SpecLoader, loads_json
from tuner.spec._models import (
    ACTIVATIONS,
    BACKENDS,
    METRICS,
    MODEL_KINDS,
    OPTIMIZERS,
    PRUNERS,
    SAMPLERS,
    EarlyStopping,
    ModelSpec,
    ReportSpec,
    SearchSpec,
    StageSpec,
    TrainingSpec,
)
from tuner.spec._parse import complete, load_spec, parse_spec
from tuner.spec._priors import KNOBS, KnobRange, Space
from tuner.spec._rules import check_spec, grid_points
from tuner.spec._stages import BASELINE, complete_stages, default_stages

__all__ = [
    "ACTIVATIONS",
    "BACKENDS",
    "BASELINE",
    "KNOBS",
    "METRICS",
    "MODEL_KINDS",
    "OPTIMIZERS",
    "PRUNERS",
    "SAMPLERS",
    "SKLEARN_DATASETS",
    "DatasetSpec",
    "EarlyStopping",
    "JobSpec",
    "KnobRange",
    "ModelSpec",
    "ReportSpec",
    "SearchSpec",
    "Space",
    "SpecLoader",
    "StageSpec",
    "TrainingSpec",
    "check_spec",
    "complete",
    "complete_stages",
    "default_stages",
    "grid_points",
    "load_spec",
    "loads_json",
    "parse_spec",
    "path_rule",
]
