"""Start (or join) Ray for a single machine: loopback only, private temp dir, no usage stats.

Import this module before anything imports ray: Ray reads the variables below at import time.
"""

from __future__ import annotations

import os
import sys
import tempfile

from proctor.cluster import signals

# Makes every Ray component bind 127.0.0.1 instead of the machine's address (measured on ray 2.60).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
_IMPORTED_LATE = "ray" in sys.modules


def init_ray(address: str | None = None, num_cpus: int | None = None, tmp_dir: str | None = None):
    """``address=None`` starts a private local Ray bound to 127.0.0.1, unless this process runs as a
    Ray job (``RAY_ADDRESS`` set by ``ray job submit``): then it joins that cluster, as it does an
    explicit ``address``."""
    import ray

    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
        signals.install()
        return ray
    if _IMPORTED_LATE:
        raise RuntimeError("ray was imported before proctor.cluster.ray_local: it would bind the machine's address")
    # A private temp dir: a cluster recorded in the default one would be joined instead.
    tmp_dir = tmp_dir or tempfile.mkdtemp(prefix="proctor-ray-")
    os.environ["RAY_TMPDIR"] = tmp_dir
    ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False,
             _node_ip_address="127.0.0.1", _temp_dir=tmp_dir, log_to_driver=False)
    signals.install()  # ray.init's SIGTERM handler would exit without saving anything
    return ray
