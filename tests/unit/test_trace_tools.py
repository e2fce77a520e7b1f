"""bench/trace_summary.py and bench/smi_summary.py: the device-log readers pick the right rows."""

from bench.smi_summary import busy_samples, reason_names
from bench.trace_summary import last_prompt


def _row(t, mode, rows, tokens, context):
    return {"t": t, "mode": mode, "rows": rows, "tokens": tokens, "context": context, "gpu_ms": 1.0}


def test_last_prompt_takes_the_last_long_one_and_its_first_decode():
    rows = [
        _row(0.0, "extend", 1, 40000, 40000), _row(0.1, "extend", 1, 30000, 70000),  # a long warm-up prompt
        _row(0.2, "decode", 1, 1, 70001),
        _row(0.3, "extend", 1, 256, 256), _row(0.4, "decode", 1, 1, 257),  # a short prompt
        _row(1.0, "extend", 1, 65536, 65536), _row(2.0, "extend", 1, 34464, 100000),  # the measured one
        _row(3.0, "decode", 1, 1, 100001), _row(3.1, "decode", 1, 1, 100002),
    ]
    chunks, after = last_prompt(rows, min_tokens=65536)
    assert [c["t"] for c in chunks] == [1.0, 2.0]
    assert after["t"] == 3.0
    # a batch of two prompts is not one prompt's chunks
    assert last_prompt([_row(0.0, "extend", 2, 70000, 70000)], 65536) == ([], None)


def test_busy_samples_and_reasons():
    lines = ["2026/12/04 10:00:00.000, 1980, 120.5, 700.00, 40, 0x0000000000000001",
             "2026/12/04 10:00:00.100, 1530, 690.2, 700.00, 58, 0x0000000000000004",
             "2026/12/04 10:00:00.200, [N/A], 690.2, 700.00, 58, 0x0000000000000004",
             "2026/12/04 10:00:00.300, 1980"]
    assert busy_samples(lines, 250.0) == [(1530.0, 690.2, 700.0, 58.0, 4)]
    assert reason_names(0x4) == "SW power cap"
    assert reason_names(0x44) == "SW power cap, HW thermal"
    assert reason_names(0) == "none (full clock)"
