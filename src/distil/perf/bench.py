"""`python -m distil.perf.bench`: tokens/s of the real distillation training step, one JSON line per setting.

Builds a teacher of any family the template distils with random weights from `bench_model` (its `model_type` and
shape; no download), the student from `student`, and `DistillationModule` from `distill` (its extra terms included)
exactly as `distil.train` does, then runs the Lightning Trainer's training loop (forward, loss, backward, gradient
clipping, optimizer and LR-scheduler step) for `warmup_steps + timed_steps` steps. The timed window runs from the
end of the last warm-up step to the end of the last step, with a device synchronisation at both ends. Batches come
from the host like in training: random full rows masked by the data module's `MaskingCollator`, or labelled with the
next tokens by its `NextTokenCollator` for a causal teacher (`batches=synthetic`), or the real `CorpusDataModule` over
pre-tokenized shards (`batches=shards`), which shows whether the loader keeps up.

Examples:
    python -m distil.perf.bench                                      # all optimisations, 256 x 128 tokens
    python -m distil.perf.bench -m max_length=128,512 distill.kl_positions=masked,all
    python -m distil.perf.bench -m bench_opt=reference,bf16_student,bf16_teacher,chunked_vocab_loss,fused_adamw,all
    python -m distil.perf.bench batches=shards shards_dir=DIR tokenizer=DIR
    python -m distil.perf.bench bench_model=tiny trainer.accelerator=cpu bench_opt=reference   # seconds on a CPU
    python -m distil.perf.bench -m bench_model=llama_demo trainer.accelerator=cpu bench_opt=reference \
        max_length=256 tokens_per_step=4096 distill=distilgpt2 distill.divergence=forward_kl,reverse_kl,jsd
"""

from __future__ import annotations

import gc
import json
import math
import time
import warnings
from pathlib import Path
from typing import Any

import hydra
import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, IterableDataset
from transformers import AutoConfig, PretrainedConfig, PreTrainedModel

from distil.data.masking import MaskingCollator
from distil.data.next_token import NextTokenCollator
from distil.families import teacher_family
from distil.run.quiet import quiet_third_party_output

SPECIAL_IDS = (0, 1, 2, 3)  # [PAD], [CLS], [SEP], [MASK] of the synthetic rows: the first ids of the vocabulary
PAD_ID, CLS_ID, SEP_ID, MASK_ID = SPECIAL_IDS


def masked_count(batch_size: int, max_length: int, mlm_probability: float) -> int:
    """Positions `MaskingCollator` masks in a batch of full rows: ceil(p x content tokens), [CLS]/[SEP] excluded."""
    return math.ceil(mlm_probability * batch_size * (max_length - 2))


def labelled_count(batch_size: int, max_length: int, mlm_probability: float, causal: bool) -> int:
    """Positions with a label in a batch of full rows: the masked ones, or every position but the last of a row (the
    next tokens of a causal LM)."""
    return batch_size * (max_length - 1) if causal else masked_count(batch_size, max_length, mlm_probability)


class SyntheticBatches(IterableDataset):
    """Endless host batches of full rows ([CLS] random ids [SEP]) masked by the data module's own `MaskingCollator`,
    or (`causal`) rows of random ids labelled with the next tokens by its `NextTokenCollator`.

    `distinct` batches are drawn once and then cycled, so generating them costs nothing during timing.
    """

    def __init__(
        self,
        batch_size: int,
        max_length: int,
        vocab_size: int,
        mlm_probability: float,
        distinct: int = 8,
        seed: int = 0,
        causal: bool = False,
    ) -> None:
        collator = (
            NextTokenCollator(PAD_ID, max_length)
            if causal
            else MaskingCollator(vocab_size, MASK_ID, PAD_ID, list(SPECIAL_IDS), max_length, mlm_probability)
        )
        generator = torch.Generator().manual_seed(seed)
        self.batches = []
        for _ in range(distinct):
            rows = torch.randint(len(SPECIAL_IDS), vocab_size, (batch_size, max_length), generator=generator)
            if not causal:
                rows[:, 0], rows[:, -1] = CLS_ID, SEP_ID
            self.batches.append(collator(list(rows.numpy()), generator))

    def __iter__(self):
        while True:
            yield from self.batches


