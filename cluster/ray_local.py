"""Start (or join) Ray for a single machine: loopback only, private temp dir, no usage stats.

Import this module before anything imports ray: Ray reads the variables below at import time.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import time
from pathlib import Path

from proctor.cluster import signals

# Makes every Ray component bind 127.0.0.1 instead of the machine's address (measured on ray 2.60).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
_IMPORTED_LATE = "ray" in sys.modules
# Set by ``ray job submit`` in the job's driver process (its value: the job's runtime env and metadata).
_JOINED = False
_JOB_VAR = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def in_ray_job() -> bool:
    return _JOB_VAR in os.environ


def job_path(path: str | Path) -> Path:
    """``path`` as this process should use it: in a Ray job, a relative path is taken from the home
    directory, since the job's working directory is Ray's temporary copy of the submitted one (deleted
    with the job's session); elsewhere, from the working directory as usual."""
    path = Path(path).expanduser()
    return Path.home() / path if in_ray_job() and not path.is_absolute() else path


def joined_cluster() -> bool:
    """Whether this process's Ray is a cluster it joined (``run.ray_address``, ``ray job submit``), whose
    other nodes may share no disk with this one, rather than a private local Ray."""
    return _JOINED


class ClusterUnreachable(RuntimeError):
    pass


def wait_reachable(address: str, timeout_s: float) -> None:
    """Raise ``ClusterUnreachable`` unless ``HOST:PORT`` (a Ray head's GCS, or ``ray://HOST:PORT``)
    accepts a connection within ``timeout_s`` (ray.init itself retries for many minutes). Addresses
    without a port (``auto``) are left to Ray."""
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not (host and port.isdigit()):
        return
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
            return
        except OSError as e:
            if time.monotonic() > deadline:
                raise ClusterUnreachable(f"run.ray_address={address}: no Ray head answered there within "
                                         f"{timeout_s:.0f} s (run.placement_timeout_s): {e}") from None
            time.sleep(1)


def init_ray(address: str | None = None, num_cpus: int | None = None, tmp_dir: str | None = None,
             timeout_s: float = 300):
    """``address=None`` starts a private local Ray bound to 127.0.0.1, unless this process runs as a
    Ray job (``RAY_ADDRESS`` set by ``ray job submit``): then it joins that cluster, as it does an
    explicit ``address`` (which must answer within ``timeout_s``)."""
    import ray

    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        global _JOINED
        wait_reachable(address, timeout_s)
        ray.init(address=address, log_to_driver=False)
        _JOINED = True
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
