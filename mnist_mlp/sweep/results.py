"""A sweep's results: its trials as rows, best first (``make_report``), the text table,
DIR/best.toml (the best trial's config), the searched settings' importances, and
DIR/sweep.png, drawn by ``plots.sweep_figure`` (matplotlib imported only when drawing)."""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..files import write_bytes_atomic
from .space import Dimension
from .storage import optuna_module, redact

BEST_TOML, SWEEP_PNG = "best.toml", "sweep.png"


@dataclass
class TrialRow:
    """One trial as the results show it."""

    number: int
    state: str                 # complete pruned diverged interrupted died failed running waiting
    value: float | None        # the kept epoch's validation score (complete trials)
    score: float | None        # the value, or the best score reported (pruned trials)
    params: dict[str, Any]     # Optuna's values: lists as "800,800"
    epochs: int | None
    seconds: float | None
    checkpoint: str | None
    host: str | None
    retry_of: int | None
    config: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def trial_row(trial: Any) -> TrialRow:
    """A FrozenTrial as a TrialRow."""
    attrs, state = trial.user_attrs, trial.state.name.lower()
    if state == "fail":
        state = "interrupted" if attrs.get("interrupted") else "failed"
    elif state == "pruned" and attrs.get("ending") == "diverged":
        state = "diverged"
    values = list(trial.intermediate_values.values())
    value = trial.value if state == "complete" else None  # Optuna gives pruned ones a value
    return TrialRow(
        number=trial.number, state=state, value=value,
        score=value if value is not None else max(values, default=None),
        params=dict(trial.params), epochs=attrs.get("epochs", len(values) or None),
        seconds=attrs.get("seconds"), checkpoint=attrs.get("checkpoint"),
        host=attrs.get("host"), retry_of=trial.system_attrs.get("failed_trial"),
        config=attrs.get("config"))


@dataclass
class Report:
    """A study's trials, best first (completed trials by value, then the rest by number)."""

    study: str
    storage: str | None
    rows: list[TrialRow]

    @property
    def best(self) -> TrialRow | None:
        return self.rows[0] if self.rows and self.rows[0].state == "complete" else None

    def to_dict(self) -> dict[str, Any]:
        return {"study": self.study, "storage": self.storage,
                "trials": [r.to_dict() for r in self.rows],
                "best": self.best.to_dict() if self.best else None}


def make_report(study: Any, storage: str | None) -> Report:
    """The study's trials as a Report (``storage`` shown without its password)."""
    rows = [trial_row(t) for t in study.get_trials(deepcopy=False)]
    retried = {r.retry_of for r in rows if r.retry_of is not None}
    for r in rows:
        if r.state == "failed" and r.number in retried:
            r.state = "died"
    rows.sort(key=lambda r: (r.state != "complete", -(r.value or 0.0), r.number))
    return Report(study.study_name, redact(storage) if storage else None, rows)


def params_text(params: Mapping[str, Any]) -> str:
    def show(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    return " ".join(f"{k}={show(v)}" for k, v in params.items())


def format_table(report: Report) -> str:
    """The results as a text table: rank, trial, state, val accuracy (in parentheses: the
    best epoch of a trial that did not finish), epochs run, seconds, searched settings."""
    head = f"study {report.study} ({report.storage or 'embedded'}): {len(report.rows)} trials"
    columns = (f"{'rank':>4}  {'trial':>5}  {'state':<11}  {'val acc':>8}  {'epochs':>6}  "
               f"{'seconds':>7}  settings")
    lines = [head, columns]
    rank = 0
    for r in report.rows:
        rank += r.state == "complete"
        score = "" if r.score is None else f"{100 * r.score:.2f}%"
        if r.value is None and score:
            score = f"({score})"
        retry = f" (rerun of {r.retry_of})" if r.retry_of is not None else ""
        lines.append(f"{rank if r.state == 'complete' else '-':>4}  {r.number:>5}  "
                     f"{r.state:<11}  {score:>8}  {r.epochs or '':>6}  "
                     f"{'' if r.seconds is None else f'{r.seconds:.0f}':>7}  "
                     f"{params_text(r.params)}{retry}")
    return "\n".join(lines)


def _toml(values: Mapping[str, Any]) -> str:
    """Flat settings as TOML (JSON's numbers, strings and lists are TOML's too)."""
    return "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())


def importances(study: Any) -> dict[str, float]:
    """Each searched setting's share of what decided the score (Optuna's PED-ANOVA over the
    completed trials); empty while there are too few to tell."""
    optuna = optuna_module()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            shares = dict(optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.PedAnovaImportanceEvaluator()))
    except (ValueError, RuntimeError, ZeroDivisionError):
        return {}
    return {} if caught else shares  # it warns when it can only call them equal


def write_best(report: Report, out_dir: Path) -> None:
    """Write DIR/best.toml: the best completed trial's config, for `mlp train --config`."""
    best = report.best
    if best is not None and best.config:
        head = (f"# Trial {best.number} of study {report.study}: validation accuracy "
                f"{100 * best.value:.2f}%.\n# Train it: mlp train --config "
                f"{out_dir / BEST_TOML}\n")
        write_bytes_atomic(out_dir / BEST_TOML, (head + _toml(best.config)).encode())


def write_outputs(study: Any, search: Mapping[str, Dimension], out_dir: Path,
                  storage: str | None = None, plots: bool = True) -> Report:
    """Write DIR/best.toml and (with ``plots``) DIR/sweep.png; return their report."""
    report = make_report(study, storage)
    write_best(report, out_dir)
    if plots:
        from ..plots import save_figure, sweep_figure

        weights = importances(study) if report.best is not None else {}
        save_figure(sweep_figure(report.rows, search, weights), out_dir / SWEEP_PNG)
    return report

