"""The run directory (a contract of every reader and writer of runs): writing runs atomically and
reading them safely (lsmn_core.store.files), and checking what run.json holds before anything trusts it.

Reading never executes code: JSON and safetensors only.
"""

from __future__ import annotations

import json
import os
import platform
import re
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import save_file

from lsmn_core.store import routing
from lsmn_core.config import RunConfig, parse_config
from lsmn_core.errors import LsmnError, MissingModuleError, RunError
from lsmn_core.store.files import (atomic_write, checked_safetensors, json_integer, os_reason, parse_json, read_json,
                             read_text, write_json)
from lsmn_core.network.model import MultitaskModel
from lsmn_core.pretrained import loader_of
from lsmn_core.schemes import build_model, check_model_size, scheme_class
from lsmn_core.data.tasks import TaskSpec
from lsmn_core.version import __version__

SCHEMA_VERSION = 1
DATA_CACHE = ".data"  # a runs folder's cache of data made for its runs (the Python API's arrays, tokenized text)
METRICS_LIMIT = 512 * 2**20  # bytes of metrics.jsonl (a long 1,000-task run logs a few hundred MB at most)
REASON_LIMIT = 1000  # characters of a stored failure reason (run.json allows 4,096 per field)
STALE_AFTER = 600  # seconds without a progress update after which a run on another host reads as dead


