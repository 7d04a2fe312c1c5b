"""Decode a spec document (YAML or JSON) into plain Python values, refusing duplicate keys.

Both readers of a spec, ``load_spec`` (``regtune run``) and the service's request body,
decode through here, so a document means the same thing wherever it is sent:

- a key given twice in one mapping is an error naming the key (YAML and JSON
  both keep the last one silently, so ``lr`` written twice would run a job the
  user did not ask for);
- YAML numbers follow YAML 1.2 (``1e-3`` is a float, as in JSON), not PyYAML's
  YAML 1.1 rule that needs a dot and reads ``1e-3`` as text.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from tuner.errors import SpecError

__all__ = ["SpecLoader", "loads_json", "refuse_duplicate_keys"]

_FLOAT_12 = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)


def _child(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _duplicate(path: str, key: object, where: str = "") -> SpecError:
    return SpecError.one(_child(path, key), f"the key {str(key)!r} appears more than once in one mapping"
                         f"{where}; give each key once (YAML and JSON would silently keep the last)", key)


def _check_node(node: yaml.Node, path: str) -> None:
    """Walk a composed YAML tree and refuse the first mapping that repeats a key."""
    if isinstance(node, yaml.MappingNode):
        seen: set[object] = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else id(key_node)
            if key in seen:
                mark = key_node.start_mark
                raise _duplicate(path, key, f" (line {mark.line + 1}, column {mark.column + 1})")
            seen.add(key)
            _check_node(value_node, _child(path, key))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_node(item, f"{path}[{i}]")


class SpecLoader(yaml.SafeLoader):
    """``yaml.safe_load`` that refuses duplicate keys and reads numbers as YAML 1.2 does.

    Raises:
        SpecError: naming the repeated key by its field path, with its line and column.
    """

    def construct_document(self, node: yaml.Node) -> Any:
        _check_node(node, "")
        return super().construct_document(node)


SpecLoader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
SpecLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789."))


class _Pairs(list[tuple[str, Any]]):
    """A JSON object as its key/value pairs, in order, before duplicates are checked."""


def refuse_duplicate_keys(value: Any, path: str = "") -> Any:
    """Turn the pairs ``loads_json`` collects into dicts, refusing a repeated key.

    Raises:
        SpecError: naming the repeated key by its field path.
    """
    if isinstance(value, _Pairs):
        out: dict[str, Any] = {}
        for key, item in value:
            if key in out:
                raise _duplicate(path, key)
            out[key] = refuse_duplicate_keys(item, _child(path, key))
        return out
    if isinstance(value, list):
        return [refuse_duplicate_keys(item, f"{path}[{i}]") for i, item in enumerate(value)]
    return value


def loads_json(text: str) -> Any:
    """``json.loads`` that refuses a key given twice in one object.

    Raises:
        json.JSONDecodeError: the text is not JSON.
        SpecError: naming the repeated key by its field path.
    """
    return refuse_duplicate_keys(json.loads(text, object_pairs_hook=_Pairs))
