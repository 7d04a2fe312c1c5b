"""A request body into a validated ``JobSpec``, within the service's limits.

The spec's own rules are the library's (``tuner.parse_spec``); the service adds
only what a shared server needs: limits on cost, and no YAML aliases (a few
bytes of aliases can expand into a document too large to validate).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import yaml

from api.errors import ApiError
from api.settings import Settings
from tuner import JobSpec, SpecError, parse_spec
from tuner.errors import Issue
from tuner.limits import Limits
from tuner.limits import check_limits as check_job_limits
from tuner.spec import SpecLoader, loads_json

__all__ = ["check_limits", "job_limits", "parse_body", "spec_hash"]

JSON_TYPES = ("application/json",)
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")


class _NoAliasLoader(SpecLoader):
    """YAML without anchors and aliases; everything else as the library's ``SpecLoader``."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "YAML aliases (*name) are not accepted",
                                              event.start_mark)
        return super().compose_node(parent, index)


def _where(exc: Exception) -> str:
    """What the parser found wrong, and where."""
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} (line {exc.lineno}, column {exc.colno})"
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem:
        mark = exc.problem_mark
        return exc.problem + (f" (line {mark.line + 1}, column {mark.column + 1})" if mark else "")
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def media_type(content_type: str) -> str:
    """The JSON or YAML media type of a ``Content-Type`` header.

    Only these two: a web page can send ``text/plain`` and form bodies to any site without
    asking, so a service that parsed those could be made to queue jobs by any page its user visits.

    Raises:
        ApiError: 415 ``unsupported_media_type`` for any other type, or none.
    """
    kind = content_type.split(";")[0].strip().lower()
    if kind in JSON_TYPES or kind in YAML_TYPES:
        return kind
    shown = repr(kind[:100]) if kind else "none"
    raise ApiError(415, "unsupported_media_type", f"the Content-Type of a job spec must be one of "
                   f"{', '.join(JSON_TYPES + YAML_TYPES)}, but got {shown}")


def _decode(body: bytes, content_type: str) -> Any:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError.one("", f"the body must be UTF-8 text, but byte {exc.start} is not") from None
    if not text.strip():
        raise SpecError.one("", "the body is empty; send a job spec as YAML or JSON")
    as_json = media_type(content_type) in JSON_TYPES
    try:
        return loads_json(text) if as_json else yaml.load(text, Loader=_NoAliasLoader)
    except RecursionError:
        raise SpecError.one("", "the body nests too deeply to be a job spec") from None
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        kind = "JSON" if as_json else "YAML (or JSON)"
        raise SpecError.one("", f"the body is not valid {kind}: {_where(exc)}") from None


def parse_body(body: bytes, content_type: str) -> JobSpec:
    """Decode a JSON (``application/json``) or YAML (``application/yaml``) body and validate it.

    Raises:
        ApiError: 415 for another content type; 422 ``invalid_spec``, naming each field and the rule it broke.
    """
    media_type(content_type)
    try:
        return parse_spec(_decode(body, content_type))
    except SpecError as exc:
        raise ApiError.invalid_spec(exc) from None


def check_limits(spec: JobSpec, settings: Settings) -> None:
    """Refuse a spec that asks for more than this service allows.

    Raises:
        ApiError: 422 ``limit_exceeded``, naming the field and the setting that limits it.
    """
    issues: list[Issue] = []
    trials = sum(stage.trials for stage in spec.stages)
    if trials > settings.max_trials:
        issues.append(Issue("search.stages", f"the stages ask for {trials} trials in all, but this service "
                            f"allows at most {settings.max_trials} (REGTUNE_MAX_TRIALS)", trials))
    if spec.training.epochs > settings.max_epochs:
        issues.append(Issue("training.epochs", f"must be <= {settings.max_epochs} (REGTUNE_MAX_EPOCHS), but got "
                            f"{spec.training.epochs}", spec.training.epochs))
    units = sum(spec.model.hidden or [])
    if units > settings.max_hidden_units:
        issues.append(Issue("model.hidden", f"the hidden layers hold {units} units in all, but this service "
                            f"allows at most {settings.max_hidden_units} (REGTUNE_MAX_HIDDEN_UNITS)",
                            spec.model.hidden))
    issues += check_job_limits(spec, job_limits(settings))
    if issues:
        names = ", ".join(i.field for i in issues)
        raise ApiError(422, "limit_exceeded", f"the spec asks for more than this service allows: {names}", issues)


def job_limits(settings: Settings) -> Limits:
    """The library's limits on one job, as this service's settings set them."""
    return Limits(max_grid_points=settings.max_grid_points, max_cells=settings.max_data_cells,
                  max_work=settings.max_work, max_parallelism=settings.max_parallelism,
                  allow_ray=settings.allow_ray)


def spec_hash(spec: JobSpec) -> str:
    """A digest of the validated spec: the same job, sent as YAML or JSON, hashes the same."""
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
