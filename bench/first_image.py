"""How long the README's first command takes: `genguard generate "a lighthouse at dusk"`.

    python bench/first_image.py [--repeats 3] [--model embedded:tiny-sd]

Runs the command as a user does (a fresh process each time, `python -m pipeline.cli`, this checkout
first on PYTHONPATH) in a fresh GENGUARD_HOME:
- cold: the first run there (embedded model cache empty: it is built, development keys created,
  database created and migrated);
- warm: the runs after it (model cache, keys and database in place);
and `genguard policy check "a cat"` in another fresh GENGUARD_HOME (cold). Prints wall seconds and
CPU seconds (user + system of the child process) per run, the machine's load average before each
run and the number of cores: on a shared machine the wall time depends on what else runs. Target
for the embedded model's first image: <= 15 s wall after install.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def timed(args: list[str], home: Path, cwd: Path) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (user + system) and exit status of one CLI run."""
    env = dict(os.environ)
    env["GENGUARD_HOME"] = str(home)
    env.pop("GENGUARD_DB", None)
    env.pop("GENGUARD_CACHE", None)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "genguard.pipeline.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        check=False,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        print(proc.stderr.decode(errors="replace")[-2000:], file=sys.stderr)
    return wall, cpu, proc.returncode


def report(label: str, args: list[str], home: Path, cwd: Path) -> None:
    load = os.getloadavg()[0]
    wall, cpu, code = timed(args, home, cwd)
    print(f"{label:28} wall {wall:6.2f} s   cpu {cpu:6.2f} s   exit {code}   load before {load:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3, help="warm runs (default 3)")
    parser.add_argument("--model", default="embedded:tiny-sd")
    options = parser.parse_args()
    print(f"cores {os.cpu_count()}, python {sys.version.split()[0]}")
    generate = ["generate", "a lighthouse at dusk", "--model", options.model]
    with tempfile.TemporaryDirectory() as root:
        home, policy_home, cwd = Path(root, "home"), Path(root, "policy-home"), Path(root, "work")
        cwd.mkdir()
        report("generate, cold", generate, home, cwd)
        for repeat in range(options.repeats):
            report(f"generate, warm {repeat + 1}", generate, home, cwd)
        report("policy check 'a cat', cold", ["policy", "check", "a cat"], policy_home, cwd)


if __name__ == "__main__":
    main()
