"""The shipped run configs (package data, found with ``importlib.resources``): ``local.yaml`` is the
default, ``tiny.yaml`` the CI smoke run, ``learn-cpu.yaml`` the CPU learning recipe, ``gpu-8.yaml`` one
node of 8 GPUs, ``ablations/`` the study's arms. ``--config NAME`` picks one by name."""
