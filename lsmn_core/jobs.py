"""Background jobs: long work (retraining from the app) runs as a separate `lsmn` process, never
in the app's script thread; its progress is read back from the new run's progress.json."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = Path(__file__).resolve().parents[1]  # the folder lsmn_core is imported from (a checkout, site-packages)


@dataclass
class Job:
    process: subprocess.Popen
    log: Path
    args: list[str]
    started: float = field(default_factory=time.time)

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.is_file() else ""

    def stop(self) -> None:
        if self.running:
            self.process.terminate()


def start(args: list[str], log: Path) -> Job:
    """Run `lsmn ARGS...` (the `lsmn` package's command, importable beside lsmn_core) in its own
    process session, in this process's working directory, output to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    path = os.pathsep.join(p for p in (str(PACKAGES), os.environ.get("PYTHONPATH")) if p)
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "lsmn", *args], stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True,
                                   env={**os.environ, "PYTHONPATH": path})
    return Job(process, log, args)
