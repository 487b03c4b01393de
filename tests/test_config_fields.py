"""Every config key takes effect: a field that no code reads is a setting silently ignored."""

import ast
from pathlib import Path

from pydantic import BaseModel

from proctor.cluster.config import ProctorConfig

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["cluster", "rollout", "learner", "reward", "sandbox_pool", "bench", "studies"]


def _leaves(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str]]:
    out = []
    for name, f in model.model_fields.items():
        if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel):
            out += _leaves(f.annotation, f"{prefix}{name}.")
        else:
            out.append((prefix + name, name))
    return out


def _attributes_read() -> set[str]:
    """Names read as ``x.NAME`` anywhere in the code, outside the files that define the configs."""
    names = set()
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            if path.name == "config.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
                    names.add(node.attr)
    return names


def test_every_config_field_is_read_by_the_code():
    read = _attributes_read()
    unread = [key for key, name in _leaves(ProctorConfig) if name not in read]
    assert not unread, f"config keys that no code reads (wire them or remove them): {unread}"


def test_the_check_catches_an_unread_field():
    class Extra(BaseModel):
        a_setting_nobody_reads: int = 1

    assert "a_setting_nobody_reads" not in _attributes_read()
    assert ("a_setting_nobody_reads", "a_setting_nobody_reads") in _leaves(Extra)
