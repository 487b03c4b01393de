import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

import proctor.cluster.ray_local  # noqa: F401  (before anything imports ray)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Datasets' cache in a private dir; the prepared embedded model is shared via PROCTOR_CACHE."""
    os.environ.setdefault("PROCTOR_CACHE", str(tmp_path_factory.mktemp("proctor-cache")))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="session")
def sandbox():
    """One sandbox for the session: a fork server as root (CI), per-run bwrap otherwise."""
    from proctor.sandbox_pool.runner import Sandbox

    with Sandbox("auto", slots=2) as sb:
        yield sb


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random-init 2-layer Llama (hidden 128, head_dim 64: the CPU attention kernels need >= 32) with a real chat tokenizer, saved as a HF dir."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from proctor.cluster.model import embedded_gguf

    gguf = embedded_gguf()
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
                      tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    model = LlamaForCausalLM(cfg).to(torch.float32)
    out = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def v16_model_dir(tmp_path_factory):
    """A 16-token Llama: small enough that 'say token 5' is learnable in a few PPO iterations."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=16, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128,
                      tie_word_embeddings=True, bos_token_id=0, eos_token_id=1)
    out = tmp_path_factory.mktemp("v16")
    LlamaForCausalLM(cfg).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def ray_local(tmp_path_factory):
    """A private local Ray (loopback only) for the session."""
    from proctor.cluster.ray_local import init_ray

    ray = init_ray(num_cpus=2, tmp_dir=str(tmp_path_factory.mktemp("ray")))
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def start_up_stand_ins(ray_local):
    """Actors for start-up tests (``sandbox_pool.starting``), each answering ``info`` and ``stats``:
    ``dies`` (its worker process ends in the constructor, as in a crash), ``fails`` (its constructor
    raises ``RuntimeError("set-up failed")``) and ``starts``."""
    from types import SimpleNamespace

    class Probe:
        def info(self):
            return {}

        def stats(self):
            return {"version": 0}

    class Dies(Probe):
        def __init__(self):
            os._exit(1)  # not an error raised by the set-up: the process is gone

    class Fails(Probe):
        def __init__(self):
            raise RuntimeError("set-up failed")

    remote = ray_local.remote(num_cpus=0)
    return SimpleNamespace(dies=remote(Dies), fails=remote(Fails), starts=remote(Probe))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_bucket():
    """An S3 endpoint on 127.0.0.1 (moto's server, a test dependency) with one bucket; yields the
    ``run.storage`` URI prefix of that bucket and the credentials a client needs (environment variables)."""
    import socket
    import time

    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    creds = {"AWS_ACCESS_KEY_ID": "proctor-test", "AWS_SECRET_ACCESS_KEY": "proctor-test", "AWS_EC2_METADATA_DISABLED": "true"}
    os.environ.update(creds)
    try:
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    pytest.fail("moto_server did not start")
                time.sleep(0.2)
        from pyarrow import fs

        fs.S3FileSystem(endpoint_override=f"127.0.0.1:{port}", scheme="http", region="us-east-1",
                        allow_bucket_creation=True).create_dir("proctor")
        yield f"s3://proctor/{{}}?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1", creds
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # No build isolation: the venv's setuptools builds it, nothing is fetched.
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "--wheel-dir", str(out), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (path,) = out.glob("proctor-*.whl")
    return path


@pytest.fixture(scope="session")
def installed(wheel, tmp_path_factory) -> dict:
    """A fresh venv with the wheel; the project's site-packages on its path through a .pth (read by
    the fresh venv's site, so the editable install's own .pth files there are not)."""
    env_dir = tmp_path_factory.mktemp("fresh") / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    (Path(purelib) / "_proctor_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    proc = subprocess.run([python, "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    elsewhere = tmp_path_factory.mktemp("elsewhere")  # not the checkout: nothing there to import by accident
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    # `ray` as an installed proctor's user has it (the project's ray, run by this venv's python)
    (env_dir / "bin" / "ray").write_text(f"#!{python}\nimport sys\nfrom ray.scripts.scripts import main\nsys.exit(main())\n")
    (env_dir / "bin" / "ray").chmod(0o755)
    return {"python": python, "bin": env_dir / "bin", "cwd": elsewhere, "env": env, "venv": env_dir}
