#!/usr/bin/env bash
# GRPO on the built-in benchmark from a SCALe-SFT checkpoint of the shipped tiny base; prints the reward curve.
# About 5 min of SFT and 15 min of GRPO on 2 CPU cores.
set -euo pipefail
OUT=${1:-runs/grpo-curve}
export OMP_NUM_THREADS=1
scale-vlm make-data --output_dir "$OUT/data" --format messages --num_examples 2000
scale-vlm sft --model_name_or_path scale_vlm/assets/tiny-base --dtype float32 --dataset_name "$OUT/data/train.jsonl" \
  --output_dir "$OUT/sft-scale" --method scale --max_steps 240 --per_device_train_batch_size 16 --learning_rate 2e-3 \
  --lr_scheduler_type cosine --warmup_steps 0.05 --weight_decay 0.01 --adam_beta2 0.98 --use_cpu --save_strategy no \
  --logging_steps 8 --disable_tqdm true
scale-vlm grpo --model_name_or_path "$OUT/sft-scale" --dataset_name builtin --output_dir "$OUT/grpo-scale" --max_steps 100 \
  --per_device_train_batch_size 16 --num_generations 4 --max_completion_length 160 --learning_rate 1e-4 \
  --lr_scheduler_type constant --beta 0 --loss_type dapo --logging_steps 1 --use_cpu --save_strategy no --disable_tqdm true
python scripts/grpo_reward_curve.py "$OUT/grpo-scale" --window 20 --png "$OUT/grpo_reward_curve.png"
