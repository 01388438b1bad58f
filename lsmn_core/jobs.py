"""Background jobs: long work (retraining from the app) runs as a separate `lsmn` process, never
in the app's script thread; its progress is read back from the new run's progress.json."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


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
    """Run `lsmn ARGS...` in its own process session, output to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "lsmn_core", *args], cwd=REPO, stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    return Job(process, log, args)
