"""Cluster launch YAMLs validate against Ray's own cluster-config schema; run configs load."""

import copy
from pathlib import Path

import pytest
import yaml

import cluster.ray_local  # noqa: F401  (before ray)
from cluster.config import load_config

ROOT = Path(__file__).resolve().parent.parent
LAUNCH = sorted((ROOT / "cluster" / "launch").glob("*.yaml"))
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def test_there_are_cloud_and_onprem_launch_files():
    providers = {yaml.safe_load(p.read_text())["provider"]["type"] for p in LAUNCH}
    assert {"aws", "local"} <= providers


@pytest.mark.parametrize("path", LAUNCH, ids=lambda p: p.name)
def test_launch_yaml_passes_rays_schema(path):
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load(path.read_text())
    validate_config(prepare_config(copy.deepcopy(raw)))
    setup = " ".join(raw["setup_commands"])
    assert "scripts/setup.sh" in setup and "PROCTOR_EXTRA=gpu" in setup
    assert all("--dashboard-host=127.0.0.1" in c for c in raw["head_start_ray_commands"] if "--head" in c)


def test_rays_schema_rejects_a_misspelled_key():
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((ROOT / "cluster" / "launch" / "aws-gpu.yaml").read_text())
    raw["head_node_typ"] = raw.pop("head_node_type")
    with pytest.raises((jsonschema.ValidationError, ValueError)):
        validate_config(prepare_config(raw))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_run_configs_load(path):
    cfg = load_config(path)
    assert cfg.learner.minibatch_size % cfg.learner.world_size == 0
