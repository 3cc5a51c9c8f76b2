"""The README's narrow-student commands on the shared BERT teacher (2 steps each here): `experiment=demo_narrow` (a
6 x 128 student from random weights, soft targets + masked LM + relations), the MiniLM-shaped variant with every
internal term and `init=teacher_embeddings`; the exported student is a 128-wide DistilBERT that loads without the
projections, and each logged term weighs into the loss."""

from __future__ import annotations

import pytest
from transformers import AutoModelForMaskedLM

from distil.train import train
from tests.conftest import assert_logged_terms_weigh_into_the_loss, compose_config, shared_assets_dir

pytestmark = pytest.mark.shared
TEACHER = "models/bert-teacher-12x256"
SHORT = [
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
    "trainer.limit_val_batches=1",
    "trainer.log_every_n_steps=1",
]
SHORT += ["data.batch_size=4", "data.val_batch_size=4", "data.num_workers=0", "logger=csv"]
RUNS = {  # name -> (overrides, the weights of the terms it logs)
    "demo_narrow": ([], {"kl": 5.0, "label": 2.0, "relation": 1.0}),
    "every_term": (
        ["distill.alpha_hidden_mse=1", "distill.alpha_attention=1", "student.init=teacher_embeddings"],
        {"kl": 5.0, "label": 2.0, "relation": 1.0, "hidden_mse": 1.0, "attention": 1.0},
    ),
}


@pytest.mark.parametrize("name", sorted(RUNS))
def test_the_narrow_demo_trains_a_128_wide_student_that_exports_without_projections(name, tmp_path):
    if not (shared_assets_dir() / TEACHER).is_dir():
        pytest.skip(f"shared teacher not found at {shared_assets_dir() / TEACHER} (set DISTIL_SHARED)")
    overrides, weights = RUNS[name]
    train(compose_config("train", "experiment=demo_narrow", *SHORT, *overrides, f"paths.output_dir={tmp_path}"))
    assert_logged_terms_weigh_into_the_loss(tmp_path, 2, weights)
    student, info = AutoModelForMaskedLM.from_pretrained(tmp_path / "student", output_loading_info=True)
    assert not any(info[key] for key in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    assert (student.config.dim, student.config.n_layers, student.config.hidden_dim) == (128, 6, 512)
    assert student.config.distil_layer_map is None
    millions = sum(p.numel() for p in student.parameters()) / 1e6
    assert 5.0 < millions < 5.5  # about 30% of the teacher's 17.5M
