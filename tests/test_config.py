import re

import pytest

from proctor.cluster.config import (
    CONFIG_DIR,
    ConfigError,
    ProctorConfig,
    config_changes,
    load_config,
    parse_overrides,
    resolve_config,
    shipped_name,
)


def test_local_yaml_is_valid_and_matches_paper_defaults():
    cfg = load_config(CONFIG_DIR / "local.yaml")
    assert cfg.model.name == "smollm2-135m-instruct"
    assert cfg.rollout.max_turns == 3
    assert cfg.learner.kl_beta == 0.05
    assert cfg.reward.invalid_turn == -0.2


def test_overrides_are_typed_and_nested():
    cfg = load_config(overrides=["rollout.max_turns=2", "learner.lr=1e-6", "data.limit=5", "rollout.feedback=none"])
    assert cfg.rollout.max_turns == 2
    assert cfg.learner.lr == pytest.approx(1e-6)
    assert cfg.data.limit == 5
    assert cfg.rollout.feedback == "none"
    assert load_config(overrides=["data.limit=null"]).data.limit is None


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("rollout.max_turn=2", "unknown config key 'rollout.max_turn' (did you mean 'rollout.max_turns'?)"),
        ("nosuch=1", "unknown config key 'nosuch'"),
        ("rollout.max_turns=abc", "config key 'rollout.max_turns'"),
        ("rollout.max_turns=0", "config key 'rollout.max_turns'"),
        ("rollout.feedback=sometimes", "config key 'rollout.feedback'"),
        ("learner.zero_stage=5", "config key 'learner.zero_stage'"),
        ("max_turns", "not of the form key=value"),
    ],
)
def test_bad_override_is_one_clear_error(override, needle):
    with pytest.raises(ConfigError) as e:
        load_config(overrides=[override])
    assert needle in str(e.value)


