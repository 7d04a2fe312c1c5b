"""The Optuna side of a job: stages as studies, the search space, samplers and pruners, one trial.

A stage is one Optuna study; earlier stages' best values are fixed and their
trials warm the sampler. Where a stage's trials run is a backend's business
(``tuner.backends``): this package hands them out (``StageRun``) and records them.
"""

from tuner.search._board import EpochBoard
from tuner.search._counts import TrialCount, count_text
from tuner.search._l1_path import (
    find_lambda_max,
    gradient_lambda_max,
    null_state,
    one_se_point,
    path_summary,
    path_values,
    run_path,
)
from tuner.search._resume import check_fingerprint, delete_studies, fingerprint_parts
from tuner.search._samplers import (
    PRUNERS,
    SAMPLERS,
    WARM_STARTABLE,
    WarmStartSampler,
    make_pruner,
    make_sampler,
    pruner_startup,
)
from tuner.search._space import encode, grid_space, knob_names, off_is_known, suggest
from tuner.search._stages import (
    BUDGET_STATES,
    StageOutcome,
    StageRun,
    best_of,
    budget_used,
    close_stage,
    complete_trials,
    fail_interrupted,
    open_stage,
)
from tuner.search._trial import TrialOutcome, TrialRecorder, fail_trial, objective_values, run_trial

__all__ = [
    "BUDGET_STATES",
    "PRUNERS",
    "SAMPLERS",
    "WARM_STARTABLE",
    "EpochBoard",
    "StageOutcome",
    "StageRun",
    "TrialCount",
    "TrialOutcome",
    "TrialRecorder",
    "WarmStartSampler",
    "best_of",
    "budget_used",
    "check_fingerprint",
    "close_stage",
    "complete_trials",
    "count_text",
    "delete_studies",
    "encode",
    "fail_interrupted",
    "fail_trial",
    "find_lambda_max",
    "fingerprint_parts",
    "gradient_lambda_max",
    "grid_space",
    "knob_names",
    "make_pruner",
    "make_sampler",
    "null_state",
    "objective_values",
    "off_is_known",
    "one_se_point",
    "open_stage",
    "path_summary",
    "path_values",
    "pruner_startup",
    "run_path",
    "run_trial",
    "suggest",
]
