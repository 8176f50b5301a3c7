"""The start-up breakdown of a run (orchestrator/launch/lifecycle.py): seconds per phase from
the driver's stamps and the workers' (the slowest worker decides), and what is left out when
stamps are missing."""

from __future__ import annotations

from orchestrator.launch.lifecycle import STARTUP_PHASES, startup_breakdown

STAMPS = {"process": 100.0, "ray_start": 102.0, "ray_ready": 105.5}
WORKERS = [
    {"rank": 0, "t_entry": 109.0, "t_ready": 112.0},
    {"rank": 1, "t_entry": 110.0, "t_ready": 113.5},  # the slower one decides
]


def test_each_phase_in_order_and_the_total():
    got = startup_breakdown(STAMPS, WORKERS, first_row=114.0)
    assert got == {
        "orch_s": 2.0,
        "ray_s": 3.5,
        "workers_s": 4.5,
        "setup_s": 3.5,
        "first_step_s": 0.5,
        "to_first_step_s": 14.0,
    }
    # The phases add up to the total: nothing between them is uncounted.
    assert sum(got[f"{name}_s"] for name, _, _ in STARTUP_PHASES) == got["to_first_step_s"]


def test_missing_stamps_leave_their_phases_out():
    # An RLlib run: no worker stamps, no metrics row seen.
    assert startup_breakdown(STAMPS, [], None) == {"orch_s": 2.0, "ray_s": 3.5}
    # Workers of an older version (no t_entry): their phases and no others are left out.
    got = startup_breakdown(STAMPS, [{"rank": 0, "t_ready": 112.0}], 113.0)
    assert "workers_s" not in got and "setup_s" not in got
    assert got["first_step_s"] == 1.0 and got["to_first_step_s"] == 13.0
