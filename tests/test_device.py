"""Device placement on the CPU side: a batch moves whole to the model's device, and the weight
export's flat host buffers (one per dtype, reused push after push) hold exact views of the weights."""

import numpy as np
import torch

from proctor.learner.batch import Sample, collate
from proctor.learner.model import host_copy, to_numpy


def test_batch_moves_every_tensor_and_take_indexes_on_its_device():
    s = Sample([5, 6, 7, 8], [0, 0, 1, 1], [0.0, 0.0, -0.5, -0.25], [1], [(2, 4)], [1.0], version=3, id="p")
    b = collate([s, s], pad_id=0)
    b.extra["advantages"] = torch.ones(2, 4)
    moved = b.to("meta")  # a device that is not the CPU: nothing may stay behind
    tensors = [getattr(moved, f) for f in moved.__dataclass_fields__ if f not in ("extra", "info")]
    assert all(t.device.type == "meta" for t in tensors + list(moved.extra.values()))
    assert moved.info == b.info  # the host-side row counts stay on the host
    back = b.to("cpu").take([1])
    assert back.input_ids.tolist() == [[5, 6, 7, 8]] and back.extra["advantages"].shape == (1, 4)


def test_host_copy_views_one_buffer_per_dtype_and_reuses_it():
    g = torch.Generator().manual_seed(0)
    named = [("a", torch.randn(3, 4, generator=g)), ("b", torch.randn(5, generator=g).to(torch.bfloat16)),
             ("c", torch.randn(2, 2, generator=g))]
    bufs, views = host_copy(named, pin=False)
    assert {dt: b.numel() for dt, b in bufs.items()} == {torch.float32: 16, torch.bfloat16: 5}
    for (n, t), (m, v) in zip(named, views):
        assert n == m and torch.equal(v, t) and v.untyped_storage().data_ptr() == bufs[t.dtype].untyped_storage().data_ptr()
    assert to_numpy(views[1][1]).dtype == np.uint16
    assert np.array_equal(to_numpy(views[1][1]), named[1][1].view(torch.uint16).numpy())
    named[0][1].add_(1)  # the next push: new values, the same buffers
    again, views2 = host_copy(named, bufs, pin=False)
    assert all(again[dt] is bufs[dt] for dt in bufs) and torch.equal(views2[0][1], named[0][1])
