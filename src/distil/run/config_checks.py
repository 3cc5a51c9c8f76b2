"""Validation of the composed run config, before any weights are loaded or data is read.

Each error names the config key, the bad value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import logging

from hydra.utils import instantiate
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.accelerators import CPUAccelerator, CUDAAccelerator
from omegaconf import DictConfig, ListConfig, OmegaConf

from distil.data.datamodule import MIN_MAX_LENGTH
from distil.data.shards import read_metadata
from distil.data.tokenization import check_same_vocabulary, check_tokenizer_matches
from distil.families import teacher_family
from distil.modules.distillation import check_module_settings
from distil.modules.internal_terms import plan_internals
from distil.modules.objective import (
    OBJECTIVE_KEYS,
    RENAMED_KEYS,
    ObjectiveWeights,
    check_cosine_widths,
    objective_weights,
)
from distil.modules.student import WIDTH_KEYS, check_pretrained_student, load_student_config, student_model_config
from distil.run.devices import check_precision, precision_name, training_device
from distil.topk_cache.fingerprint import check_fingerprint, run_fingerprint
from distil.topk_cache.objective import check_cached_objective
from distil.topk_cache.store import read_cache_metadata
from distil.value_checks import check_integer

log = logging.getLogger(__name__)


def distill_weights(cfg: DictConfig) -> ObjectiveWeights:
    """The objective's temperature and weights of `distill.*`, checked (`ObjectiveWeights`)."""
    d = cfg.distill
    weights = {key: d[key] for key in (*OBJECTIVE_KEYS, *RENAMED_KEYS) if key in d}
    extra_weights = tuple(term.get("weight") for term in d.get("extra_terms") or [])
    return objective_weights("distill", **weights, extra_weights=extra_weights)


def check_distill_config(cfg: DictConfig) -> None:
    """Temperature, loss weights, KL positions, warm-up and the speed options (`distill.*`), by the checks of the
    module's constructor and of `StepSpeed`'s."""
    distill_weights(cfg)
    check_module_settings(cfg.distill.kl_positions, cfg.distill.warmup_fraction)
    instantiate(cfg.distill.speed)


def check_teacher_cache(cfg: DictConfig) -> None:
    """With `distill.teacher_cache`: shards to read it with, a fingerprint equal to this run's (teacher weights,
    tokenizer, shards, max_length, masking seed and probability, temperature, kl_positions; `distil.topk_cache`),
    and an objective it can give. Reads the teacher's weight files to hash them, and loads no model."""
    directory = cfg.distill.get("teacher_cache")
    if directory is None:
        return
    if not cfg.data.get("shards_dir"):
        raise ValueError(f"distill.teacher_cache={directory!r} needs data=shards (the shards it was written on)")
    metadata = read_cache_metadata(directory)
    d = cfg.data
    expected = run_fingerprint(
        cfg.teacher.name_or_path,
        read_metadata(d.shards_dir),
        d.max_length,
        d.seed,
        d.get("mlm_probability", 0.15),
        d.get("mlm_smoothing"),
        cfg.distill.temperature,
        cfg.distill.kl_positions,
    )
    check_fingerprint(metadata["fingerprint"], expected, directory)
    has_hidden = metadata["shape"]["hidden_size"] > 0
    check_cached_objective(dataclasses.asdict(distill_weights(cfg)), has_hidden, directory)
    shape = metadata["shape"]
    log.info(
        "no teacher forward: top-%d teacher outputs of %s, %d masking(s)", shape["k"], directory, shape["maskings"]
    )


def check_student_config(cfg: DictConfig, teacher_config) -> None:
    """Student depth within 1..teacher layers, a layer map of in-range, strictly increasing integer indices, a width
    its heads divide, and a known initialisation (the teacher's only at its width); or a given pretrained student
    (`student.name_or_path`) of the teacher's kind and vocabulary size, with its shape unset. The cosine term needs
    the student's width to be the teacher's, and the internal terms their layers and heads (`plan_internals`)."""
    name_or_path = cfg.student.get("name_or_path")
    width = {key: cfg.student.get(key) for key in WIDTH_KEYS}
    if name_or_path is None:
        student_config, _ = student_model_config(
            teacher_config, cfg.student.num_layers, cfg.student.layer_map, cfg.student.init, **width
        )
    else:
        check_pretrained_student(name_or_path, cfg.student.num_layers, cfg.student.layer_map, **width)
        student_config = load_student_config(name_or_path, teacher_config)
    check_cosine_widths(cfg.distill.alpha_cos, teacher_config.hidden_size, student_config.hidden_size)
    d = cfg.distill
    layer_targets = OmegaConf.to_container(d.layer_targets) if d.get("layer_targets") is not None else None
    plan_internals(
        distill_weights(cfg),
        teacher_config,
        student_config,
        layer_targets,
        d.get("relation_teacher_layer"),
        d.get("relation_heads"),
    )


