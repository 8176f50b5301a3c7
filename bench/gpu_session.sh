#!/usr/bin/env bash
# One prepared GPU session: the two GPU benchmarks, then the workloads' own loops run alone on
# cuda:0 (no Ray), for fp16 with its loss scaler, DeepSpeed fp16, and T5 quality per step.
# Each part has its own time limit so one slow part cannot eat the rest. Logs go to $OUT (or ./gpu_out).
#   bash bench/gpu_session.sh
set -u
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if [ -d .whl ]; then   # packages the GPU image lacks (pydantic, mlxtend, num2words, hjson, deepspeed)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD/.whl/pure:$PYTHONPATH
fi
part() { local name=$1 limit=$2; shift 2; echo "=== $name (limit ${limit}s)"; local t0=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1; echo "rc=$? in $((SECONDS - t0)) s"; tail -n 12 "$OUT/$name.log"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
part resnet50 150 python3 bench/gpu_resnet50.py --steps 30 --warmup 10 --json "$OUT/resnet50.json"
part t5base 100 python3 bench/gpu_t5.py --compare-fp32 --json "$OUT/t5base.json"
part mnist_fp16 30 python3 jobs/mnist_mlp.py --gpu --precision fp16 --epochs 5
part mnist_ds_fp16 50 python3 jobs/mnist_mlp.py --gpu --precision fp16 --strategy deepspeed --epochs 5
part resnet18_fp16 50 python3 jobs/resnet_images.py --gpu --precision fp16 --arch resnet18 \
  --image-size 64 --epochs 4
part t5_default 130 python3 jobs/t5_translation.py --gpu --batch-size 64 --eval-every 250 \
  --log-every 250 --n-test 500
