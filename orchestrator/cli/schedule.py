"""`orch schedule add | list | remove | run-now` and `orch scheduler`: recurring sweeps."""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone

import typer
from rich.table import Table

from orchestrator.cli.console import console, fail
from orchestrator.cli.output import Format, emit, format_option
from orchestrator.cli.queue import address_option
from orchestrator.cli.sweep import print_sweep_summary
from orchestrator.errors import ExitCode, OrchestratorError, exit_for_status
from orchestrator.sweep.schedule import (
    DEFAULT_DB,
    QueueRunner,
    RoutingRunner,
    Scheduler,
    Store,
    SubprocessRunner,
    add_schedule,
    iso,
    run_fire,
)


def _db_option():

    return typer.Option(
        os.environ.get("ORCH_SCHEDULE_DB", DEFAULT_DB),
        "--db",
        help="The schedules' SQLite file (env ORCH_SCHEDULE_DB).",
    )


def register(app) -> None:

    sched = typer.Typer(
        help="Recurring sweeps: add, list, remove, run-now. The loop is `orch scheduler`.",
        no_args_is_help=True,
    )
    app.add_typer(sched, name="schedule")

    @sched.command("add")
    def add_cmd(
        spec: str = typer.Argument(..., help="Job spec with a sweep: section."),
        overrides: list[str] | None = typer.Argument(
            None, help="Dotted overrides applied at each fire."
        ),
        cron: str | None = typer.Option(
            None, "--cron", help="Five-field cron, UTC (default: schedule.cron)."
        ),
        name: str | None = typer.Option(
            None, "--name", help="Schedule id (default: the spec's name)."
        ),
        missed: str | None = typer.Option(None, "--missed", help="skip | run_once"),
        concurrency: str | None = typer.Option(
            None, "--concurrency", help="forbid | allow | replace"
        ),
        warm_start: int | None = typer.Option(
            None, "--warm-start", help="Previous best configs to seed."
        ),
        address: str | None = typer.Option(None, "--address", help="Ray cluster for the sweeps."),
        queue: str | None = typer.Option(
            None,
            "--queue",
            help="Fire through this queue of the cluster (also the spec's queue: section): "
            "each fire is a queued sweep and each trial waits there for its workers.",
        ),
        priority: int | None = typer.Option(
            None, "--priority", help="With a queue: the fires' priority (>= 0, higher first)."
        ),
        working_dir: str | None = typer.Option(
            None,
            "--working-dir",
            help="With a queue: uploaded with each fire (default: the current folder).",
        ),
        db: str = _db_option(),
    ) -> None:
        """Add a recurring sweep of SPEC."""

        try:
            s = add_schedule(
                db,
                spec,
                overrides or [],
                cron=cron,
                name=name,
                missed=missed,
                concurrency=concurrency,
                warm_start=warm_start,
                address=address,
                queue=queue,
                priority=priority,
                working_dir=working_dir,
            )
        except OrchestratorError as exc:
            fail(exc)
        via = (
            f"; through queue '{s.queue}'"
            + (f" at priority {s.priority}" if s.priority is not None else "")
            + f", uploading {s.working_dir}"
            if s.queue
            else ""
        )
        console.print(
            f"added schedule [bold]{s.id}[/bold]: '{s.cron}' (UTC), next fire "
            f"{iso(s.next_fire)}; missed: {s.missed}, concurrency: {s.concurrency}{via}; db {db}",
            highlight=False,
            soft_wrap=True,
        )

    @sched.command("list")
    def list_cmd(db: str = _db_option(), fmt: Format = format_option()) -> None:
        """Schedules with their next fire and latest fires.

        json and csv: id, spec, overrides, cron, next_fire, missed, concurrency, warm_start,
        promote, address, created, last_fires (the latest 3: fire_time, status, sweep_id);
        times in ISO 8601 UTC.
        """

        store = Store(db)
        pairs = [(s, store.fires(s.id)[-3:]) for s in store.schedules()]
        records = [
            {
                "id": s.id,
                "spec": s.spec_path,
                "overrides": list(s.overrides),
                "cron": s.cron,
                "next_fire": _utc(s.next_fire),
                "missed": s.missed,
                "concurrency": s.concurrency,
                "warm_start": s.warm_start,
                "promote": bool(s.promote),
                "address": s.address,
                "queue": s.queue,
                "priority": s.priority,
                "created": _utc(s.created),
                "last_fires": [
                    {"fire_time": _utc(f.fire_time), "status": f.status, "sweep_id": f.sweep_id}
                    for f in last
                ],
            }
            for s, last in pairs
        ]

        def table() -> Table:
            t = Table(title=f"schedules in {db}")
            for col in (
                "schedule",
                "cron (UTC)",
                "next fire",
                "missed",
                "concurrency",
                "last fires",
                "spec",
            ):
                t.add_column(col)
            # One line a schedule in a pipe or a log; stacked fires on a terminal.
            sep = "\n" if console.is_terminal else "; "
            for s, last in pairs:
                t.add_row(
                    s.id,
                    s.cron,
                    iso(s.next_fire),
                    s.missed,
                    s.concurrency,
                    sep.join(f"{iso(f.fire_time)} {f.status}" for f in last) or "-",
                    " ".join([s.spec_path, *s.overrides])
                    + (f" (queue {s.queue})" if s.queue else ""),
                )
            return t

        emit(fmt, records, table, keys=SCHEDULE_KEYS)

    @sched.command("remove")
    def remove_cmd(
        name: str = typer.Argument(..., help="Schedule id."), db: str = _db_option()
    ) -> None:
        """Remove a schedule (its fires and ledger rows stay)."""

        try:
            Store(db).remove(name)
        except OrchestratorError as exc:
            fail(exc)
        console.print(f"removed schedule {name}")

    @sched.command("run-now")
    def run_now_cmd(
        name: str = typer.Argument(..., help="Schedule id."),
        db: str = _db_option(),
        wait: bool = typer.Option(
            True,
            "--wait/--no-wait",
            help="Run here and wait (default; a schedule with a queue: submit it to the queue "
            "and wait for its end), or leave it to the scheduler.",
        ),
        ray_address: str | None = address_option(),
    ) -> None:
        """Fire a schedule now (its policies apply as for a cron fire)."""

        store = Store(db)
        try:
            f = store.claim_now(name, time.time())
        except OrchestratorError as exc:
            fail(exc)
        console.print(f"fire {f.id}: sweep {f.sweep_id}")
        if wait:
            s = store.get(name)
            sch = Scheduler(store, _runner(store, db, ray_address), log=console.print)
            if not sch._apply_concurrency(s, f):
                raise typer.Exit(ExitCode.CONFLICT)  # concurrency: forbid, one still running
            if s.queue:
                _fire_queued(sch, f.id)
            else:
                _fire_here(store, f.id)

    @sched.command("fire", hidden=True)
    def fire_cmd(fire_id: int = typer.Argument(...), db: str = _db_option()) -> None:
        """Run one claimed fire (the scheduler starts these)."""
        from orchestrator.runtime import stop_on_sigterm

        stop_on_sigterm()
        _fire_here(Store(db), fire_id)

    @app.command("scheduler")
    def scheduler_cmd(
        db: str = _db_option(),
        interval: float = typer.Option(30.0, "--interval", help="Most seconds between ticks."),
        once: bool = typer.Option(False, "--once", help="One tick, then exit (for cron/CI)."),
        ray_address: str | None = address_option(),
    ) -> None:
        """The scheduler loop: fires due schedules as `orch schedule fire` processes.

        Run it on the head node (`nohup orch scheduler &`, a systemd unit) or as a Ray job
        (`ray job submit -- orch scheduler`). Restarting it loses and doubles nothing. Fires
        of a schedule with a queue are submitted to the cluster's queue instead, which runs
        them (and each of their trials) when they fit; the scheduler records how they ended.
        """

        store = Store(db)
        sch = Scheduler(store, _runner(store, db, ray_address), log=console.print)
        console.print(f"[bold]orch scheduler[/bold]: {len(store.schedules())} schedule(s) in {db}")
        if once:
            sch.tick()
            return
        try:
            sch.run_forever(interval)
        except KeyboardInterrupt:
            console.print("scheduler stopped; running fires continue in their own processes")


