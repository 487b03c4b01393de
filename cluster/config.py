"""Run configuration: YAML files validated by pydantic, with ``key=value`` overrides.

``--config`` takes a file path or the name of a shipped config (``tiny``, ``ablations/single-turn``:
the files of ``proctor.configs``, package data). Each stage owns its section's model; this module
composes them. An unknown key or a bad value is one ``ConfigError`` naming it (and the file it came
from).
"""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from proctor.learner.config import LearnerConfig
from proctor.reward.config import PRMConfig, RewardConfig
from proctor.rollout.config import RolloutConfig
from proctor.sandbox_pool.config import SandboxConfig

CONFIG_DIR = Path(str(resources.files("proctor.configs")))  # the shipped configs
LOCAL_CONFIG = CONFIG_DIR / "local.yaml"  # the default: CPU, one node


class ConfigError(ValueError):
    pass


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(default="smollm2-135m-instruct", description="embedded name, .gguf, HF dir or hub name")
    cache_dir: str | None = Field(default=None, description="where prepared models are kept (default: "
                                  "$PROCTOR_CACHE/models, ~/.cache/proctor/models)")


class DataConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    train: str = Field(default="bundled", description="training problems: bundled, mbpp397, humaneval, a .jsonl / "
                       ".parquet file in proctor's problem format, or ADAPTER:SOURCE (e.g. mbpp:path/to/mbpp.jsonl)")
    eval: str = Field(default="humaneval", description="held-out problems (same forms as data.train): proctor eval's "
                      "default dataset and the training run's held-out evaluation (run.eval_problems)")
    limit: int | None = Field(default=None, ge=1, description="train on only the first N problems of data.train "
                              "(after skip); evaluations take --limit")
    skip: int = Field(default=0, ge=0, description="leave out the first N problems of data.train (e.g. a slice "
                      "kept for evaluation); evaluations take --skip")


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    out_dir: str = Field(default="runs/local", description="the run directory on the driver's node (config, log, "
                         "metrics, TensorBoard, plots); proctor train --out sets it too and wins. In a Ray job a "
                         "relative path is taken from the home directory (the job's working directory is a "
                         "temporary copy)")
    storage: str = Field(default="", description="where checkpoints and the saved policy go: a path or a filesystem "
                         "URI (s3://bucket/prefix, gs://..., hdfs://...) that every learner rank writes to from its "
                         "own node and the driver reads; empty = the run directory, which serves when every rank "
                         "sees the driver's disk (checked before the first rollout)")
    seed: int = Field(default=0, description="seeds the problem draw, the sampling and the learner's initialisation")
    iterations: int = Field(default=10, ge=1, description="training iterations (rollout -> reward -> learn -> push)")
    ray_address: str | None = Field(default=None, description="None: start a private local Ray")
    problems_per_iteration: int = Field(default=4, ge=1, description="training problems per PPO iteration")
    draw: Literal["sample", "epoch"] = Field(
        default="sample", description="how an iteration's problems are drawn: sample = a fresh seeded draw each "
        "iteration (problems repeat, some are never seen); epoch = passes over a seeded shuffle of the whole set, "
        "every problem once before any repeats")
    checkpoint_every: int = Field(default=1, ge=0, description="iterations between checkpoints (0 = only at the end)")
    max_restarts: int = Field(default=2, ge=0, description="times a dead learner worker is replaced (the learner "
                              "rebuilt from the last checkpoint, the iterations after it run again); 0 = stop")
    save_policy: bool = Field(default=False, description="write the final actor as a HF model dir to STORAGE/policy "
                              "(for proctor eval --model, transformers, vLLM)")
    wandb: bool = Field(default=False, description="also log every iteration's metrics to Weights & Biases "
                        "(WANDB_MODE=offline writes the run under RUN_DIR/wandb without a network)")
    wandb_project: str = Field(default="proctor", description="the W&B project (with run.wandb)")
    learner_cpus: float = Field(default=1.0, gt=0, description="Ray CPUs reserved per learner worker")
    engine_cpus: float = Field(default=0.5, ge=0, description="Ray CPUs reserved per engine")
    async_rollout: bool = Field(default=False, description="one-step-off: rollout k+1 runs while the learner "
                                "trains on k (its episodes are one weight version behind; importance ratios correct)")
    soup: int = Field(default=1, ge=1, description="proctor learn: LoRA runs trained per seed (seed S's run j with "
                      "run.seed = S * soup + j), their adapters averaged into the seed's policy (a model soup); 1 = one run")
    eval_problems: int = Field(default=0, ge=0, description="held-out problems (first N of data.eval); 0 = no eval")
    eval_every: int = Field(default=0, ge=0, description="iterations between held-out evals (0 = after the last only)")
    learner_gpus: float = Field(default=0, ge=0, description="GPUs per learner worker (0 on CPU machines)")
    engine_gpus: float = Field(default=0, ge=0, description="GPUs per engine (0 on CPU machines)")
    placement: Literal["none", "pack", "spread", "strict_pack"] = Field(
        default="none", description="reserve learner + engines as one Ray placement group (none: CPU fractions only)")
    placement_timeout_s: float = Field(default=300, gt=0, description="how long to wait for the head at run.ray_address, "
                                       "the placement group, and a replacement engine on a cluster")


class ProctorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    sandbox: SandboxConfig = SandboxConfig()
    rollout: RolloutConfig = RolloutConfig()
    learner: LearnerConfig = LearnerConfig()
    reward: RewardConfig = RewardConfig()
    prm: PRMConfig = PRMConfig()
    run: RunConfig = RunConfig()

    @model_validator(mode="after")
    def _critic_for_critic_init(self):
        if self.reward.prm_critic_init and self.learner.advantage != "gae":
            raise ValueError(f"reward.prm_critic_init needs a critic, but learner.advantage={self.learner.advantage} "
                             "trains none (use learner.advantage=gae)")
        return self

    @model_validator(mode="after")
    def _adapter_push(self):
        served, trained = self.rollout.max_lora_rank, self.learner.lora_rank
        if served and not trained:
            raise ValueError(f"rollout.max_lora_rank={served} serves a LoRA adapter, but learner.lora_rank=0 trains "
                             "none (set learner.lora_rank, or rollout.max_lora_rank=0 to push the full network)")
        if served and trained > served:
            raise ValueError(f"learner.lora_rank={trained} is above rollout.max_lora_rank={served}: the engines "
                             "could not load the adapter")
        return self

    @model_validator(mode="after")
    def _soup_of_adapters(self):
        if self.run.soup > 1 and not self.learner.lora_rank:
            raise ValueError(f"run.soup={self.run.soup} averages LoRA adapters, but learner.lora_rank=0 trains none "
                             "(set learner.lora_rank, or run.soup=1)")
        return self


def shipped_configs() -> list[str]:
    """The shipped configs' names: ``local``, ``tiny``, ``ablations/single-turn``, ..."""
    return sorted(p.relative_to(CONFIG_DIR).with_suffix("").as_posix() for p in CONFIG_DIR.rglob("*.yaml"))


def resolve_config(spec: str | Path | None) -> Path:
    """A ``--config`` value as a file: an existing path as given, else a shipped config by name
    (``tiny``, ``tiny.yaml``, ``ablations/single-turn``); None is the default (``local``)."""
    if spec is None or str(spec) == "":
        return LOCAL_CONFIG
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    name = str(spec).removesuffix(".yaml").removesuffix(".yml")
    shipped = shipped_configs()
    if name in shipped:
        return CONFIG_DIR / f"{name}.yaml"
    hint = difflib.get_close_matches(name, shipped, n=1) or difflib.get_close_matches(path.stem, shipped, n=1)
    did = f" (did you mean {hint[0]!r}?)" if hint else ""
    if path.suffix in (".yaml", ".yml") or "/" in str(spec) or path.exists():
        raise ConfigError(f"config file {spec} does not exist{did}")
    raise ConfigError(f"no config named {str(spec)!r}: not a file, nor a shipped config{did}; "
                      f"shipped: {', '.join(shipped)}")


def shipped_name(spec: str | Path | None) -> str | None:
    """The shipped config ``spec`` stands for (``tiny``), or None for a file of the user's or a bad
    name. ``configs/NAME.yaml``, the form run records kept from a checkout, counts as ``NAME``."""
    legacy = Path(str(spec or ""))
    if legacy.parts[:1] == ("configs",) and legacy.suffix == ".yaml" and not legacy.is_file():
        spec = legacy.relative_to("configs").with_suffix("").as_posix()
    try:
        path = resolve_config(spec).resolve()
    except ConfigError:
        return None
    root = CONFIG_DIR.resolve()
    return path.relative_to(root).with_suffix("").as_posix() if path.is_relative_to(root) else None