def safe_name(name: str) -> str:
    """A run name usable as a folder name: letters, digits, '-', '_' and '.' only, no leading dot."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip(".-")[:120]  # far below any file system's limit
    return cleaned or "run"


def check_runs_folder(root: str | Path) -> Path:
    """A folder new runs may go into: not a run's own folder, nor inside one (a run nested in a run
    would be read as one of its files, and the app would list neither right)."""
    root = Path(root)
    for folder in (root, *root.resolve().parents):
        if (folder / "run.json").is_file():
            where = "is a run's folder" if folder == root.resolve() else f"is inside the run folder {folder}"
            raise RunError(f"{root} {where}, not a folder of runs: give a folder that holds runs (outside any run)")
    return root


class RunWriter:
    """Creates a run directory and keeps it consistent while training writes into it."""

    def __init__(self, root: Path, config, specs: list[TaskSpec], device: str, folder: str | None = None,
                 parent: str | None = None):
        root = check_runs_folder(root)
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunError(f"cannot create runs folder {root}: {exc.strerror}") from None
        stamp = datetime.now(timezone.utc)
        base = safe_name(folder or f"{safe_name(config.name)[:100]}-{stamp:%Y%m%d-%H%M%S}")
        suffix = 1
        while True:  # mkdir is the claim: two writers starting at once never share a folder
            self.path = root / (base if suffix == 1 else f"{base}-{suffix}")
            try:
                self.path.mkdir()
                break
            except FileExistsError:
                suffix += 1
            except OSError as exc:
                raise RunError(f"cannot create run folder {self.path}: {exc.strerror}") from None
        self.meta = {
            "schema_version": SCHEMA_VERSION, "id": self.path.name, "name": config.name,
            "created": stamp.isoformat(timespec="seconds"), "status": "running",
            "scheme": config.scheme.kind, "config": config.to_dict(),
            "tasks": [s.to_dict() for s in specs], "parent": parent,
            "versions": {"lsmn": __version__, "torch": torch.__version__, "numpy": np.__version__,
                         "python": platform.python_version()},
            "device": device,
        }
        self._start_writing()
        (self.path / "metrics.jsonl").touch()

    @classmethod
    def reopen(cls, path: Path, keep_steps: int) -> RunWriter:
        """Write into an existing run again (a resume); metrics after step `keep_steps` are dropped,
        since the resumed run logs them again."""
        writer = cls.__new__(cls)
        writer.path = Path(path)
        writer.meta = read_json(writer.path / "run.json")
        writer.meta.pop("reason", None)
        records = [r for r in Run(writer.path).metrics() if r.get("step", 0) <= keep_steps]
        atomic_write(writer.path / "metrics.jsonl",
                     lambda tmp: Path(tmp).write_text("".join(json.dumps(r) + "\n" for r in records)))
        writer._start_writing()
        return writer

    def _start_writing(self) -> None:
        """Mark the run as running in this process (its pid and host let readers spot a dead writer)."""
        self.meta.update(status="running", pid=os.getpid(), host=platform.node())
        write_json(self.path / "run.json", self.meta)
        self._last_progress = 0.0
        self._phase_start: dict[str, float] = {}

    def set_status(self, status: str, reason: str | None = None) -> None:
        self.meta["status"] = status
        if reason:
            self.meta["reason"] = reason if len(reason) <= REASON_LIMIT else reason[:REASON_LIMIT - 3] + "..."
        write_json(self.path / "run.json", self.meta)

    def end(self, cause: BaseException) -> None:
        """Record why the run stopped (a KeyboardInterrupt is a stop, anything else a failure). When
        even that write fails (a full disk fails the status write as it failed the run), the error
        says both, and the run reads "interrupted" once this process is gone (a trained run's
        --resume continues it once space is freed)."""
        if isinstance(cause, KeyboardInterrupt):
            status, reason = "interrupted", "stopped by the user or a signal"
        else:
            status, reason = "failed", f"{type(cause).__name__}: {cause}"
        try:
            self.set_status(status, reason)
        except RunError as exc:
            raise RunError(f"{reason}; the run's status could not be recorded either ({exc}), "
                           "so it reads as interrupted") from cause

    def progress(self, phase: str, step: int, total: int, message: str = "", force: bool = False) -> None:
        """Record progress (at most twice a second unless forced); `eta` is seconds left in the phase."""
        now = time.monotonic()
        start = self._phase_start.setdefault(phase, now)
        if not force and now - self._last_progress < 0.5:
            return
        self._last_progress = now
        eta = (now - start) / step * (total - step) if step else None
        write_json(self.path / "progress.json", {
            "phase": phase, "step": step, "total": total, "eta": eta, "message": message,
            "updated": datetime.now(timezone.utc).isoformat(timespec="seconds")})

    def log(self, records: list[dict]) -> None:
        path = self.path / "metrics.jsonl"
        try:
            with open(path, "a") as f:
                f.writelines(json.dumps(r) + "\n" for r in records)
        except OSError as exc:  # a full disk: readers skip the cut-off last line
            raise RunError(f"cannot write {path}: {os_reason(exc)}") from None

    def save_model(self, model: MultitaskModel, extra_routing: dict[str, np.ndarray] | None = None) -> None:
        """Write weights and routing; `extra_routing` adds arrays such as every pruning round's masks."""
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        atomic_write(self.path / "model.safetensors", lambda tmp: save_file(state, tmp))
        doc, arrays = routing.encode(model)
        arrays.update(extra_routing or {})
        atomic_write(self.path / "routing.safetensors", lambda tmp: save_numpy(arrays, tmp))
        write_json(self.path / "routing.json", doc)

    def record_source(self, model: MultitaskModel) -> None:
        """Record the checkpoint a model of a pretrained network was built over (its source, each
        weights file's sha256, the layers and targets: never the weights), in run.json's "pretrained"."""
        source = getattr(model, "source", None)
        if source is not None and self.meta.get("pretrained") != source.to_dict():
            self.meta["pretrained"] = source.to_dict()
            write_json(self.path / "run.json", self.meta)

    def finish(self, summary: dict) -> None:
        write_json(self.path / "summary.json", summary)
        self.set_status("done")


EXACT_INTEGERS = 2**53  # past this an integer is no count or metric a run writes, and tables cannot hold it


def _number(value) -> bool:
    return isinstance(value, float) or (json_integer(value) and abs(value) < EXACT_INTEGERS)


def _count(value) -> bool:
    return json_integer(value) and 0 <= value < EXACT_INTEGERS


def check_meta(meta, where: Path) -> None:
    """run.json's schema: the keys readers use, of the types they expect (a hostile or damaged file
    is a RunError here, not a crash in whatever reads it next)."""
    if not isinstance(meta, dict) or meta.get("schema_version") != SCHEMA_VERSION:
        raise RunError(f"{where}: unknown schema version")
    for key in ("id", "name", "status", "scheme", "config", "tasks"):
        if key not in meta:
            raise RunError(f"{where}: missing key '{key}'")
    if not isinstance(meta.get("pretrained", {}), dict):
        raise RunError(f"{where}: 'pretrained' must be a record of the checkpoint")
    for key in ("id", "name", "status", "scheme", "created", "host", "reason", "parent"):
        value = meta.get(key, "")
        if not (value is None and key == "parent") and not (isinstance(value, str) and len(value) <= 4096):
            raise RunError(f"{where}: '{key}' must be a string of at most 4,096 characters")
    if not isinstance(meta["config"], dict):
        raise RunError(f"{where}: 'config' must be a mapping")
    tasks = meta["tasks"]
    if not isinstance(tasks, list) or not all(isinstance(t, dict) and isinstance(t.get("name"), str) for t in tasks):
        raise RunError(f"{where}: 'tasks' must be a list of tasks, each with a name")
    pid = meta.get("pid", 1)
    if not (json_integer(pid) and 0 < pid < 2**31):
        raise RunError(f"{where}: 'pid' must be a process id")


