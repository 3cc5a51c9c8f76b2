#!/usr/bin/env bash
# Re-measure the tables of docs/performance.md on this machine's GPU; JSON lines and the profile go to OUT_DIR.
#   scripts/perf_report.sh OUT_DIR                     # ladder, targets, profile, tests (about 15 min on an H100)
#   scripts/perf_report.sh OUT_DIR ladder targets      # only these parts
# Parts:
#   ladder   the optimisations switched on one after another, 256 x 128, kl_positions=masked -> ladder.jsonl
#   targets  every optimisation at 128 and 512 tokens per row, KL on masked and on all positions -> targets.jsonl
#   profile  kernel table of 3 steps of the compiled step (bench_opt=all, masked) -> profile.txt, profile.jsonl
#   tests    the GPU tests (loss curves against the fp32 reference, no host sync) -> <test>.json, gpu_tests.txt
# BENCH_ARGS (default empty) is appended to every benchmark command, so it overrides the part's own settings, e.g.
#   BENCH_ARGS="bench_model=tiny trainer.accelerator=cpu max_length=16 tokens_per_step=64" ... ladder   # CPU, 1 min
set -euo pipefail
out=$(realpath -m "${1:?usage: scripts/perf_report.sh OUT_DIR [ladder] [targets] [profile] [tests]}")
shift
cd "$(dirname "$0")/.."

parts=("$@")
(( ${#parts[@]} )) || parts=(ladder targets profile tests)
PYTHON=${PYTHON:-python}  # interpreter of the environment with distil installed
read -r -a bench_args <<< "${BENCH_ARGS:-}"
LADDER=reference,bf16_student,bf16_teacher,chunked_vocab_loss,fused_adamw,all

bench() { "$PYTHON" -m distil.perf.bench "$@" "${bench_args[@]}"; }

for part in "${parts[@]}"; do  # every name checked before anything runs
  if [[ ! $part =~ ^(ladder|targets|profile|tests)$ ]]; then
    echo "unknown part '$part': use ladder, targets, profile or tests" >&2
    exit 2
  fi
done
mkdir -p "$out"

for part in "${parts[@]}"; do
  case $part in
    ladder) bench -m bench_opt=$LADDER distill.kl_positions=masked results_file="$out/ladder.jsonl" ;;
    targets) bench -m bench_opt=all max_length=128,512 distill.kl_positions=masked,all \
      results_file="$out/targets.jsonl" ;;
    profile) bench bench_opt=all distill.kl_positions=masked timed_steps=20 profile_file="$out/profile.txt" \
      results_file="$out/profile.jsonl" ;;
    tests) DISTIL_PERF_OUT="$out" "$PYTHON" -m pytest tests/perf -m gpu -q -s 2>&1 | tee "$out/gpu_tests.txt" ;;
  esac
done