def check_vocabulary(
    teacher_config, teacher_name: str, tokenizer, tokenizer_name: str, student_name: str | None = None
) -> None:
    """The tokenizer feeding the data must be the teacher's vocabulary: it has real vocabulary files and every id it
    produces has a teacher (and so student) embedding (`check_tokenizer_matches`), and, when it is not the teacher's
    own tokenizer, it maps tokens to the same ids as the tokenizer the teacher ships (`check_same_vocabulary`); a
    given pretrained student (`student_name`) must ship that vocabulary too."""
    teacher = f"the teacher teacher.name_or_path={teacher_name!r}"
    check_tokenizer_matches(tokenizer, tokenizer_name, "data.tokenizer", teacher_config.vocab_size, teacher)
    check_same_vocabulary(tokenizer, tokenizer_name, "data.tokenizer", teacher_name, "teacher.name_or_path")
    if student_name is not None:
        check_same_vocabulary(tokenizer, tokenizer_name, "data.tokenizer", student_name, "student.name_or_path")


def check_sequence_length(max_length: int, teacher_config) -> None:
    """`data.max_length` within the data module's shortest row (`MIN_MAX_LENGTH`) and the longest row the teacher's
    positions allow (its family says how many)."""
    longest = teacher_family(teacher_config).max_length(teacher_config)
    if isinstance(max_length, bool) or not isinstance(max_length, int) or not MIN_MAX_LENGTH <= max_length <= longest:
        raise ValueError(
            f"data.max_length={max_length!r} is out of range: allowed an integer in {MIN_MAX_LENGTH}..{longest} (the "
            f"longest row the teacher's max_position_embeddings={teacher_config.max_position_embeddings} allow)"
        )


def check_fused_optimizer_clipping(fused: bool | None, precision: str | int, gradient_clip_val: float | None) -> None:
    """A fused optimizer unscales fp16 gradients inside its step, so Lightning cannot clip them before it."""
    name = precision_name(precision)
    if fused and name == "16-mixed" and gradient_clip_val:
        raise ValueError(
            f"distill.optimizer.fused={fused} cannot be combined with trainer.precision={precision!r} and "
            f"trainer.gradient_clip_val={gradient_clip_val}: under fp16 loss scaling a fused optimizer unscales the "
            "gradients inside its step, after clipping would have to run; use bf16-mixed or 32-true, or "
            "distill.optimizer.fused=false"
        )


DEVICE_PARSERS = {"cpu": CPUAccelerator, "cuda": CUDAAccelerator}  # Lightning's own parsing of `devices`
ALLOWED_DEVICES = {
    "cpu": "an integer >= 1 (processes) or auto",
    "cuda": "an integer >= 1 (GPUs), -1 (every visible GPU), a list of GPU indices, or auto",
}


def check_devices(devices, num_nodes, accelerator: str) -> None:
    """`trainer.num_nodes` >= 1 and `trainer.devices` a device count Lightning accepts for the accelerator here
    (parsed by Lightning's own accelerator, so that the run fails now rather than after the weights load)."""
    check_integer("trainer.num_nodes", num_nodes, 1)
    device = training_device(str(accelerator))
    if devices == "auto" or device not in DEVICE_PARSERS:
        return
    value = OmegaConf.to_container(devices) if isinstance(devices, ListConfig) else devices
    try:
        parsed = DEVICE_PARSERS[device].parse_devices(value)
    except (MisconfigurationException, TypeError, ValueError) as error:
        reason = " ".join(str(error).split())
        raise ValueError(
            f"trainer.devices={value!r} is not allowed with trainer.accelerator={accelerator!r} ({reason}): use "
            f"{ALLOWED_DEVICES[device]}"
        ) from error
    if not parsed:  # Lightning reads devices=0 on a GPU as "no GPU"
        raise ValueError(
            f"trainer.devices={value!r} is not allowed with trainer.accelerator={accelerator!r}: use "
            f"{ALLOWED_DEVICES[device]} (trainer=cpu runs without a GPU)"
        )


def check_trainer_config(cfg: DictConfig) -> None:
    """Precision supported by the accelerator (`trainer.precision`, `trainer.accelerator`) and by the optimizer's
    clipping, device and node counts, micro-batches per optimizer step, and a run length."""
    optimizer = cfg.distill.get("optimizer") or {}
    check_fused_optimizer_clipping(optimizer.get("fused"), cfg.trainer.precision, cfg.trainer.get("gradient_clip_val"))
    check_precision(cfg.trainer.precision, cfg.trainer.accelerator)
    check_devices(cfg.trainer.get("devices", 1), cfg.trainer.get("num_nodes", 1), cfg.trainer.accelerator)
    check_integer("trainer.accumulate_grad_batches", cfg.trainer.get("accumulate_grad_batches", 1), 1)
    max_steps = cfg.trainer.get("max_steps")
    if not (isinstance(max_steps, int) and max_steps >= 1):
        raise ValueError(
            f"trainer.max_steps={max_steps} is not allowed: it must be an integer >= 1 (the training stream is "
            "endless, so max_steps ends the run and sets the length of the LR schedule)"
        )