def _is_record(record) -> bool:
    """An evaluation record of the fields readers use, of their types (a damaged line is skipped)."""
    return (isinstance(record, dict) and _count(record.get("step")) and _number(record.get("value"))
            and all(isinstance(record.get(k), str) for k in ("task", "split", "metric"))
            and isinstance(record.get("phase", ""), str))


def check_summary(summary, tasks: list[str], where: Path) -> None:
    """summary.json's generic part, checked for every task of the run: metrics, parameter counts and
    densities of the types readers use (a scheme's own "routing" part is its view's to read)."""
    problem = None
    if not isinstance(summary, dict):
        problem = "expected a JSON object"
    elif not all(isinstance(summary.get(k), dict) for k in ("metrics", "params", "density")):
        problem = "'metrics', 'params' and 'density' must be objects"
    else:
        metrics, params, density = summary["metrics"], summary["params"], summary["density"]
        if set(metrics) != set(tasks) or set(density) != set(tasks):
            problem = "its metrics and densities must name exactly the run's tasks"
        elif not all(isinstance(m, dict) and isinstance(m.get("metric"), str) and _number(m.get("dev"))
                     and _number(m.get("test")) for m in metrics.values()):
            problem = "every task's metrics need a metric name and numbers for dev and test"
        elif not (all(_count(params.get(k)) for k in ("total", "shared"))
                  and isinstance(params.get("active"), dict) and set(params["active"]) == set(tasks)
                  and all(_count(v) for v in params["active"].values())):
            problem = "'params' needs counts (integers from 0 to below 2^53) of total, shared and active for every task"
        elif not all(_number(v) for v in density.values()):
            problem = "densities must be numbers"
    if problem:
        raise RunError(f"{where}: {problem}")