class StepTimer(pl.Callback):
    """Times steps `warmup_steps .. warmup_steps + timed_steps - 1` and keeps every step's loss on the device.

    With `count_syncs`, CUDA's sync debug mode is on inside the timed window and each host-device synchronisation
    (`.item()`, `nonzero`, a blocking copy ...) is counted.
    """

    def __init__(self, warmup_steps: int, timed_steps: int, count_syncs: bool) -> None:
        self.warmup_steps, self.timed_steps = warmup_steps, timed_steps
        self.count_syncs = count_syncs and torch.cuda.is_available()
        self.losses: list[torch.Tensor] = []
        self.seconds = float("nan")
        self.syncs: int | None = None
        self.caught: warnings.catch_warnings | None = None
        self.sync_warnings: list = []
        self.start = 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.losses.append(outputs["loss"].detach())
        if batch_idx == self.warmup_steps - 1:
            synchronize()
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            if self.count_syncs:
                self.caught = warnings.catch_warnings(record=True)
                self.sync_warnings = self.caught.__enter__()
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
            self.start = time.perf_counter()
        elif batch_idx == self.warmup_steps + self.timed_steps - 1:
            if self.count_syncs:
                torch.cuda.set_sync_debug_mode("default")
                self.caught.__exit__(None, None, None)
                self.syncs = sum("synchroniz" in str(record.message) for record in self.sync_warnings)
            synchronize()
            self.seconds = time.perf_counter() - self.start


class KernelProfile(pl.Callback):
    """Profiles steps `first_step .. first_step + steps - 1` (after the timed window) with the torch profiler.

    Writes the kernels by total device time to `table_file` and keeps `busy_fraction`: device kernel time over wall
    time of the profiled steps (well under 1 means the GPU waits for the host).
    """

    def __init__(self, first_step: int, steps: int, table_file: str) -> None:
        self.first_step, self.steps, self.table_file = first_step, steps, table_file
        self.profiler: torch.profiler.profile | None = None
        self.busy_fraction: float | None = None
        self.start = 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if batch_idx == self.first_step - 1:
            synchronize()
            activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
            self.profiler = torch.profiler.profile(activities=activities)
            self.profiler.__enter__()
            self.start = time.perf_counter()
        elif batch_idx == self.first_step + self.steps - 1 and self.profiler is not None:
            synchronize()
            wall_us = (time.perf_counter() - self.start) * 1e6
            self.profiler.__exit__(None, None, None)
            events = self.profiler.key_averages()
            on_device = [  # kernels and copies; user annotations (e.g. the optimizer step) span kernels counted already
                event
                for event in events
                if event.device_type == torch.autograd.DeviceType.CUDA and not event.is_user_annotation
            ]
            kernel_us = sum(event.self_device_time_total for event in on_device)
            self.busy_fraction = round(kernel_us / wall_us, 3)
            table = events.table(sort_by="self_device_time_total", row_limit=40, max_name_column_width=70)
            Path(self.table_file).write_text(f"device busy {self.busy_fraction:.3f} of {wall_us / 1e3:.1f} ms\n{table}")


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def model_flops_per_step(
    teacher: PretrainedConfig, student_layers: int, batch_size: int, max_length: int, vocab_rows: int
) -> float:
    """Matrix FLOPs the step must do: teacher forward, student forward + backward (x3), both vocabulary heads on
    `vocab_rows` rows (teacher forward, student x3). Elementwise work, embeddings and recomputation are not counted.
    The layer is BERT-shaped (four h x h attention projections, two FFN matrices): for the Llama layout this leaves out
    the FFN's gate matrix and counts grouped key/value projections in full.
    """
    hidden, vocab = teacher.hidden_size, teacher.vocab_size
    ffn = getattr(teacher, "intermediate_size", None) or getattr(teacher, "n_inner", None) or 4 * hidden  # GPT-2: 4h
    per_layer_token = 2 * (4 * hidden * hidden + 2 * hidden * ffn) + 4 * max_length * hidden  # matmuls + attention
    encoders = batch_size * max_length * per_layer_token * (teacher.num_hidden_layers + 3 * student_layers)
    heads = vocab_rows * 2 * hidden * (hidden + vocab) * (1 + 3)
    return float(encoders + heads)


def teacher_config(model_cfg: DictConfig) -> PretrainedConfig:
    """The config `bench_model` describes (its `model_type` and that type's config keys), of a family the template
    distils (`distil.families`)."""
    settings = OmegaConf.to_container(model_cfg, resolve=True)
    config = AutoConfig.for_model(settings.pop("model_type"), **settings)
    teacher_family(config, where="bench_model")
    return config


def build_teacher(model_cfg: DictConfig, seed: int) -> PreTrainedModel:
    """A language model of the configured family and shape with random weights."""
    torch.manual_seed(seed)
    config = teacher_config(model_cfg)
    return teacher_family(config).auto_class.from_config(config)


