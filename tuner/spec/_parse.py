"""Reading a spec: validate each part, check the rules between parts, then complete it.

Every rule is checked here, up front, so a job never starts with a spec that
fails half-way. Checking (``check_spec``) and completing (``complete``: the
default stages, the baseline first) are two steps; a spec is completed only
once it breaks no rule.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from tuner.errors import Issue, SpecError
from tuner.spec._errors import issues_from_validation_error
from tuner.spec._job import JobSpec
from tuner.spec._load import SpecLoader, loads_json
from tuner.spec._rules import check_spec, unsearched_knobs
from tuner.spec._stages import complete_stages

__all__ = ["complete", "load_spec", "parse_spec"]

log = logging.getLogger(__name__)


def parse_spec(data: Any) -> JobSpec:
    """Validate a decoded spec (a mapping) into a JobSpec.

    Raises:
        SpecError: naming every broken rule with its field path.
    """
    if not isinstance(data, dict):
        raise SpecError.one("", f"a job spec must be a mapping, but got {type(data).__name__}")
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(issues_from_validation_error(exc, JobSpec)) from None
    issues = check_spec(spec)
    if issues:
        raise SpecError(issues)
    complete(spec)
    for knob in unsearched_knobs(spec):
        log.warning("search.space.%s: no stage searches %r, so it stays 0 (off); add it to a stage's params, "
                    "or remove it from search.space", knob, knob)
    return spec


def load_spec(source: str | Path | bytes) -> JobSpec:
    """Read a spec from a YAML/JSON file path or from the document text itself.

    Raises:
        SpecError: the document does not parse, or breaks a rule.
    """
    looks_like_path = isinstance(source, str) and "\n" not in source and source.endswith((".yaml", ".yml", ".json"))
    try:
        if isinstance(source, Path) or looks_like_path:
            path = Path(source)  # type: ignore[arg-type]
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise SpecError.one("", f"cannot read spec file {str(path)!r}: {exc.strerror}") from None
        else:
            text = source.decode("utf-8") if isinstance(source, bytes) else str(source)
        data = loads_json(text) if text.lstrip().startswith("{") else yaml.load(text, Loader=SpecLoader)
    except (yaml.YAMLError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SpecError([Issue("", f"the spec is not valid YAML or JSON: {_syntax_error(exc)}")]) from None
    return parse_spec(data)


def _syntax_error(exc: Exception) -> str:
    """Where a document fails to parse (line, column, 1-based) and why, in one line."""
    if isinstance(exc, json.JSONDecodeError):
        return f"line {exc.lineno}, column {exc.colno}: {exc.msg}"
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        why = exc.problem or exc.context or "cannot parse"
        if "'\\t'" in why:
            why += " (a tab: YAML indents with spaces only)"
        context = f" ({exc.context})" if exc.context and exc.problem else ""
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        return f"{where}{why}{context}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def complete(spec: JobSpec) -> JobSpec:
    """Fill in what a checked spec leaves to the defaults: its stages, with a baseline first. Returns ``spec``."""
    spec.search.stages = complete_stages(spec.search)
    return spec