def _known_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, f in model.model_fields.items():
        ann = f.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys += _known_keys(ann, f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


# Names users bring from verl, OpenRLHF and TRL (a full key or its last part) -> proctor's key.
PEER_NAMES = {
    "learning_rate": "learner.lr", "lr": "learner.lr", "actor_learning_rate": "learner.lr",
    "actor.optim.lr": "learner.lr", "critic_learning_rate": "learner.critic_lr", "critic.optim.lr": "learner.critic_lr",
    "model_name_or_path": "model.name", "model.path": "model.name", "pretrain": "model.name", "model_name": "model.name",
    "rollout.n": "rollout.samples_per_problem", "n_samples_per_prompt": "rollout.samples_per_problem",
    "num_generations": "rollout.samples_per_problem", "num_return_sequences": "rollout.samples_per_problem",
    "total_epochs": "run.iterations", "num_episodes": "run.iterations", "max_steps": "run.iterations",
    "num_train_epochs": "run.iterations", "total_training_steps": "run.iterations",
    "kl_coef": "learner.kl_beta", "init_kl_coef": "learner.kl_beta", "kl_loss_coef": "learner.kl_beta",
    "beta": "learner.kl_beta", "kl_ctl": "learner.kl_beta",
    "clip_ratio": "learner.clip_eps", "eps_clip": "learner.clip_eps", "cliprange": "learner.clip_eps",
    "epsilon": "learner.clip_eps", "value_clip": "learner.value_clip_eps", "cliprange_value": "learner.value_clip_eps",
    "lam": "learner.gae_lambda", "lambd": "learner.gae_lambda", "adv_estimator": "learner.advantage",
    "ppo_epochs": "learner.ppo_epochs", "num_ppo_epochs": "learner.ppo_epochs",
    "ppo_mini_batch_size": "learner.minibatch_size", "mini_batch_size": "learner.minibatch_size",
    "train_batch_size": "run.problems_per_iteration", "rollout_batch_size": "run.problems_per_iteration",
    "per_device_train_batch_size": "learner.minibatch_size",
    "response_length": "rollout.max_new_tokens", "max_response_length": "rollout.max_new_tokens",
    "generate_max_len": "rollout.max_new_tokens", "max_completion_length": "rollout.max_new_tokens",
    "prompt_max_len": "rollout.max_model_len", "max_prompt_length": "rollout.max_model_len",
    "temperature": "rollout.temperature", "top_p": "rollout.top_p",
    "tensor_model_parallel_size": "rollout.engines", "vllm_num_engines": "rollout.engines",
    "zero_stage": "learner.zero_stage", "gradient_checkpointing": "learner.gradient_checkpointing",
    "lora_rank": "learner.lora_rank", "lora_r": "learner.lora_rank", "lora_alpha": "learner.lora_alpha",
    "seed": "run.seed", "output_dir": "run.out_dir", "save_path": "run.out_dir", "default_local_dir": "run.out_dir",
    "train_files": "data.train", "prompt_data": "data.train", "dataset_name": "data.train",
    "val_files": "data.eval", "eval_dataset": "data.eval", "bf16": "learner.dtype",
}


def did_you_mean(key: str, known: list[str] | None = None) -> str | None:
    """The proctor key a mistyped or borrowed name most likely means: a peer framework's name (whole or
    its last part), else the closest key by spelling, whole or by its last part within the same section."""
    known = known or _known_keys(ProctorConfig)
    last = key.rsplit(".", 1)[-1]
    for name in (key, key.split(".", 1)[-1], last):
        if name in PEER_NAMES:
            return PEER_NAMES[name]
    section = key.rsplit(".", 1)[0] if "." in key else ""
    leaves = {k.rsplit(".", 1)[-1]: k for k in known if k.rsplit(".", 1)[0] == section}
    if hint := difflib.get_close_matches(last, list(leaves), n=1, cutoff=0.7):
        return leaves[hint[0]]
    hint = difflib.get_close_matches(key, known, n=1)
    return hint[0] if hint else None


def _set_dotted(tree: dict, key: str, value: Any) -> None:
    node = tree
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"config key {key!r}: {p!r} is not a section")
    node[parts[-1]] = value


