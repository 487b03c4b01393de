"""``proctor bench learner``: the model-FLOP count it divides by, and one run on the tiny model."""

import json
from types import SimpleNamespace

import pytest

from proctor.bench.learner import iteration_flops, matmul_params, parse_layout


def test_iteration_flops_counts_every_network_pass():
    n = {"body": 10, "head": 3, "total": 13}
    fwd = 2 * (10 * 100 + 3 * 40)                   # policy forward: head on the 40 action tokens only
    critic = 2 * 10 * 100
    grpo = SimpleNamespace(advantage="grpo", kl_beta=0.0, old_logprobs="behaviour", ppo_epochs=1)
    assert iteration_flops(n, 100, 40, grpo) == 3 * fwd                          # actor forward + backward
    grpo_kl = SimpleNamespace(advantage="grpo", kl_beta=0.1, old_logprobs="behaviour", ppo_epochs=1)
    assert iteration_flops(n, 100, 40, grpo_kl) == 4 * fwd                       # + the reference forward
    gae = SimpleNamespace(advantage="gae", kl_beta=0.1, old_logprobs="recompute", ppo_epochs=2)
    assert iteration_flops(n, 100, 40, gae) == critic + 2 * fwd + 2 * 3 * (fwd + critic)
    lora = SimpleNamespace(advantage="grpo", kl_beta=0.1, old_logprobs="behaviour", ppo_epochs=1, lora_rank=16)
    assert iteration_flops(n, 100, 40, lora) == fwd + 2 * fwd           # frozen weights: input gradients only


def test_matmul_params_counts_a_tied_head_once(tiny_model_dir):
    n = matmul_params(str(tiny_model_dir))
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    total = sum(p.numel() for p in model.parameters())
    vocab_matrix = model.get_input_embeddings().weight.numel()
    assert n["total"] == total and n["head"] == vocab_matrix and n["body"] == total - vocab_matrix


def test_bad_layout_names_itself():
    assert parse_layout("grpo:bfloat16:2x1:chunk0") == {"advantage": "grpo", "dtype": "bfloat16", "zero_stage": 2,
                                                         "world_size": 1, "logprob_chunk_tokens": 0}
    assert parse_layout("gae:auto:0x2:lora16:chunk512")["lora_rank"] == 16
    assert parse_layout("grpo:bfloat16:0x1:padmask")["padding_mask"] == "always"
    for bad in ("grpo:0x1", "grpo:float32:0x1:rank8"):
        with pytest.raises(SystemExit, match=repr(bad)):
            parse_layout(bad)


@pytest.mark.slow
def test_bench_learner_reports_mfu(ray_local, tiny_model_dir, capsys):
    from proctor.bench.learner import main

    assert main(["--episodes", "4", "--prompt", "32", "--reply", "16", "--iterations", "1",
                 "--layouts", "grpo:float32:0x1,grpo:float32:0x1:chunk0:padmask", f"model.name={tiny_model_dir}"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["matmul_gflops"]["float32"] > 0
    a, b = result["layouts"]["grpo:float32:0x1"], result["layouts"]["grpo:float32:0x1:chunk0:padmask"]
    assert a["logprob_chunk_tokens"] == 1024 and b["logprob_chunk_tokens"] == 0
    assert a["padding_mask"] == "auto" and b["padding_mask"] == "always"
    assert a["model_tflop"] == b["model_tflop"] > 0 and 0 < a["mfu"] < 1
    assert a["mfu"] == pytest.approx(a["achieved_gflops"] / result["matmul_gflops"]["float32"])


@pytest.mark.parametrize("shape,params", [("smollm2-135m", 134_515_008), ("qwen2.5-0.5b", 494_032_768),
                                          ("qwen2.5-1.5b", 1_543_714_304)])
def test_shapes_have_the_public_models_parameter_counts(shape, params):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from proctor.bench import SHAPES

    kind, fields = SHAPES[shape]
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(kind, **fields, tie_word_embeddings=True))
    assert sum(p.numel() for p in model.parameters()) == params


def test_bench_learner_in_process_beside_bare_torch(tiny_model_dir, capsys):
    from proctor.bench.learner import main

    assert main(["--device", "cpu", "--episodes", "4", "--prompt", "32", "--reply", "16", "--iterations", "1",
                 "--layouts", "gae:float32:0x1,grpo:float32:0x1", f"model.name={tiny_model_dir}"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    bare = result["bare"]["float32"]
    assert bare["iteration_s"] > 0 and bare["peak_gpu_gib"] is None
    gae, grpo = result["layouts"]["gae:float32:0x1"], result["layouts"]["grpo:float32:0x1"]
    # a PPO iteration with a critic (its forward, forward+backward) is more work than one without
    assert gae["work_vs_bare"] > grpo["work_vs_bare"] > 0
    for lay in (gae, grpo):
        assert lay["ratio_vs_bare_work_equivalent"] == pytest.approx(
            bare["iteration_s"] * lay["work_vs_bare"] / lay["iteration_s"])
    with pytest.raises(SystemExit, match="one worker"):
        main(["--device", "cpu", "--layouts", "grpo:float32:0x2", f"model.name={tiny_model_dir}"])
