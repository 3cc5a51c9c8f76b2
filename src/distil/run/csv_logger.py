"""A CSV logger that keeps the curve of a resumed run: Lightning's deletes an existing metrics.csv at start."""

from __future__ import annotations

import csv

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment


class AppendingMetricsWriter(ExperimentWriter):
    """Lightning's CSV writer, except that an existing metrics.csv is kept and appended to, under its own header.

    Rows logged between the last checkpoint and an interruption appear twice after a resume, with identical values
    (resume is exact); readers keep the last row of each step.
    """

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = sorted(next(csv.reader(file), []))


class AppendingCSVLogger(CSVLogger):
    """`CSVLogger` whose metrics.csv survives a run resumed in its own directory (`resume=auto`)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> AppendingMetricsWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AppendingMetricsWriter(log_dir=self.log_dir)
        return self._experiment
