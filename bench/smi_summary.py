"""Clocks and power while the GPU was busy, from an `nvidia-smi -lms ... --format=csv,noheader,nounits
--query-gpu=timestamp,clocks.sm,power.draw,power.limit,temperature.gpu,clocks_event_reasons.active` log: was a
long run held back by a power or thermal cap (the SM clock below its maximum, and why)?

    python bench/smi_summary.py $OUT/smi-100k.csv [--busy-watts 250]
"""

from __future__ import annotations

import argparse
import statistics
from collections import Counter

# nvmlClocksEventReasons bits (nvml.h); the first one is the GPU having nothing to do.
REASONS = {0x1: "idle", 0x2: "applications clocks", 0x4: "SW power cap", 0x8: "HW slowdown", 0x10: "sync boost",
           0x20: "SW thermal", 0x40: "HW thermal", 0x80: "HW power brake", 0x100: "display clock"}


def reason_names(mask: int) -> str:
    names = [name for bit, name in REASONS.items() if mask & bit]
    return ", ".join(names) if names else "none (full clock)"


def busy_samples(lines, busy_watts: float) -> list[tuple[float, float, float, float, int]]:
    """(SM clock MHz, power W, power limit W, temperature C, reasons mask) of each sample drawing more than
    busy_watts; lines that do not parse (a "[N/A]" field, a truncated last line) are skipped."""
    busy = []
    for line in lines:
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 6:
            continue
        try:
            clock, power, limit, temp = (float(p) for p in parts[1:5])
            mask = int(parts[5], 16)
        except ValueError:
            continue
        if power > busy_watts:
            busy.append((clock, power, limit, temp, mask))
    return busy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv")
    parser.add_argument("--busy-watts", type=float, default=250.0, help="samples drawing more than this count as busy")
    args = parser.parse_args()
    try:
        with open(args.csv) as f:
            busy = busy_samples(f, args.busy_watts)
    except OSError as exc:
        raise SystemExit(f"smi_summary: cannot read {args.csv}: {exc.strerror}") from None
    if not busy:
        raise SystemExit(f"no sample above {args.busy_watts} W in {args.csv}")
    clocks = [b[0] for b in busy]
    powers = [b[1] for b in busy]
    print(f"busy samples: {len(busy)} (> {args.busy_watts:.0f} W); power limit {busy[0][2]:.0f} W")
    print(f"SM clock MHz: min {min(clocks):.0f}, median {statistics.median(clocks):.0f}, max {max(clocks):.0f}")
    print(f"power W: median {statistics.median(powers):.0f}, max {max(powers):.0f}; "
          f"temperature max {max(b[3] for b in busy):.0f} C")
    for mask, n in Counter(b[4] for b in busy).most_common():
        print(f"  {n:5d} samples ({100 * n / len(busy):5.1f} %): {reason_names(mask)} [0x{mask:x}]")


if __name__ == "__main__":
    main()
