"""The config schema as documentation: every key's type, default, description and the commands that
read it, from the pydantic models themselves. ``proctor config show --explain`` prints a config with
the descriptions as comments; the docs site's configuration reference is ``reference_markdown()``."""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Any

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from proctor.cluster.config import ProctorConfig, _yaml_value

# Which commands read a key: by section, then the keys that differ from their section. `proctor learn`
# and `proctor study` run train and eval (and prm) as subprocesses with the same config.
READ_BY_SECTION = {
    "model": "train, eval, prm label, prm train",
    "data": "train",
    "sandbox": "train, eval, prm label, sandbox judge, sandbox serve",
    "rollout": "train, eval, prm label",
    "learner": "train",
    "reward": "train",
    "prm.label": "prm label",
    "prm.train": "prm train",
    "run": "train",
}
READ_BY_KEY = {
    "data.train": "train, prm label",
    "data.eval": "eval (its default --dataset), train (held-out evaluation)",
    "data.limit": "train, prm label",
    "run.out_dir": "train, eval (default output dir)",
    "run.seed": "train, eval, prm label",
    "run.ray_address": "train, prm label, sandbox serve",
    "run.soup": "learn",
    "run.engine_cpus": "train, prm label",
    "sandbox.actors": "train, prm label",
    "rollout.engines": "train, prm label",
    "rollout.max_turns": "train, eval (default --turns)",
    "rollout.max_new_tokens": "train, eval",
    "rollout.feedback": "train, eval",
    "rollout.single_turn_iterations": "train",
    "rollout.temperature": "train (eval: --temperature; prm label: prm.label.temperature)",
    "rollout.top_p": "train (eval: --top-p)",
    "rollout.samples_per_problem": "train (eval: --samples)",
}


@dataclass(frozen=True)
class Key:
    key: str
    type: str
    default: Any
    description: str
    read_by: str


def _type_name(ann: Any) -> str:
    origin = typing.get_origin(ann)
    if origin is typing.Literal:
        return " | ".join(_yaml_value(a) for a in typing.get_args(ann))
    if origin in (typing.Union, types.UnionType):
        return " | ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(ann))
    if origin is list:
        (item,) = typing.get_args(ann) or (Any,)
        return f"list of {_type_name(item)}"
    return {str: "string", int: "int", float: "float", bool: "bool"}.get(ann, getattr(ann, "__name__", str(ann)))


def _bounds(f: FieldInfo) -> str:
    ops = {annotated_types.Ge: (">=", "ge"), annotated_types.Gt: (">", "gt"), annotated_types.Le: ("<=", "le"),
           annotated_types.Lt: ("<", "lt")}
    return ", ".join(f"{op} {getattr(m, attr)}" for m in f.metadata for cls, (op, attr) in ops.items()
                     if isinstance(m, cls))


def keys(model: type[BaseModel] = ProctorConfig, prefix: str = "") -> list[Key]:
    """Every leaf key of the schema, in the order the schema declares them."""
    out: list[Key] = []
    for name, f in model.model_fields.items():
        ann, key = f.annotation, prefix + name
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out += keys(ann, key + ".")
            continue
        section = key.rsplit(".", 1)[0]
        bounds = _bounds(f)
        out.append(Key(key, _type_name(ann) + (f" ({bounds})" if bounds else ""), f.get_default(call_default_factory=True),
                       f.description or "", READ_BY_KEY.get(key, READ_BY_SECTION.get(section, ""))))
    return out


def explain(cfg: ProctorConfig) -> str:
    """``cfg`` as YAML, each key preceded by its description as a comment."""
    values = cfg.model_dump()
    lines, open_sections = [], []
    for k in keys():
        *sections, leaf = k.key.split(".")
        common = 0
        while common < min(len(sections), len(open_sections)) and sections[common] == open_sections[common]:
            common += 1
        for depth in range(common, len(sections)):
            lines.append(f"{'  ' * depth}{sections[depth]}:")
        open_sections = sections
        value = values
        for part in k.key.split("."):
            value = value[part]
        indent = "  " * len(sections)
        lines.append(f"{indent}# {k.description} [read by: {k.read_by}]")
        lines.append(f"{indent}{leaf}: {_yaml_value(value)}")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def reference_markdown() -> str:
    """The configuration reference: one table per section."""
    out: list[str] = []
    section = None
    for k in keys():
        sec = k.key.rsplit(".", 1)[0]
        if sec != section:
            section = sec
            doc = ProctorConfig
            for part in sec.split("."):
                doc = doc.model_fields[part].annotation
            out += ["", f"## `{sec}`", ""]
            if doc.__doc__ and not doc.__doc__.startswith(("!!!", "Usage docs")) and doc.__doc__ != BaseModel.__doc__:
                out += [" ".join(doc.__doc__.split()), ""]
            out += ["| key | type | default | description | read by |", "|---|---|---|---|---|"]
        out.append(f"| `{k.key}` | {_cell(k.type)} | `{_cell(_yaml_value(k.default))}` | {_cell(k.description)} | "
                   f"{_cell(k.read_by)} |")
    return "\n".join(out).lstrip("\n") + "\n"
