"""regtune's tuning library: staged searches over L1, L2, dropout and label smoothing.

Usable without the service: ``run_job(load_spec("spec.yaml"), storage="sqlite:///runs.db")``.
"""

from tuner.errors import Cancelled, DataError, Issue, RegtuneError, SpecError, TrialFailed
from tuner.job import Progress, run_job, study_name, write_report
from tuner.report import Report
from tuner.spec import JobSpec, load_spec, parse_spec
from tuner.storage import DEFAULT_URL, open_storage, storage_url
from tuner.train import encode_rows, load_model

__all__ = [
    "DEFAULT_URL",
    "Cancelled",
    "DataError",
    "Issue",
    "JobSpec",
    "Progress",
    "RegtuneError",
    "Report",
    "SpecError",
    "TrialFailed",
    "encode_rows",
    "load_model",
    "load_spec",
    "open_storage",
    "parse_spec",
    "run_job",
    "storage_url",
    "study_name",
    "write_report",
]
