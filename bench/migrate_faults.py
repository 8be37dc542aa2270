"""What users see when something breaks during the v1.20 -> v1.21 migration, with the probe on.

On a private lab of its own (``lab up --world v1.20`` with a copy of ``inventories/lab``,
ports moved by ``--port-offset``, region addresses ``127.0.<block>.N``) it upgrades the primary
alone, then runs ``apply --migration v1.20-to-v1.21 --auto-approve --probe`` once per fault,
rolling back (``rollback --migration --auto-approve``) between runs:

- ``none``: no fault, the baseline of the same run;
- ``satellite killed``: when the second wave starts (the first progress line of a region
  that is not the canary), the canary region's satellite pod (the bundled proxy the lab runs
  for it) is killed with SIGKILL; the lab restarts it;
- ``primary 503``: when the second wave starts, the primary answers every API request with
  503 for 5 s (the emulator's fault rules, ``POST /emulator/faults``), then normally;
- ``apiserver stopped``: when the second wave starts, ``ap-southeast``'s kube-apiserver is
  stopped (SIGSTOP, so it holds its port and answers nothing) and resumed after the apply
  ends; run last.

It prints per run the exit code, the wall time, the probe's failed count, longest gap and
p99 during, and each failure line of the report. The lab is taken down at the end.

    .venv/bin/python bench/migrate_faults.py [--port-offset 5500] [--address-block 50]
                                             [--only none|satellite|primary|apiserver]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(ROOT), *(p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench")]

import httpx  # noqa: E402

from coder_migrate.lab.paths import CacheLayout, StateLayout  # noqa: E402
from coder_migrate.lab.runtime import Lab  # noqa: E402
from coder_migrate.lab.settings import LabSettings  # noqa: E402
from tests.helpers import REPO, PrivateLab, relocated_inventory  # noqa: E402

CLI = [str(Path(sys.executable).parent / "coder-migrate")]
CANARY = "us-east"
STOPPED_REGION = "ap-southeast"
MIGRATION = ["--migration", "v1.20-to-v1.21"]


class Run:
    def __init__(self, lab: PrivateLab, inventory: Path) -> None:
        self.lab = lab
        self.inventory = inventory
        self.env = {**os.environ, **lab.environment(), "COLUMNS": "220"}
        self.settings = LabSettings.create(port_offset=lab.port_offset, world="v1.20")

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([*CLI, *args], env=self.env, capture_output=True, text=True,
                                timeout=900, check=False)
        if check and result.returncode != 0:
            raise SystemExit(f"{' '.join(args)} exited {result.returncode}:\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result

    @property
    def admin(self) -> dict[str, str]:
        token = (self.lab.state_dir / "secrets" / "coder-token").read_text().strip()
        return {"Session-Token": token}

    def pods(self) -> list[dict[str, object]]:
        """The region pods the lab runs (``pods.json``)."""
        data = json.loads((self.lab.state_dir / "pods.json").read_text())
        return list(data["pods"])

    def migrate(self, trigger: Callable[[], None] | None, after: Callable[[], None] | None
                ) -> tuple[int, float, str]:
        """``apply --migration --probe``; *trigger* runs at the second wave's first line."""
        started = time.monotonic()
        process = subprocess.Popen(
            [*CLI, "apply", *MIGRATION, "-i", str(self.inventory), "--auto-approve",
             "--probe"], env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True)
        assert process.stdout is not None
        lines: list[str] = []
        fired = False
        for line in process.stdout:
            lines.append(line)
            words = line.split()
            if (trigger is not None and not fired and len(words) > 1
                    and words[0] == "started" and words[1] != CANARY):
                fired = True
                threading.Thread(target=trigger, daemon=True).start()
        code = process.wait(timeout=900)
        seconds = time.monotonic() - started
        if after is not None:
            after()
        return code, seconds, "".join(lines)


