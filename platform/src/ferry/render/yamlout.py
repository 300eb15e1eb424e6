"""Deterministic YAML text for rendered objects: block style for multi-line strings, no key sorting."""

from __future__ import annotations

from typing import Any

import yaml

# libyaml's emitter is ~10x faster than PyYAML's pure-Python one, and just as deterministic.
_BaseDumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _Dumper(_BaseDumper):  # type: ignore[valid-type,misc]
    pass


def _str_representer(dumper: Any, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str_representer)


def dump_yaml(doc: dict[str, Any]) -> str:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=1000)