class Run:
    """A run directory opened for reading. Tolerates runs that are still being written.

    What run.json implies (its parsed config, its model's shapes) is worked out once per opened
    run: at 1,000 tasks each costs a tenth of a second or more, and every page of the app needs them."""

    def __init__(self, path: Path):
        self.path = Path(path)
        if not (self.path / "run.json").is_file():
            raise RunError(f"not a run directory (no run.json): {self.path}")
        self.meta = read_json(self.path / "run.json")
        check_meta(self.meta, self.path / "run.json")
        self._config: RunConfig | None = None
        self._skeleton: MultitaskModel | None = None
        self._routing: tuple[tuple, tuple[dict, dict[str, np.ndarray], dict]] | None = None  # (file stamps, routing)

    id = property(lambda self: self.path.name)  # the folder's name, whatever run.json says: never a path to write to
    name = property(lambda self: self.meta["name"])
    scheme = property(lambda self: self.meta["scheme"])

    @property
    def status(self) -> str:
        """The stored status, except that a running run whose writer is gone reads "interrupted"."""
        status = self.meta["status"]
        return "interrupted" if status == "running" and not self._writer_alive() else status

    @property
    def created(self) -> datetime:
        """When the run was created, as an instant: its stored text compares correctly only within one
        time zone. A missing or unreadable stamp reads as the earliest instant."""
        try:
            stamp = datetime.fromisoformat(self.meta.get("created", ""))
        except ValueError:
            return datetime.min.replace(tzinfo=timezone.utc)
        return stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)

    @property
    def label(self) -> str:
        """Unique per folder (the run id comes first), readable in a picker."""
        return f"{self.id} · {self.scheme} · {self.status} · {self.meta.get('created', '')[:10]}"

    def _writer_alive(self) -> bool:
        """On the writer's host, whether its process exists; elsewhere, whether progress.json has
        been updated within the last STALE_AFTER seconds (the heartbeat)."""
        if self.meta.get("host") == platform.node() and isinstance(self.meta.get("pid"), int):
            try:
                os.kill(self.meta["pid"], 0)
            except ProcessLookupError:
                return False
            except PermissionError:  # exists, owned by another user
                return True
            return True
        progress = self.path / "progress.json"
        beat = progress.stat().st_mtime if progress.is_file() else (self.path / "run.json").stat().st_mtime
        return time.time() - beat < STALE_AFTER

    @property
    def specs(self) -> list[TaskSpec]:
        try:
            return [TaskSpec.from_dict(t) for t in self.meta["tasks"]]
        except (TypeError, ValueError) as exc:
            raise RunError(f"{self.path / 'run.json'}: malformed task list ({exc})") from None

    @property
    def task_names(self) -> list[str]:
        return [t["name"] for t in self.meta["tasks"]]

    @property
    def on_checkpoint(self) -> bool:
        """Whether the run's network is a pretrained checkpoint's (its source recorded as `pretrained`)."""
        return self.meta.get("pretrained") is not None

    def missing_sources(self) -> str | None:
        """Why the run's network cannot be rebuilt on this machine (its weights file, its checkpoint, or
        a scheme's inputs kept outside the run are gone), found without reading them; None if it can."""
        if not os.path.lexists(self.path / "model.safetensors"):
            return f"run {self.id} has no model.safetensors (status: {self.status})"
        try:
            config = self.config()
            if config.model.pretrained is not None:
                loader_of(config.model.pretrained).weight_files()
            scheme_class(config.scheme.kind).check_sources(config)
        except LsmnError as exc:
            return str(exc)
        return None

    def same_tasks(self, other: Run) -> bool:
        """Whether the two runs learned the same tasks from the same data: their configs' task lists
        agree, not only the names (digits with 50 labels a class is not digits with all of them)."""
        if self.task_names != other.task_names:
            return False
        try:
            return self.config().tasks == other.config().tasks  # parsed: configs of older runs name fewer keys
        except LsmnError:
            return False

    def config(self):
        """The run's parsed config, shared by every caller of this Run: copy it before changing it."""
        if self._config is None:
            try:
                config = parse_config(self.meta["config"], where=f"{self.path.name}/run.json config", stored=True)
                scheme_class(config.scheme.kind).stored_paths(config, self.path)
                self._config = config
            except LsmnError as exc:
                raise RunError(str(exc)) from None
        return self._config

    def skeleton(self) -> MultitaskModel:
        """The run's model built on the meta device: every shape, no memory for weights (what checks
        of the routing and of the model's size need)."""
        if self._skeleton is None:
            with torch.device("meta"):
                self._skeleton = build_model(self.specs, self.config(), self.meta.get("pretrained"))
        return self._skeleton

    def summary(self) -> dict:
        if not os.path.lexists(self.path / "summary.json"):
            reason = f": {self.meta['reason']}" if self.meta.get("reason") else ""
            raise RunError(f"run {self.id} has no summary yet (status: {self.status}{reason})")
        summary = read_json(self.path / "summary.json")
        check_summary(summary, self.task_names, self.path / "summary.json")
        return summary

    def progress(self) -> dict | None:
        path = self.path / "progress.json"
        return read_json(path) if path.is_file() else None

    def metrics(self) -> list[dict]:
        """Evaluation records; a partly written last line (run in progress) or a damaged one is skipped."""
        path = self.path / "metrics.jsonl"
        records = []
        if path.is_file():
            for line in read_text(path, METRICS_LIMIT, errors="replace").splitlines():
                try:
                    record = parse_json(line, path)
                except RunError:
                    continue
                if _is_record(record):
                    records.append(record)
        return records

    def checked_routing(self) -> tuple[dict, dict[str, np.ndarray], dict[str, np.ndarray]]:
        """The stored routing (document and arrays), checked against the run's model so that
        readers may trust every shape and index in it, and its masks as bool arrays [T, *shape]
        (empty for schemes without masks): one check for readers that need both."""
        doc, arrays, state = self._checked_routing()
        return doc, arrays, {name: mask.numpy() for name, mask in state.get("masks", {}).items()}

    def routing_state(self) -> dict:
        """The stored routing as its scheme decodes it (masks and the scheme's own parts, as tensors)."""
        return self._checked_routing()[2]

    def routing(self) -> tuple[dict, dict[str, np.ndarray]]:
        return self.checked_routing()[:2]

    def masks(self) -> dict[str, np.ndarray]:
        return self.checked_routing()[2]

    def mask_layers(self) -> dict[str, int]:
        """The layer of each of the run's masks, as its model knows it (no file's word is taken for it)."""
        skeleton = self.skeleton()
        return {name: skeleton.mask_layer(name) for name in skeleton.masks()}

    def mask_groups(self) -> dict[str, str]:
        """The kind of module of each mask, where its model knows it (a checkpoint's query, key, ...)."""
        return self.skeleton().mask_groups()

    def _checked_routing(self) -> tuple[dict, dict[str, np.ndarray], dict]:
        """routing.json and its arrays, and the state they decode to against the run's skeleton;
        read again only when the routing files change (shared by every caller: do not change it)."""
        files = [self.path / "routing.json", self.path / "routing.safetensors"]
        stamp = tuple((s.st_mtime_ns, s.st_size) if (s := _stat(f)) else None for f in files)
        if self._routing is None or self._routing[0] != stamp:
            with self._named_errors():
                doc, arrays = routing.read(files[0], self.skeleton())
                self._routing = stamp, (doc, arrays, routing.decode(doc, arrays, self.skeleton()))
        return self._routing[1]

    @contextmanager
    def _named_errors(self):
        """Errors of reading this run, named after it: a RunError, or a MissingModuleError still (so
        readers can show what the run stored and name the module)."""
        try:
            yield
        except MissingModuleError as exc:
            raise MissingModuleError(f"run {self.id}: {exc}") from None
        except LsmnError as exc:
            raise RunError(f"run {self.id}: {exc}") from None

    def _checked_weights(self, path: Path) -> dict[str, torch.Tensor]:
        """model.safetensors' tensors, once its names and shapes (read from its header) are exactly
        those of the run's skeleton: an extra, missing or resized tensor is refused before any is read."""
        expected = {name: tuple(value.shape) for name, value in self.skeleton().state_dict().items()}
        with safe_open(str(checked_safetensors(path)), framework="pt") as tensors:
            stored = set(tensors.keys())
            if stored != set(expected):
                extra, missing = sorted(stored - set(expected)), sorted(set(expected) - stored)
                raise RunError("model.safetensors does not fit the config: " + "; ".join(
                    f"{what} {', '.join(names[:3])}" + (f" and {len(names) - 3:,} more" if len(names) > 3 else "")
                    for what, names in (("unexpected", extra), ("missing", missing)) if names))
            for name, shape in expected.items():
                stored_shape = tuple(tensors.get_slice(name).get_shape())
                if stored_shape != shape:
                    raise RunError(f"model.safetensors does not fit the config: {name} is "
                                   f"{list(stored_shape)[:8]}, the config makes it {list(shape)}")
            return {name: tensors.get_tensor(name) for name in expected}

    def load_model(self, device: str | torch.device = "cpu") -> MultitaskModel:
        """Rebuild the model from run.json and load weights and routing (no code is executed)."""
        specs, config = self.specs, self.config()
        with self._named_errors():
            check_model_size(specs, config, 4, "load", self.skeleton())
        weights = self.path / "model.safetensors"
        if not os.path.lexists(weights):
            raise RunError(f"run {self.id} has no model.safetensors (status: {self.status})")
        try:
            state = self._checked_weights(weights)
        except RunError as exc:
            raise RunError(f"run {self.id}: {exc}") from None
        except (SafetensorError, OSError, ValueError) as exc:
            raise RunError(f"run {self.id}: model.safetensors is corrupt ({exc})") from None
        with self._named_errors():
            model = build_model(specs, config, self.meta.get("pretrained"))
        try:
            model.load_weights(state)
        except RuntimeError as exc:
            raise RunError(f"run {self.id}: model.safetensors does not fit the config: "
                           f"{str(exc).splitlines()[0]}") from None
        routing.apply_buffers(model, self.routing_state())  # decoded against the skeleton: the same shapes
        return model.to(device)


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except OSError:
        return None


def open_run(path) -> Run:
    return Run(Path(path))


def list_runs(root) -> tuple[list[Run], list[tuple[Path, str]]]:
    """Runs under `root`, newest first, and the folders that could not be read (with the reason)."""
    runs: list[Run] = []
    broken: list[tuple[Path, str]] = []
    root = Path(root)
    if not root.is_dir():
        return runs, broken
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not (folder / "run.json").exists() and all(f.name.startswith(".") for f in folder.iterdir()):
            continue  # empty, or a run being created this instant (its run.json still a temp file)
        try:
            runs.append(Run(folder))
        except LsmnError as exc:
            broken.append((folder, str(exc)))
    runs.sort(key=lambda r: r.created, reverse=True)
    return runs, broken
