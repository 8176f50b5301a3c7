"""What runs inside each training process: the API a workload's `train_loop(config)` uses.

    from orchestrator import worker

    class Args(worker.OptimArgs): ...             # the workload's `train:` arguments
    def train_loop(config: dict) -> dict:
        sess = worker.setup(config)               # a Session (session.py)
        model, opt, sched = sess.prepare(build_model(args), args, total_steps)
        ...

The package, by concern:

    session.py          Session: device, wrap, step, collectives, metrics rows; setup()
    config.py           WorkerConfig: what the driver hands every worker, typed
    optim.py            OptimArgs, the optimizer and the LR schedule
    precision.py        autocast, fp16's loss scaler, input casting for DeepSpeed
    wrap.py             DDP, FSDP2 and DeepSpeed wrapping
    pipeline.py         strategy pipeline: stages, schedules (torch.distributed.pipelining)
    checkpoint.py       the four checkpoint formats: save, report, restore
    deepspeed_config.py the DeepSpeed config from the spec (and your JSON)
    faults.py           ORCH_FAULTS: injected failures and stragglers
    standalone.py       a workload run alone: `python jobs/mnist_mlp.py --epochs 2`
    entry.py            what each Ray Train worker runs: imports the workload, calls train_loop
    script.py           `workload: script`: a torchrun-style script run unchanged

Nothing here imports torch at import time.
"""

from orchestrator.worker.optim import OptimArgs
from orchestrator.worker.session import Session, distributed_sampler, setup

__all__ = ["OptimArgs", "Session", "distributed_sampler", "setup"]
