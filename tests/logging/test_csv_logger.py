"""AppendingCSVLogger keeps the rows of an earlier session in the same run directory."""

import csv

from distil.run.csv_logger import AppendingCSVLogger


def read_rows(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def log_session(save_dir, rows):
    logger = AppendingCSVLogger(save_dir=str(save_dir), name="csv", version="")
    for step, metrics in rows:
        logger.log_metrics(metrics, step=step)
    logger.save()
    return logger.experiment.metrics_file_path


def test_a_second_session_appends_and_widens_the_header(tmp_path):
    log_session(tmp_path, [(0, {"train/loss": 3.0}), (1, {"train/loss": 2.5})])
    path = log_session(tmp_path, [(1, {"train/loss": 2.5}), (2, {"train/loss": 2.0, "val/acc": 0.25})])
    rows = read_rows(path)
    assert [(int(r["step"]), float(r["train/loss"])) for r in rows] == [(0, 3.0), (1, 2.5), (1, 2.5), (2, 2.0)]
    assert [r["val/acc"] for r in rows] == ["", "", "", "0.25"]


def test_a_fresh_directory_starts_a_new_file(tmp_path):
    path = log_session(tmp_path, [(0, {"train/loss": 1.0})])
    assert read_rows(path) == [{"step": "0", "train/loss": "1.0"}]
