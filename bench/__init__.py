"""Benchmarks run by ``proctor bench NAME``: each compares side by side in one run and prints one
JSON object (figures and ratios) as its last line."""

# Random-init networks of public models' shapes (``--shape``): device benches need the network's
# size, not its weights, and a lent machine may reach no hub.
SHAPES = {
    "smollm2-135m": ("llama", {"vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536,
                               "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3}),
    "qwen2.5-0.5b": ("qwen2", {"vocab_size": 151936, "hidden_size": 896, "intermediate_size": 4864,
                               "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2}),
    "qwen2.5-1.5b": ("qwen2", {"vocab_size": 151936, "hidden_size": 1536, "intermediate_size": 8960,
                               "num_hidden_layers": 28, "num_attention_heads": 12, "num_key_value_heads": 2}),
}


def shape_dir(shape: str, out_dir: str) -> str:
    """Write a random-init bf16 HF dir of ``shape`` (one of ``SHAPES``) to ``out_dir``; built on the
    GPU where there is one (seconds, not minutes, for 1.5B parameters)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    kind, fields = SHAPES[shape]
    config = AutoConfig.for_model(kind, **fields, tie_word_embeddings=True, max_position_embeddings=32768,
                                  bos_token_id=0, eos_token_id=1, dtype="bfloat16")
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(out_dir)
    return out_dir


def parse_with_config(ap, argv: list[str]):
    """Adds ``--model``, ``--shape`` and ``key=value`` overrides to ``ap``; returns (args, stderr
    console, config, prepared model dir)."""
    import tempfile

    from proctor.cluster.config import load_config
    from proctor.cluster.model import resolve
    from proctor.cluster.progress import make_console

    ap.add_argument("--model", default=None)
    ap.add_argument("--shape", choices=sorted(SHAPES), default=None,
                    help="a random-init network of this public model's shape instead of --model (no download)")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    console = make_console(stderr=True)
    if args.shape:
        args.model = shape_dir(args.shape, tempfile.mkdtemp(prefix=f"proctor-{args.shape}-"))
        console.print(f"random-init {args.shape} in {args.model}")
    cfg = load_config(overrides=args.overrides + ([f"model.name={args.model}"] if args.model else []))
    return args, console, cfg, str(resolve(cfg.model.name, log=console.print))
