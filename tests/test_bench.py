"""bench.py: one short run on the tiny corpus produces the table with ratios to vae.py."""
import json

import bench


def test_bench_table(corpus_dir, tmp_path):
    result = bench.main(["--data", corpus_dir, "--cpu", "--steps", "2", "--warmup", "1", "--out_dir", str(tmp_path)])
    assert set(result["table"]) == {"vae", "ivae", "ivae_mi", "ivae_ac"}
    assert result["table"]["vae"]["ratio_to_vae"] == 1.0
    for row in result["table"].values():
        assert row["ms_per_step"] > 0 and row["tokens_per_s"] > 0 and row["timed_steps"] == 2
    saved = json.loads(next(tmp_path.glob("cpu_*.json")).read_text())
    assert saved["table"]["ivae"]["ms_per_step"] == result["table"]["ivae"]["ms_per_step"]
    assert saved["torch"] and saved["device"].startswith("cpu") and saved["command"].startswith("python bench.py")