def train_dataloader(
    cfg: DictConfig, batch_size: int, vocab_size: int, causal: bool
) -> DataLoader | pl.LightningDataModule:
    if cfg.batches == "synthetic":
        batches = SyntheticBatches(
            batch_size, cfg.max_length, vocab_size, cfg.mlm_probability, seed=cfg.seed, causal=causal
        )
        return DataLoader(batches, batch_size=None, num_workers=0, pin_memory=torch.cuda.is_available())
    if cfg.batches == "shards":
        from distil.data.datamodule import CorpusDataModule

        return CorpusDataModule(
            tokenizer=cfg.tokenizer,
            causal=causal,
            shards_dir=cfg.shards_dir,
            max_length=cfg.max_length,
            batch_size=batch_size,
            num_workers=cfg.num_workers,
            mlm_probability=cfg.mlm_probability,
            val_documents=0,
            seed=cfg.seed,
        )
    raise ValueError(f"batches={cfg.batches!r} is not allowed: use 'synthetic' or 'shards'")


def run_setting(cfg: DictConfig) -> dict[str, Any]:
    """Build teacher, student, module and trainer from `cfg`, run the steps, and return the measurements."""
    torch._dynamo.reset()
    batch_size = cfg.batch_size or cfg.tokens_per_step // cfg.max_length
    teacher = build_teacher(cfg.bench_model, cfg.seed)
    student = instantiate(cfg.student)(teacher=teacher)
    module = instantiate(cfg.distill)(teacher=teacher, student=student)
    timer = StepTimer(cfg.warmup_steps, cfg.timed_steps, cfg.count_syncs)
    steps = cfg.warmup_steps + cfg.timed_steps
    profile = KernelProfile(steps, cfg.profile_steps, cfg.profile_file) if cfg.profile_file else None
    callbacks = [timer] + ([profile] if profile else [])
    max_steps = steps + (cfg.profile_steps if profile else 0)
    trainer: pl.Trainer = instantiate(cfg.trainer, max_steps=max_steps, callbacks=callbacks)
    causal = teacher_family(teacher.config).causal
    data = train_dataloader(cfg, batch_size, teacher.config.vocab_size, causal)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(num_workers|does not have many workers|TF32).*")
        if isinstance(data, pl.LightningDataModule):
            trainer.fit(module, datamodule=data)
        else:
            trainer.fit(module, train_dataloaders=data)

    tokens = batch_size * cfg.max_length * cfg.timed_steps
    labelled = labelled_count(batch_size, cfg.max_length, cfg.mlm_probability, causal)
    vocab_rows = batch_size * cfg.max_length if module.logits_on_all_rows else labelled  # the module's own terms
    flops = model_flops_per_step(
        teacher.config, student.config.num_hidden_layers, batch_size, cfg.max_length, vocab_rows
    )
    achieved = flops * cfg.timed_steps / timer.seconds
    on_cuda = trainer.strategy.root_device.type == "cuda"
    losses = torch.stack(timer.losses).float().tolist()
    result = {
        "setting": cfg.name,
        "device": torch.cuda.get_device_name() if on_cuda else "cpu",
        "batch_size": batch_size,
        "max_length": cfg.max_length,
        "kl_positions": cfg.distill.kl_positions,
        "divergence": cfg.distill.get("divergence", "forward_kl"),
        "loss_terms": [term.name for term in module.logits_terms] + (["cos"] if module.alpha_cos > 0 else []),
        "precision": str(cfg.trainer.precision),
        "teacher_dtype": cfg.distill.speed.teacher_dtype,
        "compile": cfg.distill.speed.compile,
        "batches": cfg.batches,
        "tokens_per_s": round(tokens / timer.seconds),
        "sequences_per_s": round(batch_size * cfg.timed_steps / timer.seconds, 1),
        "step_ms": round(1000 * timer.seconds / cfg.timed_steps, 2),
        "model_tflop_per_step": round(flops / 1e12, 3),
        "achieved_tflops": round(achieved / 1e12, 1),
        "mfu": round(achieved / (cfg.peak_tflops * 1e12), 4),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if on_cuda else None,
        "host_syncs_per_step": None if timer.syncs is None else round(timer.syncs / cfg.timed_steps, 2),
        "final_loss": round(losses[steps - 1], 4),
        "timed_steps": cfg.timed_steps,
        "device_busy_fraction": profile.busy_fraction if profile else None,
    }
    if cfg.loss_curve_file:
        Path(cfg.loss_curve_file).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.loss_curve_file).write_text(json.dumps({"setting": result, "losses": losses}))
    del trainer, module, teacher, student, data
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return result


@hydra.main(version_base="1.3", config_path="../../../conf", config_name="bench")
def main(cfg: DictConfig) -> None:
    quiet_third_party_output()
    result = run_setting(cfg)
    line = json.dumps(result)
    print(line, flush=True)
    if cfg.results_file:
        with open(cfg.results_file, "a") as results:
            results.write(line + "\n")


if __name__ == "__main__":
    main()
