"""`orch queue` (the table: position, priority, resources, state and why each job waits) and
`orch queue cancel | hold | release | bump | show | create | delete | queues | info`; the
queued path of `orch submit --queue` (orchestrator/queue/)."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import typer
from rich.table import Table

from orchestrator.cli.console import console, fail
from orchestrator.cli.output import (
    Format,
    emit,
    format_option,
    json_alias_option,
    print_table,
    resolve,
)
from orchestrator.errors import OrchestratorError

ADDRESS_HELP = (
    "The Ray cluster the queue lives on: its GCS address HOST:PORT, ray://HOST:10001, or auto "
    "(env ORCH_QUEUE_ADDRESS; default: RAY_ADDRESS unless it is an http:// address, else auto)."
)


def address_option():
    return typer.Option(None, "--ray-address", help=ADDRESS_HELP)


def parse_duration(text: str) -> float:
    """'90s', '30m', '12h', '7d' or seconds -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text or "")
    if not m:
        raise typer.BadParameter(f"{text!r}: expected a duration like 90s, 30m, 12h or 7d")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def _service(address: str | None, create: bool = True):
    from orchestrator.queue import client

    client.connect(address)
    return client.handle(create=create)


def _call(address: str | None, method: str, *args: Any, create: bool = True, **kw: Any) -> Any:
    from orchestrator.queue import client

    try:
        return client.call(_service(address, create), method, *args, **kw)
    except OrchestratorError as exc:
        fail(exc)


def _res(job: dict[str, Any]) -> str:
    from orchestrator.queue.policy import fmt_res

    if job.get("kind") == "sweep":  # holds nothing itself: its trials are rows of their own
        return "sweep (trials below)"
    return f"{job['workers']} x {fmt_res(job['per_worker'])}"


def _ago(t: float | None) -> str:
    if not t:
        return "-"
    s = max(0, time.time() - t)
    return f"{s:.0f}s" if s < 120 else (f"{s / 60:.0f}m" if s < 7200 else f"{s / 3600:.1f}h")


def submit_queued(
    spec: str,
    overrides: list[str],
    working_dir: str,
    excludes: list[str],
    max_upload_mb: float,
    queue: str | None,
    priority: int | None,
    preemptible: bool | None,
    retries: int | None,
    submission_id: str | None,
    name: str | None,
    address: str | None,
    hold: bool = False,
    sweep: bool = False,
) -> dict[str, Any]:
    """`orch submit --queue`: validate, pack the working dir, hand the job to the queue."""
    from orchestrator.queue import client

    job, wd, excl = client.queued_job(
        spec,
        overrides,
        working_dir,
        excludes,
        max_upload_mb,
        queue,
        priority,
        preemptible,
        retries,
        submission_id,
        name,
        sweep=sweep,
    )
    if hold:
        job["state"] = "HELD"
    client.connect(address)
    actor = client.handle()
    uri, data = client.pack_working_dir(wd, excl)
    return client.call(actor, "enqueue", job, uri, data)


