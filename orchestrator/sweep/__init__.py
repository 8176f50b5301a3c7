"""Hyper-parameter sweeps (Ray Tune) and scheduled sweeps (cron), from the spec's `sweep:`
and `schedule:` sections.

    orch sweep jobs/mnist_mlp_sweep.yaml [--resume]
    orch schedule add jobs/mnist_mlp_sweep.yaml --cron "0 3 * * *"; orch scheduler

    spec.py      the `sweep:` section (SweepSpec), checked against the spec; trial specs
    tune.py      Ray Tune's objects: param space, searcher, scheduler, trial resources
    trial.py     one trial, in a Tune actor: the same Train run as `orch run` (launch/ray_train.py)
    driver.py    run_sweep: the Tuner, ledger rows per trial, the live table, best.json, metric.png
    schedule.py  cron schedules in SQLite, the scheduler loop, warm starts and champions
"""
