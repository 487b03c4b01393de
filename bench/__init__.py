"""Benchmarks run by ``proctor bench NAME``: each compares side by side in one run and prints one
JSON object (figures and ratios) as its last line."""


def parse_with_config(ap, argv: list[str]):
    """Adds ``--model`` and ``key=value`` overrides to ``ap``; returns (args, stderr console, config,
    prepared model dir)."""
    from cluster.config import load_config
    from cluster.model import resolve
    from cluster.progress import make_console

    ap.add_argument("--model", default=None)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    console = make_console(stderr=True)
    cfg = load_config(overrides=args.overrides + ([f"model.name={args.model}"] if args.model else []))
    return args, console, cfg, str(resolve(cfg.model.name, log=console.print))