def parse_overrides(overrides: list[str]) -> dict:
    tree: dict = {}
    known = _known_keys(ProctorConfig)
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. rollout.max_turns=3)")
        if key not in known:
            hint = did_you_mean(key, known)
            raise ConfigError(f"override {item!r}: unknown config key {key!r}"
                              + (f" (did you mean {hint!r}?)" if hint else ""))
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        _set_dotted(tree, key, value)
    return tree


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _base_path(path: Path, base: str) -> Path:
    """``base:`` of ``path``: a file relative to it, else a shipped config by name (``base: tiny``)."""
    near = path.parent / base
    if near.is_file():
        return near
    try:
        return resolve_config(base)
    except ConfigError:
        return near  # reported by _read_tree as the missing base of ``path``


def _read_tree(path: Path, seen: tuple[Path, ...] = (), stop: Path | None = None) -> dict:
    """A config file's sections; ``base: OTHER.yaml`` (relative to the file, or a shipped config's
    name) is read first and this file's keys are merged over it, so a variant (e.g. an ablation)
    states only what it changes. The chain ends early at ``stop`` (not read)."""
    if stop is not None and path.resolve() == stop.resolve():
        return {}
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist" + (f" (base of {seen[-1]})" if seen else ""))
    if path.resolve() in seen:
        raise ConfigError(f"{path}: base configs form a cycle: {' -> '.join(map(str, (*seen, path.resolve())))}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    base = data.pop("base", None)
    if base is None:
        if stop is not None:
            raise ConfigError(f"{seen[0] if seen else path}: not based on {stop} (its base chain ends at {path})")
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: base must be a path to another config file, got {base!r}")
    return _merge(_read_tree(_base_path(path, base), (*seen, path.resolve()), stop), data)


def _yaml_value(v: Any) -> str:
    """``v`` as one line of YAML that ``parse_overrides`` reads back as ``v`` (5e-05 -> ``5.0e-05``: YAML 1.1
    reads a bare ``5e-05`` as a string)."""
    return yaml.safe_dump(v, default_flow_style=True, width=float("inf"), allow_unicode=True).removesuffix(
        "\n...\n").rstrip("\n")


def config_changes(path: str | Path, base: str | Path) -> list[str]:
    """What a variant states, as ``key=value`` overrides to apply on another config: the keys that
    ``path`` and the files of its ``base`` chain set, up to (not including) ``base``."""
    def flat(tree: dict, prefix: str = "") -> list[str]:
        out: list[str] = []
        for k, v in tree.items():
            out += flat(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}={_yaml_value(v)}"]
        return out
    return flat(_read_tree(resolve_config(path), stop=resolve_config(base)))


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> ProctorConfig:
    """Load ``path`` (a file or a shipped config's name; default ``local``) and its ``base`` chain,
    apply ``key=value`` overrides, validate."""
    path = resolve_config(path)
    overridden = {item.partition("=")[0].strip(): item for item in overrides}
    data = _merge(_read_tree(path), parse_overrides(list(overrides)))
    try:
        return ProctorConfig.model_validate(data)
    except ValidationError as e:
        msgs = []
        for err in e.errors():
            key = ".".join(str(p) for p in err["loc"])
            # the file, or the override that set the key, or the file with the overrides under a section
            under = [o for k, o in overridden.items() if not key or k.startswith(key + ".")]
            where = f"override {overridden[key]!r}" if key in overridden else \
                f"{path} with {', '.join(map(repr, under))}" if under else str(path)
            if err["type"] == "extra_forbidden":
                hint = did_you_mean(key)
                msgs.append(f"{where}: unknown config key {key!r}" + (f" (did you mean {hint!r}?)" if hint else ""))
            elif err["type"] == "value_error" and key not in overridden:  # a rule across keys: its message names them
                msgs.append(f"{where}: " + err["msg"].removeprefix("Value error, "))
            else:
                msgs.append(f"{where}: config key {key!r}: {err['msg']} (got {err.get('input')!r})")
        raise ConfigError("; ".join(msgs)) from None


def dump_config(cfg: ProctorConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(), sort_keys=False)
