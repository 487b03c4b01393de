"""The front door and the docs: the site builds with warnings as errors, the configuration reference
covers every key with a description, and the README stays short and names only real commands."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from proctor.cluster.cli import build_parser
from proctor.cluster.config import dump_config, load_config
from proctor.cluster.config_docs import explain, keys, reference_markdown

ROOT = Path(__file__).resolve().parent.parent
MKDOCS = Path(sys.executable).parent / "mkdocs"
ENV = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}


def test_every_config_key_has_a_description_and_its_commands():
    missing = [k.key for k in keys() if not k.description.strip()]
    assert missing == [], f"config keys without a description (Field(description=...)): {missing}"
    assert [k.key for k in keys() if not k.read_by] == []
    assert len(keys()) > 100


def test_the_reference_lists_every_key_once():
    text = reference_markdown()
    for k in keys():
        assert text.count(f"| `{k.key}` |") == 1, k.key
    row = next(line for line in text.splitlines() if line.startswith("| `rollout.max_turns` |"))
    assert "int (>= 1)" in row and "| `3` |" in row and "attempts per episode" in row


def test_explain_is_the_config_with_its_descriptions():
    cfg = load_config("tiny", ["rollout.max_turns=2"])
    text = explain(cfg)
    assert yaml.safe_load(text) == yaml.safe_load(dump_config(cfg))  # comments aside, the same config
    assert "  # attempts per episode, in training and evaluation [read by: train, eval (default --turns)]\n" \
           "  max_turns: 2\n" in text
    assert all(f"# {k.description}" in text for k in keys())


@pytest.mark.skipif(not MKDOCS.exists(), reason="mkdocs not installed (the test extra installs it)")
def test_the_docs_site_builds_strict(tmp_path):
    site = tmp_path / "site"
    proc = subprocess.run([str(MKDOCS), "build", "--strict", "--site-dir", str(site)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    html = (site / "configuration" / "index.html").read_text()
    missing = [k.key for k in keys() if k.key not in html]
    assert missing == [], f"configuration page lacks {missing}"


def test_a_broken_link_fails_the_docs_build(tmp_path):
    if not MKDOCS.exists():
        pytest.skip("mkdocs not installed")
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "docs", copy / "docs")
    shutil.copy(ROOT / "mkdocs.yml", copy / "mkdocs.yml")
    (copy / "docs" / "index.md").write_text((copy / "docs" / "index.md").read_text() + "\n[gone](no-such-page.md)\n")
    proc = subprocess.run([str(MKDOCS), "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=copy,
                          capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode != 0 and "no-such-page.md" in proc.stdout + proc.stderr


def test_the_readme_is_a_front_door():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    assert "make run" in text and "make test" in text
    commands = set(build_parser()._subparsers._group_actions[0].choices)
    used = set(re.findall(r"(?<![\w/.-])proctor (\w+)", text)) - {"is"}
    assert used and used <= commands, f"README names commands that do not exist: {sorted(used - commands)}"
    for link in re.findall(r"\]\(([^)#]+)\)", text):
        if not link.startswith("http"):
            assert (ROOT / link).exists(), f"README links to a missing file: {link}"
