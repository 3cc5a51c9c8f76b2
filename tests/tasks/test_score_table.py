"""The comparison rows of fine-tuning runs: mean ± sample standard deviation over seeds, students as % of teacher."""

from distil.tasks.score_table import score_rows


def run(accuracy: float, parameters: int = 1_000_000, seconds: float = 10.0) -> dict:
    return {"model": {"dev": {"accuracy": accuracy}, "parameters": parameters, "train_seconds": seconds}}


def test_rows_by_hand():
    columns = {
        "teacher": [run(0.80, 2_000_000, 20.0)],
        "student": [run(0.70), run(0.74)],  # mean 72, sample std sqrt(((-2)^2 + 2^2) / 1) = 2.83
        "distilled": [run(0.76), run(0.76)],
    }
    rows = score_rows(["accuracy"], columns, reference="teacher")
    assert rows == [
        ("dev accuracy (x100)", "80.00", "72.00 ± 2.83", "76.00 ± 0.00", "90.0%", "95.0%"),
        ("parameters (M)", "2.00", "1.00 ± 0.00", "1.00 ± 0.00", "50.0%", "50.0%"),
        ("fine-tuning time (s)", "20.0", "10.0 ± 0.0", "10.0 ± 0.0", "50.0%", "50.0%"),
    ]
    assert score_rows(["accuracy"], {"model": [run(0.5)]})[0] == ("dev accuracy (x100)", "50.00")
