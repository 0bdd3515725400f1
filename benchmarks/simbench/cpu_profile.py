"""cProfile of ``benchmarks.simbench.run_fedloom`` with the process's CPU time as the clock.

On a loaded shared machine wall-clock profiles mostly measure the other jobs; CPU time
still says what this process spends where. Used for the A/B in
benchmarks/results/sim_vs_flower_cohort_profile.txt:

    python -m benchmarks.simbench.cpu_profile OUT.prof --workload logreg-1000 --cohort auto --threads 1 --data-dir D
"""

from __future__ import annotations

import cProfile
import io
import pstats
import runpy
import sys
import time


def main() -> None:
    out, args = sys.argv[1], sys.argv[2:]
    sys.argv = ["run_fedloom", *args]
    wall = time.perf_counter()
    profile = cProfile.Profile(time.process_time)
    profile.enable()
    try:
        runpy.run_module("benchmarks.simbench.run_fedloom", run_name="__main__")
    finally:
        profile.disable()
        profile.dump_stats(out)
        text = io.StringIO()
        pstats.Stats(profile, stream=text).sort_stats("cumulative").print_stats(40)
        print(f"WALL {time.perf_counter() - wall:.3f} CPU {time.process_time():.3f}")
        print(text.getvalue())


if __name__ == "__main__":
    main()
