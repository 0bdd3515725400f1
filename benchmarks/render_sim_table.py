"""Print benchmarks/results/sim_vs_flower.json as the README's Markdown table."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> None:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "results" / "sim_vs_flower.json")
    report = json.loads(path.read_text())
    print(f"`{report['command']}` on {report['machine']['cores']} cores:\n")
    print("| workload | contender | wall s | peak RSS MiB | peak PSS MiB | final acc |")
    print("|---|---|---|---|---|---|")
    for name, entry in report["workloads"].items():
        for contender, r in entry["results"].items():
            print(
                f"| {name} | {contender} | {r['wall_seconds']:.1f} | {r['peak_rss_mib']:.0f} | "
                f"{r['peak_pss_mib']:.0f} | {100 * r['final_accuracy']:.2f}% |"
            )
    print("\n| workload | fedloom / floor | fedloom / Flower (time) | Flower / fedloom | RSS ratio | PSS ratio "
          "| overhead ms/update | Δacc vs bare |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for name, entry in report["workloads"].items():
        q = entry["ratios"]
        print(
            f"| {name} | {q['fedloom_over_floor']:.2f} | {q['fedloom_over_flower_time']:.2f} | "
            f"{q['flower_over_fedloom_time']:.1f}x | {q['fedloom_over_flower_rss']:.2f} | "
            f"{q['fedloom_over_flower_pss']:.2f} | {q['fedloom_overhead_ms_per_update']:.1f} | "
            f"{q['fedloom_minus_bare_accuracy_points']:+.2f} pt |"
        )


if __name__ == "__main__":
    main()