SCHEDULE_KEYS = [
    "id",
    "spec",
    "overrides",
    "cron",
    "next_fire",
    "missed",
    "concurrency",
    "warm_start",
    "promote",
    "address",
    "queue",
    "priority",
    "created",
    "last_fires",
]


def _utc(t: float | None) -> str | None:
    """Seconds since the epoch -> ISO 8601 in UTC, for json and csv."""
    if t is None:
        return None
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat()


def _runner(store: Store, db: str, ray_address: str | None) -> RoutingRunner:
    return RoutingRunner(store, SubprocessRunner(db), QueueRunner(store, ray_address))


def _fire_queued(sch: Scheduler, fire_id: int, every_s: float = 5.0) -> None:
    """Submit a claimed fire to the queue, then wait for the queue to say how it ended."""
    try:
        f = sch._start(sch.store.fire(fire_id), resume=False)
        console.print(
            f"queued sweep {f.sweep_id} (orch queue shows it and its trials); waiting for it",
            highlight=False,
            soft_wrap=True,
        )
        last = None
        while (f := sch.store.fire(fire_id)).status == "running":
            if not sch.runner.alive(f):
                sch.settle(f)  # ended: recorded; lost by the queue: submitted again
                continue
            state = sch.runner.queued.state(f)
            if state != last:
                console.print(f"  {f.sweep_id}: {state}", highlight=False)
                last = state
            time.sleep(every_s)
    except OrchestratorError as exc:
        fail(exc)
    colour = "green" if f.status == "succeeded" else "red"
    console.print(
        f"fire {f.id} ({f.sweep_id}): [{colour}]{f.status}[/{colour}] {f.reason}",
        highlight=False,
        soft_wrap=True,
    )
    if f.status != "succeeded":
        raise typer.Exit(ExitCode.FAILED)


def _fire_here(store: Store, fire_id: int) -> None:

    try:
        summary = run_fire(store, fire_id, log=console.print)
    except OrchestratorError as exc:
        fail(exc)
    if summary is None:
        return
    print_sweep_summary(summary, console)
    if summary.get("promoted"):
        console.print(
            f"[green]promoted[/green] {summary['best_trial']} to champion "
            f"({summary['metric']}={summary['best_metric']})"
        )
    if summary.get("status") != "SUCCEEDED":
        raise typer.Exit(exit_for_status(summary.get("status") or "FAILED"))
