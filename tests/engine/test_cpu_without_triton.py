"""The CPU image installs no Triton (docker/install-deps.sh): a CPU rank must run without importing it. In a
subprocess where `import triton` fails, a rank's scheduler (overlap on, as the GPU runs it) prefills, decodes and
samples greedy (chained) and seeded rows."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_a_cpu_rank_runs_without_triton(tiny_llama: str) -> None:
    code = textwrap.dedent(f"""
        import sys
        sys.modules["triton"] = None  # `import triton` raises ImportError, as in the CPU image
        from tests.engine.scheduler_harness import Arrival, SchedulerHarness, generate_msg
        harness = SchedulerHarness({tiny_llama!r})
        results = harness.run([
            Arrival(0, generate_msg("greedy", [5, 6, 7], max_new_tokens=8, ignore_eos=True)),
            Arrival(6, generate_msg("seeded", [8, 9], max_new_tokens=4, ignore_eos=True, temperature=0.9,
                                    sampling_seed=1)),
        ])
        assert sorted(len(r.output_ids) for r in results.values()) == [4, 8], results
        assert harness.scheduler.num_overlapped_steps > 0
        print("ran without triton")
    """)
    env = {**os.environ, "TESSERA_OVERLAP_ON_CPU": "1", "PYTHONPATH": ROOT}
    env.pop("TRITON_INTERPRET", None)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert res.returncode == 0 and "ran without triton" in res.stdout, res.stderr[-3000:]
