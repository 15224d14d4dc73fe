"""Results of ``ppl.compare``: per-variant statistics, tables, JSON and plots."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
import textwrap
from typing import TYPE_CHECKING, Any

import numpy as np

from ppl._util import running_mean

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["Comparison", "VariantResult", "TrainingRun"]


_FORMAT = "ppl.compare/1"
_TAIL = 2.0 * (1.0 - statistics.NormalDist().cdf(4.0))  # P(|Z| > 4), about 6.3e-5
_MARKERS = ("o", "s", "D", "^", "P", "h", "*", "X")  # one shape per variant
_CURVE_POINTS = 200  # points of a training curve in a summary JSON
_MAX_GRADIENT_COORDINATES = 1000  # per-coordinate gradients in a summary JSON up to this


@dataclasses.dataclass
class TrainingRun:
    """One variant's training run (``compare(train=steps)``).

    Attributes:
        history: the objective estimate at every step (``FitResult.history``).
        seconds: wall-clock seconds from the start of training to the end of each
            step: the measured time of the run (compilation excluded) spread evenly
            over its steps, since `ppl.fit` runs steps in compiled chunks.
        evaluations: with ``compare(train_metrics=...)``, ``"step"`` and ``"seconds"``
            (training time, evaluations excluded) of each evaluation, from step 0,
            and one array per metric; empty otherwise.
        steps: None when ``history`` has every step; for a run read back from a
            summary JSON (`Comparison.to_json` without ``samples=True``), the step
            (from 1) of each entry of ``history``, which then holds the running mean.
    """

    history: np.ndarray
    seconds: np.ndarray
    evaluations: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    steps: np.ndarray | None = None

    @property
    def num_steps(self) -> int:
        return (
            int(self.steps[-1]) if self.steps is not None and self.steps.size else self.history.size
        )

    @property
    def seconds_per_step(self) -> float:
        return float(self.seconds[-1] / self.num_steps) if self.seconds.size else math.nan

    def summary(self, window: int | None = None, points: int = _CURVE_POINTS) -> TrainingRun:
        """The run as at most ``points`` entries of its running mean (window: a tenth
        of the run, as `Comparison.plot_training` draws it), with their steps."""
        if self.steps is not None:
            return self
        size = self.history.size
        window = max(1, size // 10) if window is None else window
        index = np.unique(np.linspace(0, size - 1, min(points, size)).round().astype(int))
        smooth = running_mean(self.history, window)[index] if size else self.history
        return TrainingRun(smooth, self.seconds[index], self.evaluations, index + 1)


@dataclasses.dataclass
class VariantResult:
    """The measurements of one variant (see `compare` for the definitions).

    Gradients are with respect to the floating-point leaves of ``params``; leaves are
    named by their path, as in ``"params['loc']"``.
    """

    label: str
    num_samples: int
    value_mean: float
    value_se: float
    mean_gradient: dict[str, np.ndarray]
    gradient_norm: float
    total_variance: float
    total_variance_se: float
    parameter_variances: dict[str, float]
    snr: float
    bias_norm: float
    bias_se: float
    bias_z: float
    biased: bool
    time_per_gradient: float
    time_quartiles: tuple[float, float]
    work_normalized_variance: float
    peak_memory_bytes: int | None
    training: TrainingRun | None = None


@dataclasses.dataclass
class Comparison:
    """The result of `compare`: one `VariantResult` per variant, in order.

    ``print(comparison)`` shows the table; `to_dataframe`, `to_json` / `from_json`,
    `save` / `load`, `plot` and `plot_training` export it.

    Attributes:
        results: label -> `VariantResult`.
        num_samples: gradient estimates per variant.
        num_coordinates: ``P``, the number of differentiated coordinates of params.
        reference_kind: ``"given"`` (passed as ``reference=``), ``"exact"`` (a
            zero-variance variant) or ``"high-sample"``.
        reference_label: the variant the reference came from (None when given).
        reference_samples: samples of a high-sample reference (else None).
        reference_gradient: leaf path -> the reference gradient.
        bias_threshold: the z-score above which a variant is flagged biased.
    """

    results: dict[str, VariantResult]
    num_samples: int
    num_coordinates: int
    reference_kind: str
    reference_label: str | None
    reference_samples: int | None
    reference_gradient: dict[str, np.ndarray]
    bias_threshold: float

    @property
    def reference(self) -> str:
        """A sentence saying what the bias is measured against."""
        if self.reference_kind == "given":
            return "reference: exact gradient given by the user"
        if self.reference_kind == "exact":
            return f"reference: exact, the mean of '{self.reference_label}' (zero variance)"
        return (
            f"reference: high-sample estimate from '{self.reference_label}', "
            f"{self.reference_samples} samples"
        )

    def __str__(self) -> str:
        head = [
            "variant",
            "value ± s.e.",
            "grad variance",
            "SNR",
            "bias ± s.e.",
            "z",
            "",
            "time/grad",
            "var × time",
            "memory",
        ]
        rows = [head]
        for r in self.results.values():
            rows.append(
                [
                    r.label,
                    f"{r.value_mean:.4g} ± {r.value_se:.2g}",
                    f"{r.total_variance:.4g}",
                    f"{r.snr:.3g}",
                    f"{r.bias_norm:.3g} ± {r.bias_se:.2g}",
                    f"{r.bias_z:.1f}",
                    "BIASED" if r.biased else "",
                    _seconds(r.time_per_gradient),
                    f"{r.work_normalized_variance:.3g}",
                    _bytes(r.peak_memory_bytes),
                ]
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
        lines = [
            f"Gradient estimators: {self.num_samples} samples per variant, "
            f"{self.num_coordinates} coordinates of params",
            self.reference,
        ]
        for i, row in enumerate(rows):
            cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
            lines.append("  ".join(cells).rstrip())
            if i == 0:
                lines.append("-" * len(lines[-1]))
        notes = (
            f"grad variance: trace of the covariance of one estimate; SNR = ‖mean‖ / "
            f"sqrt(variance); bias: ‖mean - reference‖ ± combined s.e.; z: largest "
            f"|bias_j| / s.e._j (BIASED above {self.bias_threshold:.2f}); var × time: "
            f"work-normalized variance (lower is better); memory: compiled footprint "
            f"of one gradient" + ("" if self._has_memory() else " (not reported by this backend)")
        )
        lines.extend(textwrap.wrap(notes, width=max(len(lines[2]), 88)))
        return "\n".join(lines)

    def _has_memory(self) -> bool:
        return any(r.peak_memory_bytes is not None for r in self.results.values())

    def to_dataframe(self, per_parameter: bool = False) -> pd.DataFrame:
        """A pandas DataFrame: one row per variant (index ``variant``).

        Columns: ``value_mean, value_se, gradient_norm, total_variance,
        total_variance_se, snr, bias_norm, bias_se, bias_z, biased,
        time_per_gradient, work_normalized_variance, peak_memory_bytes``. With
        ``per_parameter=True``: one row per (variant, parameter leaf) with its summed
        ``variance`` and the norm of its mean gradient and bias.
        """
        try:
            import pandas as pd
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError("Comparison.to_dataframe needs pandas: pip install pandas") from err
        if per_parameter:
            records = []
            for r in self.results.values():
                for path, variance in r.parameter_variances.items():
                    mean = np.asarray(r.mean_gradient[path])
                    records.append(
                        {
                            "variant": r.label,
                            "parameter": path,
                            "variance": variance,
                            "gradient_norm": float(np.linalg.norm(mean)),
                            "bias_norm": float(
                                np.linalg.norm(mean - np.asarray(self.reference_gradient[path]))
                            ),
                        }
                    )
            return pd.DataFrame.from_records(records).set_index(["variant", "parameter"])
        columns = [f for f in _SCALARS if f != "num_samples"]
        records = [
            {"variant": r.label, **{c: getattr(r, c) for c in columns}}
            for r in self.results.values()
        ]
        return pd.DataFrame.from_records(records).set_index("variant")

    # ------------------------------------------------------------------ JSON

    def to_dict(self, samples: bool = False) -> dict:
        """A JSON-ready dict (non-finite numbers as ``null``, ``"inf"``, ``"-inf"``).

        Args:
            samples: also keep what grows with the run and the model: every step's
                objective estimate and time of a training run (by default, at most
                200 points of its running mean), and the mean and reference
                gradients of every coordinate when there are more than
                1,000 of them (by default, only their norms and per-leaf variances).
        """
        keep_gradients = samples or self.num_coordinates <= _MAX_GRADIENT_COORDINATES
        variants = []
        for r in self.results.values():
            item = {f: _encode(getattr(r, f)) for f in _SCALARS}
            item["label"] = r.label
            item["time_quartiles"] = _encode(list(r.time_quartiles))
            if keep_gradients:
                item["mean_gradient"] = {
                    p: _encode(np.asarray(v).tolist()) for p, v in r.mean_gradient.items()
                }
            item["parameter_variances"] = _encode(dict(r.parameter_variances))
            if r.training is not None:
                run = r.training if samples else r.training.summary()
                item["training"] = {
                    "history": _encode(run.history.tolist()),
                    "seconds": _encode(run.seconds.tolist()),
                    "evaluations": {
                        k: _encode(np.asarray(v).tolist()) for k, v in run.evaluations.items()
                    },
                }
                if run.steps is not None:
                    item["training"]["steps"] = run.steps.tolist()
            variants.append(item)
        return {
            "format": _FORMAT,
            "num_samples": self.num_samples,
            "num_coordinates": self.num_coordinates,
            "reference": {
                "kind": self.reference_kind,
                "label": self.reference_label,
                "num_samples": self.reference_samples,
                "description": self.reference,
                "gradient": {
                    p: _encode(np.asarray(v).tolist()) for p, v in self.reference_gradient.items()
                }
                if keep_gradients
                else {},
            },
            "bias_threshold": self.bias_threshold,
            "variants": variants,
        }

    def to_json(self, indent: int | None = 2, samples: bool = False) -> str:
        """The comparison as JSON text (see `to_dict`); `from_json` reads it back."""
        return json.dumps(self.to_dict(samples), indent=indent, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> Comparison:
        """Rebuild a `Comparison` from `to_json`'s text."""
        data = json.loads(text)
        if data.get("format") != _FORMAT:
            raise ValueError(f"not a ppl.compare result (format {data.get('format')!r}).")
        results = {}
        for item in data["variants"]:
            fields = {f: _decode(item[f]) for f in _SCALARS}
            for f in ("num_samples",):
                fields[f] = int(fields[f])
            fields["biased"] = bool(fields["biased"])
            memory = item["peak_memory_bytes"]
            fields["peak_memory_bytes"] = None if memory is None else int(memory)
            training = None
            if "training" in item:
                training = TrainingRun(
                    np.asarray(_decode(item["training"]["history"]), np.float64),
                    np.asarray(_decode(item["training"]["seconds"]), np.float64),
                    {
                        k: np.asarray(_decode(v), np.float64)
                        for k, v in item["training"].get("evaluations", {}).items()
                    },
                    None
                    if "steps" not in item["training"]
                    else np.asarray(item["training"]["steps"], np.int64),
                )
            results[item["label"]] = VariantResult(
                label=item["label"],
                mean_gradient={
                    p: np.asarray(_decode(v), np.float64)
                    for p, v in item.get("mean_gradient", {}).items()
                },
                parameter_variances={
                    p: float(_decode(v)) for p, v in item["parameter_variances"].items()
                },
                time_quartiles=tuple(_decode(item["time_quartiles"])),
                training=training,
                **fields,
            )
        ref = data["reference"]
        return cls(
            results=results,
            num_samples=int(data["num_samples"]),
            num_coordinates=int(data["num_coordinates"]),
            reference_kind=ref["kind"],
            reference_label=ref["label"],
            reference_samples=ref["num_samples"],
            reference_gradient={
                p: np.asarray(_decode(v), np.float64) for p, v in ref["gradient"].items()
            },
            bias_threshold=float(data["bias_threshold"]),
        )

    def save(self, directory: str | os.PathLike, samples: bool = False) -> dict[str, str]:
        """Write ``comparison.json``, ``comparison.txt`` (the table), ``variance.png``
        and, after training, ``training.png`` into ``directory`` (created if needed).

        ``comparison.json`` holds the summaries (see `to_dict`); ``samples=True`` adds
        every training step and every gradient coordinate.

        Returns:
            file kind (``"json"``, ``"table"``, ``"plot"``, ``"training_plot"``) -> path.
        """
        directory = os.fspath(directory)
        os.makedirs(directory, exist_ok=True)
        paths = {
            "json": os.path.join(directory, "comparison.json"),
            "table": os.path.join(directory, "comparison.txt"),
            "plot": os.path.join(directory, "variance.png"),
        }
        with open(paths["json"], "w", encoding="utf-8") as file:
            file.write(self.to_json(samples=samples) + "\n")
        with open(paths["table"], "w", encoding="utf-8") as file:
            file.write(str(self) + "\n")
        self.plot(paths["plot"])
        if any(r.training is not None for r in self.results.values()):
            paths["training_plot"] = os.path.join(directory, "training.png")
            self.plot_training(paths["training_plot"])
        return paths

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Comparison:
        """Read ``comparison.json`` written by `save`."""
        with open(os.path.join(os.fspath(directory), "comparison.json"), encoding="utf-8") as file:
            return cls.from_json(file.read())

    # ----------------------------------------------------------------- plots

    def plot(self, path: str | os.PathLike) -> str | os.PathLike:
        """Save a PNG of gradient variance against time per gradient (log-log).

        One point per variant, with the variance's standard error (batch means) and the
        interquartile range of the timings as error bars. Zero-variance variants sit
        on the bottom edge, marked with a downward triangle. A variant flagged biased is
        drawn hollow with a red cross and "(biased)" after its label. The dotted line
        has the best work-normalized variance (variance × time) among the unbiased
        variants: points on it are as good per unit of compute, points above it worse.
        The labels are in a legend beside the axes, where they cannot overlap the
        points or each other.
        """
        figure = self._variance_figure()
        figure.savefig(path, format="png", dpi=120)
        return path

    def _variance_figure(self) -> Figure:
        figure, axes = _figure(1)
        axes = axes[0]
        figure.set_size_inches(9.0, 4.5)
        results = list(self.results.values())
        positive = [r.total_variance for r in results if r.total_variance > 0]
        floor = min(positive) / 10 if positive else 1e-12
        for i, r in enumerate(results):
            x = r.time_per_gradient
            xerr = [[max(x - r.time_quartiles[0], 0.0)], [max(r.time_quartiles[1] - x, 0.0)]]
            label = r.label + (" (biased)" if r.biased else "")
            if r.total_variance > 0:
                y = r.total_variance
                se = 0.0 if math.isnan(r.total_variance_se) else r.total_variance_se
                yerr = [[min(se, 0.9 * y)], [se]]
                marker = _MARKERS[i % len(_MARKERS)]
            else:
                y, yerr, marker = floor, None, "v"
                label += " (zero variance)"
            color = f"C{i}"
            axes.errorbar(
                x, y, yerr=yerr, xerr=xerr, fmt=marker, color=color, capsize=3, label=label,
                markerfacecolor="none" if r.biased else color, markersize=7,
            )  # fmt: skip
            if r.biased:
                axes.plot(x, y, "x", color="red", markersize=9, mew=2)
        best = _equal_cost_anchor(results)
        if best is not None:
            times = np.array([r.time_per_gradient for r in results])
            xs = np.geomspace(times.min() / 2, times.max() * 2, 50)
            axes.plot(
                xs, best.work_normalized_variance / xs, ":", color="grey", lw=1,
                label=f"equal variance × time as {best.label}",
            )  # fmt: skip
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.set(
            xlabel="time per gradient (s, median)",
            ylabel="total gradient variance (trace of covariance)",
            title=f"Gradient estimators ({self.num_samples} samples each)",
        )
        axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
        return figure

    def plot_training(
        self, path: str | os.PathLike, *, window: int | None = None
    ) -> str | os.PathLike:
        """Save a PNG of the training objective (running mean) against wall-clock time
        and against steps, one line per variant (as Figure 7 of Becker et al. 2024),
        and a panel per ``train_metrics`` value against wall-clock time.

        Args:
            path: where to write the image.
            window: steps in the trailing running mean (default: a tenth of the run).

        Raises:
            ValueError: if no variant was trained (``compare(train=steps)``).
        """
        trained = [r for r in self.results.values() if r.training is not None]
        if not trained:
            raise ValueError("plot_training: nothing was trained; pass train=steps to compare.")
        metrics = []
        for r in trained:
            metrics += [m for m in r.training.evaluations if m not in ("step", "seconds", *metrics)]
        figure, (by_time, by_step, *panels) = _figure(2 + len(metrics))
        for i, r in enumerate(trained):
            history = r.training.history
            if r.training.steps is None:
                size = max(1, history.size // 10) if window is None else window
                smooth, steps = running_mean(history, size), np.arange(1, history.size + 1)
            else:  # read back from a summary: already the running mean
                smooth, steps = history, r.training.steps
            by_time.plot(r.training.seconds, smooth, color=f"C{i}", label=r.label)
            by_step.plot(steps, smooth, color=f"C{i}", label=r.label)
            evaluations = r.training.evaluations
            for panel, name in zip(panels, metrics):
                if name in evaluations:
                    panel.plot(evaluations["seconds"], evaluations[name], marker=".",
                               color=f"C{i}", label=r.label)  # fmt: skip
        for panel, name in zip(panels, metrics):
            panel.set(xlabel="wall-clock time (s)", ylabel=name)
        by_time.set(xlabel="wall-clock time (s)", ylabel="objective (running mean)")
        by_step.set(xlabel="step", ylabel="objective (running mean)")
        by_time.legend(fontsize=8, loc="lower right")
        figure.suptitle("Training with each estimator")
        figure.savefig(path, format="png", dpi=120)
        return path


_SCALARS = (
    "num_samples",
    "value_mean",
    "value_se",
    "gradient_norm",
    "total_variance",
    "total_variance_se",
    "snr",
    "bias_norm",
    "bias_se",
    "bias_z",
    "biased",
    "time_per_gradient",
    "work_normalized_variance",
    "peak_memory_bytes",
)


def _equal_cost_anchor(results: list[VariantResult]) -> VariantResult | None:
    """The unbiased variant with the least positive variance × time (None if none): a
    biased variant's low variance is no achievement, so it never sets the line."""
    unbiased = [r for r in results if r.work_normalized_variance > 0 and not r.biased]
    return min(unbiased, key=lambda r: r.work_normalized_variance) if unbiased else None


def _encode(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    if isinstance(value, bool | int | str) or value is None:
        return value
    value = float(value)
    if math.isnan(value):
        return None
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if value is None:
        return math.nan
    if value in ("inf", "-inf"):
        return float(value)
    return value


def _figure(panels: int) -> tuple[Figure, list[Axes]]:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("Comparison plots need matplotlib: pip install matplotlib") from err
    rows = -(-panels // 3)  # at most three panels a row
    per_row = min(panels, 3)
    figure = Figure(figsize=(6.5 * per_row, 4.5 * rows), layout="constrained")
    FigureCanvasAgg(figure)  # an explicit Agg canvas: no pyplot, no global backend
    return figure, [figure.add_subplot(rows, per_row, i + 1) for i in range(panels)]


def _seconds(value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value / 1e-9:.3g} ns"


def _bytes(value: int | None) -> str:
    if value is None:
        return "n/a"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value} B"
