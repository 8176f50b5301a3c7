"""Workloads: one file per job, each runnable alone (`python jobs/NAME.py --help`).

A training workload module provides:
  Args        pydantic model of its `train:` arguments (subclass of orchestrator.worker.OptimArgs)
  DataArgs    pydantic model of its `data:` section (optional)
  train_loop  train_loop(config: dict) run inside each Ray Train worker
  build_model build_model(args) -> torch.nn.Module (the memory planner builds it on 'meta')
  SHAPE_KEYS  `train:` keys that change the model's shape (resume refuses a change)
  main        runs train_loop without Ray
"""
