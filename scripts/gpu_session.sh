#!/usr/bin/env bash
# One lease of a CUDA machine, in one call: the product's CUDA checks, then training on the GPU.
#
#   scripts/gpu_session.sh SECONDS
#
# SECONDS is the whole wall-clock allowance; training gets what the checks leave. Run from the
# repository root with $OUT set (results land there), on a machine whose python3 has torch+CUDA,
# numpy, Pillow, tqdm and pytest. It expects, beside the tracked tree (none of it is committed):
#   .dev/whl/pygame-*.whl        the window module imports pygame even when headless
#   .dev/avstub/av/__init__.py   a stand-in for PyAV, which the demo source never calls (the
#                                player's modules name av.error at import time)
#   .dev/data/train/{CBSD432,CSun_Hays80}, .dev/data/val/CSet5   training data (../shared/data;
#                                43 MB: with the pygame wheel it fits the device tool's 64 MiB carry)
# Training continues from $INIT (default: the shipped weights/rcd_quality.pt, so nothing else needs
# carrying): the backbone as a blind denoiser first, then the RCD model from it, as in
# weights/README.md.
set -u
ALLOW=${1:-560}
INIT=${INIT:-weights/rcd_quality.pt}
START=$(date +%s)
left() { echo $(( ALLOW - ($(date +%s) - START) )); }
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .dev/whl/*.whl \
  || echo "pygame wheel did not install"
export PYTHONPATH=/tmp/site:.:.dev/avstub SDL_VIDEODRIVER=dummy SDL_AUDIODRIVER=dummy
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv,noheader
python3 -c "import torch, numpy; print('torch', torch.__version__, 'numpy', numpy.__version__, torch.cuda.get_device_name())"

echo "== bench (quiet GPU) [$(left) s left]"
timeout 120 python3 -m engine.bench --device cuda --json "$OUT/bench_cuda.json" 2>&1

echo "== player: demo 1920x1080 at 60 fps, quality model, CUDA, headless [$(left) s left]"
printf '%s\n' "2.0 set strength 10" "2.5 set strength 30" "3.0 add character 0.5" "3.5 set strength 5" \
  "4.0 cycle bypass" "4.5 cycle bypass" "5.0 autotune" "5.5 set strength 40" "6.0 set level 3" > /tmp/edits.txt
for w in quality live; do
  timeout 60 python3 run_player.py --headless --weights $w --device cuda --demo-size 1920x1080 --demo-fps 60 \
    --duration 8 --script /tmp/edits.txt --stats-json "$OUT/player_${w}_1080p60.json" 2>&1 | tail -3
  python3 -c "import json,sys; s=json.load(open(sys.argv[1])); print({k: s[k] for k in ('mode','device','display_fps','frames_dropped_late','frames_dropped_early','backbone_ms_p50','blend_ms_p50','edit_latency_ms_p95','reinference_ms_p50','av_offset_ms_p95')})" "$OUT/player_${w}_1080p60.json"
done

echo "== engine and weights tests, CPU and CUDA [$(left) s left]"
# CUDA_TESTS=1: only the CUDA variants and the commands that pick CUDA by themselves (a short lease)
K=(); [ -n "${CUDA_TESTS:-}" ] && K=(-k "cuda or evaluate or bench or train")
timeout 200 python3 -m pytest -q -p no:cacheprovider -n 8 -W ignore tests/test_engine.py tests/test_weights.py "${K[@]}" \
  > "$OUT/pytest.log" 2>&1
echo "pytest rc $?"; tail -25 "$OUT/pytest.log"

D=.dev/data/train/CBSD432,.dev/data/train/CSun_Hays80
V=.dev/data/val/CSet5
T=$(( $(left) - 45 ))  # what training may use: two starts (data, probe) and a margin kept back
if [ "$T" -gt 60 ] && [ -d .dev/data/train ]; then
  PLAIN=$(( T * 65 / 100 - 15 )); RCD=$(( T * 35 / 100 - 15 ))
  # Checkpoints are written in /tmp/tr (their .state files would crowd $OUT, which returns 8 files)
  # and copied to $OUT as they appear, so a run cut off by the time limit still returns its last one.
  mkdir -p /tmp/tr; (while sleep 5; do cp -f /tmp/tr/*.pt "$OUT"/ 2>/dev/null; done) &
  echo "== train: plain pre-training continued ${PLAIN} s, then RCD ${RCD} s [$(left) s left]"
  # --synthetic 0.15: generated chart images beside the photographs, as for the session-8 live file
  # (weights/README.md); making them costs ~20 s of CPU per command, before the budget's probe.
  python3 -m engine.train --preset quality --plain --init "$INIT" --data $D --val $V \
    --out /tmp/tr/gpu_plain.pt --budget-s $PLAIN --batch 64 --patch 128 --val-every 2000 --synthetic 0.15 \
    > "$OUT/train_plain.log" 2>&1
  tr '\r' '\n' < "$OUT/train_plain.log" | grep -a -E "^(step|--budget|backbone precision|\{|error|Traceback)|Error" | tail -12
  python3 -m engine.train --preset quality --init /tmp/tr/gpu_plain.pt --data $D --val $V \
    --out /tmp/tr/gpu_rcd.pt --budget-s $RCD --batch 64 --patch 128 --lr 3e-4 --warmup 0.2 --val-every 1000 \
    --synthetic 0.15 > "$OUT/train_rcd.log" 2>&1
  tr '\r' '\n' < "$OUT/train_rcd.log" | grep -a -E "^(step|--budget|backbone precision|\{|error|Traceback)|Error" | tail -12
fi
cp -f /tmp/tr/*.pt "$OUT"/ 2>/dev/null
echo "== done [$(left) s left]"
