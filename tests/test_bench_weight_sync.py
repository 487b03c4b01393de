import json

import pytest


def test_export_on_device_beside_one_bulk_copy(tiny_model_dir, capsys):
    from proctor.bench.weight_sync import main

    assert main(["--device", "cpu", "--repeats", "2", f"model.name={tiny_model_dir}", "learner.dtype=float32"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["learner_dtype"] == "float32"
    assert result["bytes"] == result["bulk_bytes"] > 0  # the export and the bulk copy move the same bytes
    assert result["export_s"] > 0 and result["bulk_copy_s"] > 0
    assert result["ratio_export_vs_bulk"] == pytest.approx(result["export_s"] / result["bulk_copy_s"])
    assert result["export_put_s"] > 0  # Ray is installed here: the push's ray.put is timed too
