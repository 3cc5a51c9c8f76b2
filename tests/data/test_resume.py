"""Exact resume under Lightning: the data position is in the checkpoint; batches after step k match the
uninterrupted run's, with dataloader workers, for masked and causal rows, from text and from shards."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from distil.data.datamodule import CorpusDataModule
from distil.data.sources import LocalFiles
from distil.prepare import prepare

STEPS = 9
STOP_AT = 4


class BatchRecorder(pl.LightningModule):
    """Records the input_ids and labels of every training batch it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(1))
        self.seen: list[tuple[list, list]] = []

    def training_step(self, batch, batch_index):
        assert sorted(batch) == ["attention_mask", "input_ids", "labels"]
        self.seen.append((batch["input_ids"].tolist(), batch["labels"].tolist()))
        return self.weight * batch["input_ids"].float().mean()

    def validation_step(self, batch, batch_index):
        return None

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def run(tokenizer_dir: Path, data: dict, checkpoint_dir: Path, ckpt_path: str | None) -> BatchRecorder:
    datamodule = CorpusDataModule(tokenizer_dir, max_length=24, batch_size=3, num_workers=2, seed=11, **data)
    model = BatchRecorder()
    trainer = pl.Trainer(
        max_steps=STEPS,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        val_check_interval=3,
        limit_val_batches=2,
        num_sanity_val_steps=0,
        callbacks=[
            ModelCheckpoint(dirpath=checkpoint_dir, every_n_train_steps=STOP_AT, save_top_k=-1, filename="{step}")
        ],
    )
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    return model


@pytest.mark.parametrize("causal", [False, True], ids=["masked", "causal"])
@pytest.mark.parametrize("kind", ["text", "shards"])
def test_resumed_run_sees_the_same_batches_as_the_uninterrupted_run(
    kind, causal, tokenizer_dir, causal_tokenizer_dir, corpus_dir, tmp_path
):
    tokenizer_dir = str(causal_tokenizer_dir if causal else tokenizer_dir)
    sources = [LocalFiles(str(corpus_dir / "*.txt"))]
    if kind == "text":
        data = dict(sources=sources, val_documents=5, documents_per_block=15, causal=causal)
    else:
        prepare(tokenizer_dir, sources, [], str(tmp_path / "shards"), 5, 11, 1, causal=causal)
        data = dict(shards_dir=str(tmp_path / "shards"), causal=causal)
    full = run(tokenizer_dir, data, tmp_path / "full", None)
    assert len(full.seen) == STEPS
    checkpoint = tmp_path / "full" / f"step={STOP_AT}.ckpt"
    state = torch.load(checkpoint, weights_only=False)["CorpusDataModule"]
    assert sorted(state["positions"]) == [0, 1]  # both workers' positions are saved
    resumed = run(tokenizer_dir, data, tmp_path / "resumed", str(checkpoint))
    assert len(resumed.seen) == STEPS - STOP_AT
    assert resumed.seen == full.seen[STOP_AT:]
    assert full.seen[STOP_AT] != full.seen[STOP_AT - 1]
