"""The worker's entry: Ray Train's per-report and per-checkpoint INFO lines (every rank, every
report, forwarded into orch run's output) are turned down to warnings, by the loggers' real
names (context.py names its logger after its file)."""

from __future__ import annotations

import logging

from orchestrator.worker.entry import quiet_train_reports


def test_train_report_and_checkpoint_info_lines_are_turned_down():
    from ray.train.v2._internal.execution import context, storage

    loggers = [logging.getLogger(context.__file__), logging.getLogger(storage.__name__)]
    for lg in loggers:
        lg.setLevel(logging.INFO)  # as a Train worker's logging config leaves them
    quiet_train_reports()
    for lg in loggers:
        assert not lg.isEnabledFor(logging.INFO)
        assert lg.isEnabledFor(logging.WARNING)