def kill_canary_satellite(run: Run) -> Callable[[], None]:
    def fire() -> None:
        for pod in run.pods():
            if pod.get("cluster") in (CANARY, f"lab-{CANARY}") and pod.get("mode") == "satellite":
                os.kill(int(str(pod["pid"])), signal.SIGKILL)
                print(f"  killed {pod.get('namespace')}/{pod.get('deployment')} "
                      f"pid {pod['pid']}", flush=True)
                return
        print("  no satellite pod of the canary found", flush=True)

    return fire


def primary_503(run: Run) -> Callable[[], None]:
    base = f"http://127.0.0.1:{run.settings.coderd_port}/emulator/faults"

    def fire() -> None:
        rule = httpx.post(base, headers=run.admin, json={"kind": "status", "status": 503},
                          timeout=5)
        rule.raise_for_status()
        time.sleep(5)
        httpx.delete(f"{base}/{rule.json()['id']}", headers=run.admin, timeout=5)
        print("  the primary answered 503 for 5 s", flush=True)

    return fire


def apiserver_pid(run: Run, region: str) -> int:
    out = subprocess.run(["pgrep", "-f", f"kwok/{region}/clusters/{region}/bin/kube-apiserver"],
                         capture_output=True, text=True, check=False).stdout.split()
    matches = [int(pid) for pid in out
               if str(run.lab.state_dir) in Path(f"/proc/{pid}/cmdline").read_text()]
    if not matches:
        raise SystemExit(f"no kube-apiserver of {region} in {run.lab.state_dir}")
    return matches[0]


def summary(output: str) -> tuple[str, list[str]]:
    total = next((line for line in output.splitlines() if line.startswith("total: ")), "")
    failures = [line.strip() for line in output.splitlines()
                if re.match(r"^\s+[\w-]+: \d+ failed (request|websocket)", line)]
    stopped = [line.strip() for line in output.splitlines()
               if line.startswith(("error:", "stopped.")) or "  failed " in line]
    return total, failures + stopped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port-offset", type=int, default=5500)
    parser.add_argument("--address-block", type=int, default=50)
    parser.add_argument("--only", action="append", default=[], metavar="FAULT",
                        help="run only these faults (none, satellite, primary, apiserver; "
                        "repeatable)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as temporary:
        lab = PrivateLab(Path(temporary) / "lab", args.port_offset, args.address_block)
        inventory = relocated_inventory(REPO / "inventories" / "lab",
                                        Path(temporary) / "inventory", lab)
        run = Run(lab, inventory)
        try:
            run.cli("lab", "up", "--world", "v1.20")
            run.cli("apply", "-i", str(inventory), "--limit", "primary", "--no-dns",
                    "--auto-approve")
            stopped: list[int] = []

            def stop_apiserver() -> None:
                pid = apiserver_pid(run, STOPPED_REGION)
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
                print(f"  stopped the kube-apiserver of {STOPPED_REGION} (pid {pid})",
                      flush=True)

            def resume_apiserver() -> None:
                for pid in stopped:
                    os.kill(pid, signal.SIGCONT)

            faults: list[tuple[str, Callable[[], None] | None, Callable[[], None] | None]] = [
                ("none", None, None),
                ("satellite killed", kill_canary_satellite(run), None),
                ("primary 503 for 5 s", primary_503(run), None),
                (f"{STOPPED_REGION} apiserver stopped", stop_apiserver, resume_apiserver),
            ]
            if args.only:
                faults = [f for f in faults if f[0].split()[0] in args.only
                          or (f[0].startswith(STOPPED_REGION) and "apiserver" in args.only)]
            for name, trigger, after in faults:
                print(f"{time.strftime('%H:%M:%S')} {name}: apply --migration --probe",
                      flush=True)
                code, seconds, output = run.migrate(trigger, after)
                total, failures = summary(output)
                print(f"  exit {code}, {seconds:.1f} s; {total}")
                for line in failures:
                    print(f"    {line}")
                if name != faults[-1][0]:
                    run.cli("rollback", *MIGRATION, "-i", str(inventory), "--auto-approve")
            print(f"load average {os.getloadavg()[0]:.2f}; {os.cpu_count()} cores")
        finally:
            Lab(StateLayout(lab.state_dir), CacheLayout.default()).down()


if __name__ == "__main__":
    main()
