"""MLflow, when a run asks for it (the `mlflow` setting, `--mlflow [URI]`): one MLflow run per reglab run, a
cohort's member included, with the run's result-relevant settings as parameters, its per-epoch metrics row, its
final metrics (tracker_metrics) and its files (summary.json, config.yaml, metrics.csv, train.log, curves.png; a
study's report.md once rendered) as artefacts.

Where: `mlflow: default` is the SQLite store mlflow.db (artefacts in mlartifacts/) in the folder that holds the
study folder, or the run folder of a single run: `reglab compare --out runs/compare --mlflow` logs to
runs/mlflow.db. Any other value is a tracking URI (sqlite:///..., http://host:5000, databricks, ...). The
experiment is named after the study folder (a single run: the folder that holds it), the MLflow run after
<variant>/seed-<seed> (a single run: its folder's name).

Resume: RUN_DIR/mlflow.json records the tracking URI and the MLflow run id; a resumed run continues that MLflow
run (the epochs after its checkpoint are logged again, at the same steps), unless it now logs elsewhere.

Tracking never stops training: the first failure (mlflow missing where a run trains, a store that cannot be
reached) is one warning line on stderr and in train.log, and the run goes on without MLflow. mlflow is imported
only by a run that asks for it; `check_available` (called by the API before any work) asks only whether it is
installed.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import time
from pathlib import Path

from . import atomic
from .errors import UserError
from .text import say

DEFAULT = "default"
STATE_FILE = "mlflow.json"
ARTIFACTS = ("summary.json", "config.yaml", "metrics.csv", "train.log", "curves.png")
_TERMINAL = {"finished": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}


def check_available(target: str) -> None:
    """UserError before any work when a run asks for MLflow and the package is not installed here."""
    if target and importlib.util.find_spec("mlflow") is None:
        raise UserError("--mlflow needs the mlflow package, which is not installed; pip install 'reglab[mlflow]'")


def destination(target: str, out: Path) -> tuple[str, str, str, Path | None]:
    """(tracking URI, experiment name, run name, artefact folder or None: the store's own) for the run folder
    `out`."""
    out = Path(out).absolute()
    in_study = (out.parent.parent / "study.json").is_file()
    group = out.parent.parent if in_study else out.parent
    home = group.parent if in_study else group
    name = f"{out.parent.name}/{out.name}" if in_study else out.name
    uri = f"sqlite:///{home / 'mlflow.db'}" if target == DEFAULT else target
    # a SQLite store keeps its artefacts beside the database file, not in the working directory (MLflow's default);
    # sqlite:///NAME is relative, sqlite:////NAME absolute
    database = uri.removeprefix("sqlite:///") if uri.startswith("sqlite:///") else None
    artifacts = Path(database).absolute().parent / "mlartifacts" if database else None
    return uri, group.name, name, artifacts


class MlflowRun:
    """One reglab run's MLflow run. Every method is safe to call after a failure: the first failure warns once
    (through `warn`) and turns the rest into no-ops."""

    def __init__(self, target: str, out: Path, params: dict, warn):
        self.out, self.warn, self.client, self.run_id, self.failed = Path(out), warn, None, None, False
        self._guard(self._start, target, params)

    def _guard(self, fn, *args) -> None:
        if self.failed:
            return
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001  (any tracker failure: one line, and training goes on)
            self.failed = True
            self.warn(f"warning: MLflow logging stopped ({_short(e)}); the run goes on")

    def _start(self, target: str, params: dict) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        logging.getLogger("mlflow").setLevel(logging.WARNING)  # its INFO lines (database set-up) are not ours
        uri, experiment, name, artifacts = destination(target, self.out)
        client = MlflowClient(tracking_uri=uri)
        previous = _read_state(self.out / STATE_FILE)
        if previous.get("tracking_uri") == uri:
            self.run_id = previous["run_id"]
            client.update_run(self.run_id, status="RUNNING")
        else:
            run = client.create_run(_experiment_id(client, experiment, artifacts), run_name=name,
                                    tags={"reglab.run_dir": str(self.out.absolute())})
            self.run_id = run.info.run_id
            client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in params.items()])
            atomic.write_json(self.out / STATE_FILE, {"tracking_uri": uri, "run_id": self.run_id})
        self.client = client

    def metrics(self, values: dict, step: int) -> None:
        self._guard(self._metrics, values, step)

    def _metrics(self, values: dict, step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in values.items()
                                                    if v is not None])

    def finish(self, status: str, final: dict, step: int, params: dict) -> None:
        """The final metrics, `params` known only now, the run folder's files, and the MLflow run ended as
        `status` (summary.json's) says."""
        self._guard(self._finish, status, final, step, params)

    def _finish(self, status: str, final: dict, step: int, params: dict) -> None:
        from mlflow.entities import Param

        self.client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in params.items()])
        self._metrics(final, step)
        for name in ARTIFACTS:
            if (self.out / name).is_file():
                self.client.log_artifact(self.run_id, str(self.out / name))
        self.client.set_terminated(self.run_id, status=_TERMINAL.get(status, "FAILED"))  # "running": it died


def attach_report(study: Path, report: Path) -> None:
    """A study's rendered report, as an artefact of each of its runs that logged to MLflow (a failure: one line)."""
    states = [s for p in sorted(Path(study).glob(f"*/seed-*/{STATE_FILE}")) if (s := _read_state(p))]
    if not states:
        return
    try:
        from mlflow.tracking import MlflowClient

        for state in states:
            MlflowClient(tracking_uri=state["tracking_uri"]).log_artifact(state["run_id"], str(report))
    except Exception as e:  # noqa: BLE001  (the report is written; only its copy in MLflow is missing)
        say(f"warning: the report was not logged to MLflow ({_short(e)})")


def _experiment_id(client, name: str, artifacts: Path | None) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifacts.as_uri() if artifacts else None)
    except Exception:  # noqa: BLE001  (another run of the study created it first)
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def _short(e: Exception) -> str:
    """An exception as one short line: MLflow's messages run to paragraphs."""
    first = (str(e).splitlines() or [""])[0]
    return f"{type(e).__name__}: {first[:200]}"


def _read_state(path: Path) -> dict:
    """mlflow.json as written ({} when absent or unreadable: the run then starts a new MLflow run)."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    ok = isinstance(state, dict) and all(isinstance(state.get(k), str) for k in ("tracking_uri", "run_id"))
    return state if ok else {}
