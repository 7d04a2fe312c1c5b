"""The spec's rules: each broken rule is reported with its field, the rule and the value."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import pytest

from tuner import SpecError, load_spec, parse_spec
from tuner.spec import JobSpec, check_spec

Tiny = Callable[..., dict[str, Any]]


def issues(data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    return {i.field: i.message for i in info.value.issues}


def test_tiny_spec_is_valid(tiny: Tiny) -> None:
    spec = parse_spec(tiny())
    assert [s.name for s in spec.stages] == ["baseline", "l2", "dropout"]
    assert spec.search.objectives == ["val_loss"]


def test_low_above_high(tiny: Tiny) -> None:
    got = issues(tiny(search={"space": {"l2": {"low": 1.0, "high": 1e-3, "log": True}}}))
    assert got == {"search.space.l2": "low <= high must hold, but got (low=1.0, high=0.001)"}


def test_log_prior_needs_positive_low(tiny: Tiny) -> None:
    got = issues(tiny(search={"space": {"l2": {"low": 0.0, "high": 1e-3, "log": True}}}))
    assert got == {"search.space.l2": "a log prior needs low > 0, but got low=0.0; use allow_zero: true to reach 0"}


def test_stage_names_a_knob_not_in_space(tiny: Tiny) -> None:
    stages = [{"name": "l1", "params": ["l1"], "trials": 2}]
    got = issues(tiny(search={"stages": stages}))
    assert got == {"search.stages[0].params": "stage 'l1' names 'l1', which is not in search.space; "
                                              "searched knobs: l2, dropout"}


def test_label_smoothing_on_regression(tiny: Tiny) -> None:
    data = tiny(dataset={"name": "diabetes"},
                search={"space": {"label_smoothing": {"low": 0.0, "high": 0.2}}})
    assert issues(data) == {"search.space.label_smoothing": "label smoothing needs a classification task, "
                                                            "but the dataset is a regression"}


@pytest.mark.parametrize(("over", "field", "message"), [
    ({"search": {"sampler": "bayes"}}, "search.sampler",
     "unknown sampler 'bayes'; valid samplers are: grid, random, tpe, gp, cmaes, qmc, nsga2"),
    ({"search": {"pruner": "asha"}}, "search.pruner",
     "unknown pruner 'asha'; valid pruners are: none, median, hyperband"),
    ({"dataset": {"name": "mnist"}}, "dataset.name",
     "unknown sklearn dataset 'mnist'; valid sklearn datasets are: digits, digits_images, breast_cancer, wine, "
     "iris, diabetes"),
    ({"model": {"kind": "rnn"}}, "model.kind",
     "unknown model kind 'rnn'; valid model kinds are: mlp, linear, cnn, module"),
    ({"training": {"epochs": 0}}, "training.epochs", "Input should be greater than or equal to 1, but got 0"),
    ({"training": {"epochs": -3}}, "training.epochs", "Input should be greater than or equal to 1, but got -3"),
])
def test_unknown_names_and_bad_counts(tiny: Tiny, over: dict[str, Any], field: str, message: str) -> None:
    assert issues(tiny(**over)) == {field: message}


def test_zero_trials(tiny: Tiny) -> None:
    got = issues(tiny(search={"stages": [{"name": "l2", "params": ["l2"], "trials": 0}]}))
    assert got == {"search.stages[0].trials": "Input should be greater than or equal to 1, but got 0"}


def test_grid_sampler_needs_a_finite_grid(tiny: Tiny) -> None:
    got = issues(tiny(search={"sampler": "grid"}))
    assert got == {
        "search.space.l2": "the grid sampler needs a finite grid: give 'grid' (a number of points) or 'values' "
                           "for 'l2'",
        "search.space.dropout": "the grid sampler needs a finite grid: give 'grid' (a number of points) or 'values' "
                                "for 'dropout'",
    }


def test_grid_values_are_log_spaced_and_may_include_zero(tiny: Tiny) -> None:
    spec = parse_spec(tiny(search={
        "sampler": "grid",
        "space": {"l2": {"low": 1e-4, "high": 1e-2, "log": True, "grid": 4, "allow_zero": True},
                  "dropout": {"low": 0.0, "high": 0.5, "values": [0.0, 0.5]}},
        "stages": [{"name": "l2", "params": ["l2"], "trials": 4}, {"name": "d", "params": ["dropout"], "trials": 2}],
    }))
    assert spec.search.space.l2 is not None
    assert spec.search.space.l2.grid_values() == pytest.approx([0.0, 1e-4, 1e-3, 1e-2])


def test_grid_smaller_than_the_trials_asked(tiny: Tiny) -> None:
    got = issues(tiny(search={"sampler": "grid", "space": {"l2": {"low": 1e-4, "high": 1e-2, "log": True, "grid": 3}},
                              "stages": [{"name": "l2", "params": ["l2"], "trials": 5}]}))
    assert got == {"search.stages[0].trials": "stage 'l2' asks 5 trials but its grid has 3 points"}


def test_unknown_fields_are_errors_not_dropped(tiny: Tiny) -> None:
    got = issues(tiny(serch={}, model={"hiden": [3]}))
    assert got == {
        "serch": "unknown field 'serch'; valid fields here are: name, seed, dataset, model, training, search, report",
        "model.hiden": "unknown field 'hiden'; valid fields here are: kind, hidden, activation, batch_norm, "
                       "channels, kernel, factory, args, dropout_layers",
    }


def test_a_baseline_is_put_first_when_missing(tiny: Tiny) -> None:
    spec = parse_spec(tiny(search={"stages": [{"name": "l2", "params": ["l2"], "trials": 2}]}))
    assert [(s.name, s.params, s.trials) for s in spec.stages] == [("baseline", [], 1), ("l2", ["l2"], 2)]


def test_checking_changes_nothing_and_parsing_completes_the_stages(tiny: Tiny) -> None:
    given = tiny(search={"stages": [{"name": "l2", "params": ["l2"], "trials": 2}]})
    spec = JobSpec.model_validate(given)
    assert check_spec(spec) == []
    assert [s.name for s in spec.search.stages or []] == ["l2"]  # as written: checking fills in nothing
    assert [s.name for s in spec.stages] == ["baseline", "l2"]  # the stages it will run
    assert [s.name for s in parse_spec(given).search.stages or []] == ["baseline", "l2"]


def test_default_stages_when_none_are_given(tiny: Tiny) -> None:
    spec = parse_spec(tiny(search={"stages": None}))
    assert [(s.name, s.params, s.trials) for s in spec.stages] == [
        ("baseline", [], 1), ("joint", ["l2", "dropout"], 30)]
    assert spec.search.stages == spec.stages  # completed in the spec itself, so a dumped spec names them


def test_pareto_objective_rules(tiny: Tiny) -> None:
    got = issues(tiny(search={"objective": ["val_loss", "gap"], "sampler": "cmaes", "pruner": "median"}))
    assert set(got) == {"search.sampler", "search.pruner"}
    assert parse_spec(tiny(search={"objective": ["val_loss", "gap"], "sampler": "nsga2"})).search.objectives == [
        "val_loss", "gap"]


def test_dropout_on_a_linear_model(tiny: Tiny) -> None:
    got = issues(tiny(model={"kind": "linear", "hidden": None}))
    assert got == {"search.space.dropout": "the linear model has no hidden layer to drop out; use input_dropout"}


def test_broken_yaml_and_json_text() -> None:
    with pytest.raises(SpecError, match="not valid YAML or JSON"):
        load_spec("name: [unclosed\n")
    with pytest.raises(SpecError, match="a job spec must be a mapping"):
        load_spec("- 1\n- 2\n")


def test_json_text_and_yaml_file_give_the_same_spec(tiny: Tiny, tmp_path: Any) -> None:
    import yaml

    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(tiny()))
    assert load_spec(path) == load_spec(json.dumps(tiny()))


def test_a_syntax_error_gives_line_column_and_cause(tmp_path: Any) -> None:
    path = tmp_path / "tabbed.yaml"
    path.write_text("name: tabbed\ndataset:\n\tsource: sklearn\n")
    with pytest.raises(SpecError, match=r"line 3, column 1: found character '\\t' that cannot start any token "
                                        r"\(a tab: YAML indents with spaces only\)"):
        load_spec(path)
    with pytest.raises(SpecError, match=r"line 2, column 1: expected ',' or ']', but got '<stream end>' "
                                        r"\(while parsing a flow sequence\)"):
        load_spec("name: [unclosed\n")
    with pytest.raises(SpecError, match="line 1, column 14: Expecting property name enclosed in double quotes"):
        load_spec('{"name": "x",}')


def test_grid_values_alone_are_a_whole_prior(tiny: Tiny) -> None:
    spec = parse_spec(tiny(search={"sampler": "grid", "space": {
        "l2": {"low": None, "high": None, "log": None, "values": [0.0, 1e-3, 1e-2], "allow_zero": True},
        "dropout": {"low": None, "high": None, "values": [0.1, 0.2, 0.3]}}}))
    l2, dropout = spec.search.space.l2, spec.search.space.dropout
    assert l2 is not None and (l2.low, l2.high, l2.grid_values()) == (1e-3, 1e-2, [0.0, 1e-3, 1e-2])
    assert dropout is not None and (dropout.low, dropout.high) == (0.1, 0.3)
    schema = JobSpec.model_json_schema()["$defs"]["KnobRange"]["properties"]
    assert "grid sampler" in schema["values"]["description"] and "grid sampler" in schema["grid"]["description"]


def test_a_knob_no_stage_searches_is_named_in_a_warning(tiny: Tiny, caplog: pytest.LogCaptureFixture) -> None:
    stages = [{"name": "l2", "params": ["l2"], "trials": 3}]
    with caplog.at_level(logging.WARNING, logger="tuner.spec"):
        parse_spec(tiny(search={"stages": stages}))
    assert [r.getMessage() for r in caplog.records] == [
        "search.space.dropout: no stage searches 'dropout', so it stays 0 (off); add it to a stage's params, "
        "or remove it from search.space"]


def test_without_stages_a_baseline_and_one_joint_stage_of_30_trials(tiny: Tiny) -> None:
    spec = parse_spec(tiny(search={"stages": None}))
    assert [(s.name, s.params, s.trials) for s in spec.stages] == [
        ("baseline", [], 1), ("joint", ["l2", "dropout"], 30)]
    assert "'joint' stage over every knob in space, 30 trials" in str(
        JobSpec.model_json_schema()["$defs"]["SearchSpec"]["properties"]["stages"]["description"])


INF, NAN = float("inf"), float("nan")


@pytest.mark.parametrize(("over", "field"), [
    ({"training": {"early_stopping": {"patience": 2, "min_delta": INF}}}, "training.early_stopping.min_delta"),
    ({"training": {"lr": INF}}, "training.lr"),
    ({"training": {"lr": NAN}}, "training.lr"),
    ({"training": {"momentum": -INF}}, "training.momentum"),
    ({"dataset": {"source": "synthetic", "name": None, "noise": INF}}, "dataset.noise"),
    ({"dataset": {"split": {"val": NAN}}}, "dataset.split.val"),
    ({"search": {"space": {"l2": {"low": 1e-5, "high": INF, "log": True}}}}, "search.space.l2.high"),
    ({"search": {"space": {"l2": {"low": 1e-5, "high": 1e-1, "values": [1e-3, NAN]}}}}, "search.space.l2.values[1]"),
])
def test_every_float_is_finite(tiny: Tiny, over: dict[str, Any], field: str) -> None:
    got = issues(tiny(**over))
    assert list(got) == [field] and got[field].startswith("must be a finite number (not inf or NaN), but got ")


@pytest.mark.parametrize(("text", "field"), [
    ("training: {lr: .inf}", "training.lr"),
    ("training: {early_stopping: {patience: 2, min_delta: .nan}}", "training.early_stopping.min_delta"),
])
def test_yaml_inf_and_nan_are_refused(tiny: Tiny, text: str, field: str) -> None:
    import yaml

    doc = yaml.safe_dump({k: v for k, v in tiny().items() if k != "training"}) + text + "\n"
    with pytest.raises(SpecError) as info:
        load_spec(doc)
    assert [i.field for i in info.value.issues] == [field]


@pytest.mark.parametrize(("over", "field", "message"), [
    ({"training": {"epochs": True}}, "training.epochs",
     "must be an integer (not a boolean, a fraction or text), but got True"),
    ({"training": {"batch_size": 64.0}}, "training.batch_size",
     "must be an integer (not a boolean, a fraction or text), but got 64.0"),
    ({"search": {"stages": [{"name": "baseline", "params": [], "trials": "1"}]}}, "search.stages[0].trials",
     "must be an integer (not a boolean, a fraction or text), but got '1'"),
    ({"training": {"lr": True}}, "training.lr", "must be a number (not a boolean or text), but got True"),
    ({"dataset": {"standardize": 1}}, "dataset.standardize", "must be true or false, but got 1"),
    ({"dataset": {"source": "synthetic", "name": None, "noise": 1.5}}, "dataset.noise",
     "for classification noise is the fraction of labels flipped, so noise <= 1 must hold, but got noise=1.5"),
    ({"dataset": {"source": "synthetic", "name": None, "n_samples": 20, "n_classes": 10}}, "dataset.n_samples",
     "each class needs rows in train, val and test: n_samples >= 3 * n_classes = 30 must hold, but got n_samples=20"),
    ({"dataset": {"source": "synthetic", "name": None, "n_classes": 3, "n_informative": 1, "n_features": 2}},
     "dataset.n_classes", "n_classes * clusters <= 2**n_informative must hold (each class needs its own corners "
     "of the informative space), but got n_classes=3, clusters=1, n_informative=1"),
    ({"dataset": {"source": "csv", "name": None, "path": "a\x00b.csv", "target": "y"}}, "dataset.path",
     "must be a file name without control characters (NUL, newline, ...)"),
    ({"dataset": {"source": "csv", "name": None, "path": ".env", "target": "y"}}, "dataset.path",
     "must name no hidden file or folder (a part starting with '.', '..' included), but got '.env'"),
    ({"dataset": {"source": "csv", "name": None, "path": "d/../../x.csv", "target": "y"}}, "dataset.path",
     "must name no hidden file or folder (a part starting with '.', '..' included), but got 'd/../../x.csv'"),
    ({"dataset": {"source": "csv", "name": None, "path": "/etc/passwd", "target": "y"}}, "dataset.path",
     "must be relative to REGTUNE_DATA_DIR, but got '/etc/passwd'"),
    ({"dataset": {"source": "upload", "name": None, "target": "y"}}, "dataset.id",
     "source 'upload' needs 'id' (the id POST /datasets answered)"),
    ({"dataset": {"source": "upload", "name": None, "id": "../x.csv"}}, "dataset.id",
     "must be 64 lowercase hex digits (the sha256 POST /datasets answered), but got '../x.csv'"),
    ({"dataset": {"source": "upload", "name": None, "id": "0" * 64, "path": "d.csv"}}, "dataset.path",
     "applies to source csv or npz or images, not 'upload'"),
    ({"dataset": {"source": "npz", "name": None, "id": "0" * 64, "path": "d.npz"}}, "dataset.id",
     "applies to source upload, not 'npz'"),
])
def test_inputs_that_used_to_fail_at_run_time_are_refused_at_submit(tiny: Tiny, over: dict[str, Any], field: str,
                                                                   message: str) -> None:
    assert issues(tiny(**over)) == {field: message}


def test_yaml_reads_exponents_without_a_dot_as_numbers(tiny: Tiny) -> None:
    import yaml

    doc = yaml.safe_dump({k: v for k, v in tiny().items() if k != "training"}) + "training: {lr: 1e-3, epochs: 2}\n"
    assert load_spec(doc).training.lr == 1e-3  # YAML 1.2, as JSON: strict types need no quoted floats


@pytest.mark.parametrize(("text", "field", "where"), [
    ("name: a\nname: b\n", "name", " (line 2, column 1)"),
    ("name: a\ntraining:\n  lr: 0.1\n  epochs: 2\n  lr: 0.5\n", "training.lr", " (line 5, column 3)"),
    ("search:\n  stages:\n    - {name: x, trials: 1, trials: 2}\n", "search.stages[0].trials", " (line 3, column 28)"),
    ('{"name": "a", "name": "b"}', "name", ""),
    ('{"training": {"lr": 0.1, "lr": 0.5}}', "training.lr", ""),
    ('{"search": {"stages": [{"name": "x", "trials": 1, "trials": 2}]}}', "search.stages[0].trials", ""),
])
def test_duplicate_keys_are_refused_naming_the_key(text: str, field: str, where: str) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(text)
    key = field.rsplit(".", 1)[-1]
    assert [(i.field, i.message) for i in info.value.issues] == [
        (field, f"the key {key!r} appears more than once in one mapping{where}; give each key once "
                "(YAML and JSON would silently keep the last)")]
