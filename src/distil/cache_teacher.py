"""`python -m distil.cache_teacher`: run the teacher once over prepared shards and store its top-k outputs.

Example (`teacher=` picks a file of the teacher config group, as in `distil.train`; a folder goes in
`teacher.name_or_path`):

    python -m distil.cache_teacher shards=outputs/shards/demo teacher.name_or_path=/models/bert topk=32 \
        out=outputs/cache/k32
    python -m distil.train data=shards data.shards_dir=outputs/shards/demo distill.teacher_cache=outputs/cache/k32

The run must use the same max_length, seed, masking, temperature and kl_positions (the cache's fingerprint checks
them). The layout, what it costs and the approximation: `distil.topk_cache`.
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from distil.topk_cache.store import TeacherCache
from distil.topk_cache.writer import cache_teacher

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../../conf", config_name="cache_teacher")
def main(cfg: DictConfig) -> None:
    metadata = cache_teacher(
        shards=cfg.shards,
        teacher=cfg.teacher.name_or_path,
        out=cfg.out,
        topk=cfg.topk,
        maskings=cfg.maskings,
        max_length=cfg.max_length,
        seed=cfg.seed,
        mlm_probability=cfg.mlm_probability,
        mlm_smoothing=cfg.mlm_smoothing,
        temperature=cfg.temperature,
        kl_positions=cfg.kl_positions,
        hidden_states=cfg.hidden_states,
        precision=cfg.precision,
        batch_size=cfg.batch_size,
        devices=cfg.devices,
        num_workers=cfg.num_workers,
        overwrite=cfg.overwrite,
        trust_remote_code=cfg.teacher.trust_remote_code,
    )
    files = sum(entry["bytes"] for entry in metadata["files"].values())
    log.info("wrote %s: %d files, %.1f MB", cfg.out, len(metadata["files"]), files / 1e6)
    log.info(
        "the teacher's top-%d ids hold %.1f%% of its probability at T=%s on average (the tail bucket the rest)",
        cfg.topk,
        100 * TeacherCache(cfg.out, verify=False).top_k_mass(),
        cfg.temperature,
    )


if __name__ == "__main__":
    main()
