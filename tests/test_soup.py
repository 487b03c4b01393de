"""A soup of LoRA runs (learner.soup, run.soup): the mean of the adapters' deltas merged into the
base network, what `proctor model soup` writes and `proctor learn` makes of a seed's runs."""

import io
import json
import re
from types import SimpleNamespace

import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file
from test_lora import trained_adapters

from proctor.cluster.cli import main
from proctor.cluster.config import ConfigError, load_config
from proctor.learner.lora import merged_named, save_adapter
from proctor.learner.soup import soup
from proctor.studies.seed_runs import train_dirs, train_seconds, train_seed


def adapter(model_dir, out, seed):
    model = trained_adapters(model_dir, rank=4, scale=0.1, seed=seed)
    save_adapter(model, out)
    return out, dict(merged_named(model))


def test_soup_of_one_adapter_is_the_learners_merge_and_of_two_the_mean_delta(v16_model_dir, tmp_path):
    a, merged_a = adapter(v16_model_dir, tmp_path / "a", seed=1)
    b, merged_b = adapter(v16_model_dir, tmp_path / "b", seed=2)
    base = load_file(str(v16_model_dir / "model.safetensors"))
    one = load_file(soup([a], v16_model_dir, tmp_path / "one", "float32") + "/model.safetensors")
    assert set(one) == set(base)
    for name, t in one.items():
        assert torch.equal(t, merged_a[name]), name  # fp32: exactly the weights a run's policy/ holds
    two = load_file(soup([a, b], v16_model_dir, tmp_path / "two", "float32") + "/model.safetensors")
    changed = 0
    for name, t in two.items():
        mean = base[name] + ((merged_a[name] - base[name]) + (merged_b[name] - base[name])) / 2
        assert torch.allclose(t, mean, atol=1e-6), name
        changed += not torch.equal(t, base[name])
    adapted = [k for k in load_file(str(a / "adapter_model.safetensors")) if ".lora_A." in k]
    assert changed == len(adapted) == 14  # every linear layer of the 2 blocks, nothing else
    same = load_file(soup([a, a], v16_model_dir, tmp_path / "same", "float32") + "/model.safetensors")
    assert all(torch.equal(same[n], one[n]) for n in one)
    bf16 = load_file(soup([a, b], v16_model_dir, tmp_path / "bf16") + "/model.safetensors")
    assert all(t.dtype == torch.bfloat16 for t in bf16.values())
    assert (tmp_path / "two" / "config.json").is_file()  # a HF model dir: config, generation config, tokenizer


def test_soup_names_what_is_wrong(v16_model_dir, tiny_model_dir, tmp_path, capsys):
    a, _ = adapter(v16_model_dir, tmp_path / "a", seed=1)
    with pytest.raises(FileNotFoundError, match=re.escape(f"{tmp_path / 'nope'}: not a peft LoRA adapter dir")):
        soup([a, tmp_path / "nope"], v16_model_dir, tmp_path / "out")
    with pytest.raises(ValueError, match="at least one adapter"):
        soup([], v16_model_dir, tmp_path / "out")
    cfg = json.loads((a / "adapter_config.json").read_text())
    (tmp_path / "dora").mkdir()
    (tmp_path / "dora" / "adapter_config.json").write_text(json.dumps({**cfg, "use_dora": True}))
    (tmp_path / "dora" / "adapter_model.safetensors").write_bytes((a / "adapter_model.safetensors").read_bytes())
    with pytest.raises(ValueError, match=re.escape("dora/adapter_config.json: only plain LoRA")):
        soup([tmp_path / "dora"], v16_model_dir, tmp_path / "out")
    # the CLI: the same errors as one line, exit 2; an adapter of another model names the missing weights
    assert main(["model", "soup", str(a), "--base", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert main(["model", "soup", str(a), "--base", str(tiny_model_dir), "--out", str(tmp_path / "o")]) == 2
    out = capsys.readouterr().out
    assert "error:" in out and "they were trained on another model" in out
    assert main(["model", "soup", str(a), str(a), "--base", str(v16_model_dir), "--out", str(tmp_path / "o")]) == 0
    assert "2 adapters averaged" in capsys.readouterr().out


def test_run_soup_needs_lora():
    with pytest.raises(ConfigError, match=re.escape("run.soup=2 averages LoRA adapters, but learner.lora_rank=0")):
        load_config(None, ["run.soup=2", "learner.lora_rank=0"])
    assert load_config(None, ["run.soup=2", "learner.lora_rank=4"]).run.soup == 2


def test_learn_averages_a_seeds_finished_runs_and_counts_their_time(v16_model_dir, tmp_path):
    """Seed 1 of a soup of 2: its runs are member0 and member1 (run.seed 2 and 3); both finished, so
    nothing trains again, and the seed's policy is their soup; its wall is their training plus the soup's."""
    run_dir = tmp_path / "seed1"
    for j in range(2):
        member = run_dir / f"member{j}"
        adapter(v16_model_dir, member / "policy" / "adapter", seed=j)
        (member / "policy" / "config.json").write_text("{}")
        (member / "wall.json").write_text(json.dumps({"train_s": 60.0 * (j + 1), "eval_s": 999.0}))
    cfg = load_config(None, [f"model.name={v16_model_dir}", "learner.lora_rank=4", "learner.dtype=float32",
                             "run.soup=2"])
    args = SimpleNamespace(config=None, overrides=[])
    assert train_seed(run_dir, 1, cfg, args, Console(file=io.StringIO())) == 0
    assert train_dirs(run_dir) == [run_dir / "member0", run_dir / "member1"]
    own = json.loads((run_dir / "wall.json").read_text())["train_s"]  # the soup's own time, whatever the machine
    assert own > 0 and train_seconds(run_dir) == pytest.approx(60.0 + 120.0 + own)  # not the runs' eval_s
    expected = load_file(soup([run_dir / f"member{j}" / "policy" / "adapter" for j in range(2)], v16_model_dir,
                              tmp_path / "expected", "float32") + "/model.safetensors")
    got = load_file(str(run_dir / "policy" / "model.safetensors"))
    assert all(torch.equal(got[n], expected[n]) for n in expected)
    assert train_dirs(tmp_path / "plain") == [tmp_path / "plain"]  # a seed of one run trains in its own dir