def register(app) -> None:
    q = typer.Typer(
        help="The cluster's job queue: priorities, quotas, preemption, and why a job waits. "
        "Jobs enter with `orch submit SPEC --queue NAME --priority N`.",
        invoke_without_command=True,
    )
    app.add_typer(q, name="queue")

    @q.callback()
    def queue_table(
        ctx: typer.Context,
        address: str | None = address_option(),
        all_jobs: bool = typer.Option(False, "--all", help="Ended jobs too."),
        fmt: Format = format_option(),
        as_json: bool = json_alias_option(),
    ) -> None:
        """The queue: waiting jobs in the order they will start, with why each waits, then the
        running ones. json and csv hold every field of each job (csv: nested ones as JSON)."""
        if ctx.invoked_subcommand is not None:
            ctx.obj = {"address": address}
            return
        fmt = resolve(fmt, as_json)
        jobs = _call(address, "jobs", all_jobs)
        waiting = sorted(
            (j for j in jobs if j["state"] in ("QUEUED", "HELD")),
            key=lambda j: (j["position"] or 10**9, j["seq"]),
        )
        running = [j for j in jobs if j["state"] not in ("QUEUED", "HELD")]
        rows = waiting + running
        if fmt is not Format.table:
            emit(fmt, rows, None)
            return
        if not rows:
            console.print("the queue is empty" + ("" if all_jobs else " (--all: ended jobs too)"))
            return
        table = Table(title="orch queue")
        for col in ("#", "job", "queue", "prio", "resources", "state", "age", "why / message"):
            table.add_column(col, overflow="fold", no_wrap=col in ("#", "prio", "state"))
        for j in rows:
            state = j["state"]
            colour = {"RUNNING": "green", "FAILED": "red", "PREEMPTING": "yellow"}.get(state)
            note = j["why"] if state in ("QUEUED", "HELD") else j["message"]
            extra = []
            if j["preemptions"]:
                extra.append(f"preempted x{j['preemptions']}")
            if j["failures"]:
                extra.append(f"failed x{j['failures']}/{j['retries'] + 1}")
            table.add_row(
                str(j["position"]) if state in ("QUEUED", "HELD") and j["position"] else "",
                j["id"],
                j["queue"],
                str(j["priority"]),
                _res(j),
                f"[{colour}]{state}[/{colour}]" if colour else state,
                _ago(j["started_at"] if state not in ("QUEUED", "HELD") else j["submitted_at"]),
                "; ".join([x for x in [note] if x] + extra),
            )
        print_table(table)

    def _addr(ctx: typer.Context) -> str | None:
        return (ctx.obj or {}).get("address")

    @q.command("cancel")
    def cancel_cmd(
        ctx: typer.Context, jobs: list[str] = typer.Argument(..., help="Job ids.")
    ) -> None:
        """Cancel jobs: a waiting one leaves the queue, a running one is stopped."""
        for job in jobs:
            console.print(f"{job}: {_call(_addr(ctx), 'cancel', job)}", highlight=False)

    @q.command("hold")
    def hold_cmd(
        ctx: typer.Context, jobs: list[str] = typer.Argument(..., help="Job ids.")
    ) -> None:
        """Keep waiting jobs from starting until `orch queue release`."""
        for job in jobs:
            console.print(f"{job}: {_call(_addr(ctx), 'hold', job)}", highlight=False)

    @q.command("release")
    def release_cmd(
        ctx: typer.Context, jobs: list[str] = typer.Argument(..., help="Job ids.")
    ) -> None:
        """Let held jobs start again, in their old places."""
        for job in jobs:
            console.print(f"{job}: {_call(_addr(ctx), 'release', job)}", highlight=False)

    @q.command("bump")
    def bump_cmd(
        ctx: typer.Context,
        job: str = typer.Argument(..., help="Job id."),
        priority: int = typer.Argument(..., help="The new priority (>= 0; higher first)."),
    ) -> None:
        """Change a job's priority (a waiting job moves; a running one is judged by it when a
        job of higher priority wants its place)."""
        console.print(
            f"{job}: priority {_call(_addr(ctx), 'bump', job, priority)}", highlight=False
        )

    @q.command("show")
    def show_cmd(
        ctx: typer.Context,
        job: str = typer.Argument(..., help="Job id."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """One job: its settings, every attempt (with where its log was kept)."""
        row = _call(_addr(ctx), "job", job)
        row.pop("runtime_env", None)
        if as_json:
            print(json.dumps(row, indent=2, default=str))
            return
        table = Table(title=f"queued job {job}", show_header=False)
        table.add_column("key", style="bold")
        table.add_column("value", overflow="fold")
        for k in (
            "state",
            "queue",
            "priority",
            "preemptible",
            "retries",
            "failures",
            "preemptions",
            "spec",
            "run_name",
            "entrypoint",
            "why",
            "message",
        ):
            if row.get(k) not in (None, ""):
                table.add_row(k, str(row[k]))
        table.add_row("resources", _res(row))
        for a in row["attempts"]:
            took = (a["ended_at"] or time.time()) - a["started_at"]
            table.add_row(
                f"attempt {a['attempt']}", f"{a['status']} after {took:.0f}s  {a['log'] or ''}"
            )
        console.print(table)

    @q.command("create")
    def create_cmd(
        ctx: typer.Context,
        name: str = typer.Argument(..., help="Queue name."),
        cpus: float | None = typer.Option(None, "--cpus", help="CPUs its running jobs may hold."),
        gpus: float | None = typer.Option(None, "--gpus", help="GPUs its running jobs may hold."),
        gpu_hours: float | None = typer.Option(
            None, "--gpu-hours-per-day", help="GPU-hours it may use in any 24 hours."
        ),
        ttl: str | None = typer.Option(
            None, "--ttl", help="Keep ended jobs' records and logs this long (e.g. 7d, 12h)."
        ),
    ) -> None:
        """Create a queue, or change its quota (-1 lifts a limit). The queue `default` always
        exists, without quota."""
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
            fail(_input_error(f"queue name {name!r}: expected letters, digits, '.', '_', '-'"))
        ttl_s = parse_duration(ttl) if ttl else None
        row = _call(
            _addr(ctx),
            "set_queue",
            name,
            cpus=cpus,
            gpus=gpus,
            gpu_hours_per_day=gpu_hours,
            ttl_s=ttl_s,
        )
        console.print(f"queue {name}: {_limits(row)}", highlight=False)

    @q.command("delete")
    def delete_cmd(ctx: typer.Context, name: str = typer.Argument(..., help="Queue name.")) -> None:
        """Delete an empty queue."""
        _call(_addr(ctx), "delete_queue", name)
        console.print(f"queue {name} deleted", highlight=False)

    @q.command("queues")
    def queues_cmd(
        ctx: typer.Context,
        fmt: Format = format_option(),
        as_json: bool = json_alias_option(),
    ) -> None:
        """The queues, their quotas and what they use now (json/csv: every field)."""
        rows = _call(_addr(ctx), "queues")

        def table() -> Table:
            t = Table(title="queues")
            for col in ("queue", "CPUs", "GPUs", "GPU-hours (24 h)", "keep ended"):
                t.add_column(col)
            for r in rows:
                t.add_row(
                    r["name"],
                    _of(r["cpus_in_use"], r["cpus"]),
                    _of(r["gpus_in_use"], r["gpus"]),
                    _of(r["gpu_hours_24h"], r["gpu_hours_per_day"], "{:.2f}"),
                    f"{r['ttl_s'] / 86400:g}d" if r["ttl_s"] >= 86400 else f"{r['ttl_s']:g}s",
                )
            return t

        emit(resolve(fmt, as_json), rows, table)

    @q.command("info")
    def info_cmd(ctx: typer.Context) -> None:
        """Where the queue service runs: its process, state file and last error."""
        import ray

        actor = _service(_addr(ctx), create=True)
        print(json.dumps(ray.get(actor.info.remote()), indent=2))


def _input_error(text: str) -> OrchestratorError:
    from orchestrator.queue.client import QueueInputError

    return QueueInputError(text)


def _of(used: float, cap: float | None, fmt: str = "{:g}") -> str:
    return fmt.format(used) + (" of " + fmt.format(cap) if cap is not None else " (no limit)")


def _limits(row: dict[str, Any]) -> str:
    parts = [
        f"{label} {row[k]:g}" if row.get(k) is not None else f"{label} unlimited"
        for k, label in (("cpus", "CPUs"), ("gpus", "GPUs"), ("gpu_hours_per_day", "GPU-h/day"))
    ]
    return ", ".join(parts) + f"; ended jobs kept {row['ttl_s']:g}s"