def test_bad_file_errors_name_the_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("rollout:\n  max_turns: 3\n  temprature: 0.5\n")
    with pytest.raises(ConfigError) as e:
        load_config(bad)
    assert str(bad) in str(e.value) and "'rollout.temprature'" in str(e.value) and "rollout.temperature" in str(e.value)
    bad.write_text("rollout: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_every_config_in_configs_dir_validates():
    files = sorted(CONFIG_DIR.glob("*.yaml"))
    assert files, "configs/ holds no YAML"
    for f in files:
        assert isinstance(load_config(f), ProctorConfig)


def test_parse_overrides_builds_a_tree():
    assert parse_overrides(["run.seed=3", "run.out_dir=x/y"]) == {"run": {"seed": 3, "out_dir": "x/y"}}


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return out


ABLATIONS = {  # each ablation config changes exactly these keys of configs/local.yaml (besides run.out_dir)
    "multi-turn": {},
    "single-turn": {"rollout.max_turns": 1},
    "feedback-random": {"rollout.feedback": "random"},
    "feedback-none": {"rollout.feedback": "none"},
    "prm-dense": {"reward.prm": True, "reward.prm_model": "runs/prm/model", "learner.value_level": "token"},
    "prm-dense-critic": {"reward.prm": True, "reward.prm_model": "runs/prm/model", "learner.value_level": "token",
                         "reward.prm_critic_init": True},
    "outcome-critic": {"learner.value_level": "token"},  # local.yaml is gae already; on the recipe it is the estimator
}


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_ablation_configs_change_only_their_switch(name):
    base = _flat(load_config(CONFIG_DIR / "local.yaml").model_dump())
    cfg = _flat(load_config(CONFIG_DIR / "ablations" / f"{name}.yaml").model_dump())
    changed = {k: v for k, v in cfg.items() if base[k] != v and k != "run.out_dir"}
    assert changed == ABLATIONS[name]
    assert cfg["run.out_dir"] == f"runs/ablations/{name}"


def test_ablation_dir_has_no_untested_config():
    assert {p.stem for p in (CONFIG_DIR / "ablations").glob("*.yaml")} == set(ABLATIONS)


def test_base_chain_errors_name_the_file(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("base: missing.yaml\nrun:\n  seed: 1\n")
    with pytest.raises(ConfigError, match=r"missing\.yaml does not exist \(base of .*c\.yaml\)"):
        load_config(tmp_path / "c.yaml")
    (tmp_path / "d.yaml").write_text("base: [x]\n")
    with pytest.raises(ConfigError, match="base must be a path"):
        load_config(tmp_path / "d.yaml")


def test_configs_are_found_by_name_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the checkout: names resolve to the shipped files
    assert resolve_config("tiny") == resolve_config("tiny.yaml") == CONFIG_DIR / "tiny.yaml"
    assert resolve_config(None) == CONFIG_DIR / "local.yaml"
    assert resolve_config("ablations/single-turn") == CONFIG_DIR / "ablations" / "single-turn.yaml"
    assert load_config("ablations/single-turn").rollout.max_turns == 1
    # a file of the user's wins over a shipped name, and may be based on a shipped config by name
    (tmp_path / "tiny.yaml").write_text("base: local\nrun:\n  seed: 9\n")
    cfg = load_config("tiny.yaml")
    assert cfg.run.seed == 9 and cfg.run.out_dir == "runs/local"
    assert shipped_name("tiny.yaml") is None and shipped_name("tiny") == "tiny"
    assert shipped_name("configs/learn-cpu.yaml") == "learn-cpu"  # as run records kept it
    assert shipped_name(CONFIG_DIR / "ablations" / "prm-dense.yaml") == "ablations/prm-dense"


def test_a_missing_config_names_the_shipped_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"no config named 'tinny'.*did you mean 'tiny'.*shipped: .*ablations/multi-turn"):
        load_config("tinny")
    with pytest.raises(ConfigError, match=r"config file runs/mine\.yaml does not exist$"):
        load_config("runs/mine.yaml")
    with pytest.raises(ConfigError, match=r"config file lcoal\.yaml does not exist \(did you mean 'local'\?\)"):
        load_config("lcoal.yaml")


def test_overrides_apply_over_the_base_chain():
    cfg = load_config(CONFIG_DIR / "ablations" / "prm-dense-critic.yaml", ["rollout.max_turns=2"])
    assert cfg.rollout.max_turns == 2 and cfg.reward.prm_critic_init and cfg.learner.lr == 2.0e-7


def test_critic_init_without_a_critic_is_one_clear_error():
    with pytest.raises(ConfigError) as e:
        load_config(overrides=["reward.prm_critic_init=true", "reward.prm_model=some/prm", "learner.advantage=grpo"])
    msg = str(e.value)
    assert "reward.prm_critic_init needs a critic, but learner.advantage=grpo trains none" in msg
    assert "got {" not in msg  # not the whole config echoed back
    assert load_config(overrides=["learner.advantage=rloo"]).learner.advantage == "rloo"


@pytest.mark.parametrize("overrides,message", [
    (["rollout.max_lora_rank=8"], "rollout.max_lora_rank=8 serves a LoRA adapter, but learner.lora_rank=0 trains none"),
    (["rollout.max_lora_rank=8", "learner.lora_rank=16"], "learner.lora_rank=16 is above rollout.max_lora_rank=8"),
    (["rollout.max_lora_rank=12", "learner.lora_rank=8"], "rollout.max_lora_rank=12: vLLM accepts 0 (off) or one of 1, 8, 16"),
])
def test_an_adapter_push_needs_an_adapter_the_engines_can_load(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(overrides=overrides)
    assert load_config(overrides=["rollout.max_lora_rank=16", "learner.lora_rank=8"]).rollout.max_lora_rank == 16


def test_config_changes_are_what_a_variant_states(tmp_path):
    local = CONFIG_DIR / "local.yaml"
    critic = config_changes(CONFIG_DIR / "ablations" / "prm-dense-critic.yaml", local)
    # its own key, its base's keys (prm-dense.yaml), and a key equal to local.yaml's that it states anyway
    assert {"reward.prm_critic_init=true", "reward.prm=true", 'reward.prm_model=runs/prm/model',
            'learner.advantage=gae', 'learner.value_level=token'} <= set(critic)
    assert not any(o.startswith(("rollout.", "model.")) for o in critic)  # nothing of local.yaml itself
    # applied on another config, the overrides give that config with the variant's switch
    cfg = load_config(CONFIG_DIR / "learn-cpu.yaml", critic)
    assert cfg.learner.advantage == "gae" and cfg.reward.prm_critic_init and cfg.learner.lora_rank == 16
    assert cfg.learner.negative_advantage_scale == 1.0  # the critic-free down-weighting left behind
    (tmp_path / "v.yaml").write_text("base: w.yaml\nrollout:\n  max_turns: 1\n")
    (tmp_path / "w.yaml").write_text("rollout:\n  feedback: none\n")
    with pytest.raises(ConfigError, match=r"v\.yaml: not based on .*local\.yaml \(its base chain ends at .*w\.yaml\)"):
        config_changes(tmp_path / "v.yaml", local)


def test_every_study_arm_applies_on_the_learning_recipe():
    """``proctor study`` runs each arm's changes on ``learn-cpu.yaml``: none may clash with the recipe
    (the gae arms must not keep a critic-free setting the validator refuses)."""
    from proctor.studies.study import ARMS

    for arm in ARMS:
        cfg = load_config(CONFIG_DIR / "learn-cpu.yaml", config_changes(CONFIG_DIR / "ablations" / f"{arm}.yaml",
                                                                         CONFIG_DIR / "local.yaml"))
        assert cfg.learner.lora_rank == 16, arm  # the recipe underneath
