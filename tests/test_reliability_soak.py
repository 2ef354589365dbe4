"""benchmarks/soak.py, the long-run check, still runs and passes its own verdict (a few rounds: the real run is
`python benchmarks/soak.py`, 30 rounds of every method). With the runner on, each round also trains a run folder
end to end, so a descriptor left open by training (the run folder's lock, a log, TensorBoard) fails it."""

from __future__ import annotations

import subprocess
import sys

from test_train_support import REPO, subprocess_env


def test_soak_script_passes_its_verdict_on_a_few_rounds():
    process = subprocess.run([sys.executable, str(REPO / "benchmarks" / "soak.py"), "--rounds", "3", "--warmup", "1",
                              "--methods", "lora,vpt_deep"], env=subprocess_env(), capture_output=True, text=True,
                             timeout=600)
    assert process.returncode == 0, process.stdout + process.stderr
    assert "OK: no growth in open files" in process.stdout
