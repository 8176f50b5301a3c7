"""`orch submit | logs | status | stop | list`: jobs on a Ray cluster through the Jobs API
(orchestrator/cluster/jobs.py)."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from orchestrator.cli.console import console, fail
from orchestrator.cli.output import Format, emit, format_option, json_alias_option, resolve
from orchestrator.cluster.jobs import (
    DEFAULT_ADDRESS,
    DEFAULT_MAX_UPLOAD_MB,
    JobsInputError,
    entrypoint_options,
    follow_logs,
    get_info,
    info_dict,
    make_client,
    normalise_address,
    parse_json_option,
    stop,
    submit,
    translate_errors,
)
from orchestrator.errors import OrchestratorError, exit_for_status

JOB_KEYS = [
    "submission_id",
    "status",
    "entrypoint",
    "message",
    "start_time",
    "end_time",
    "driver_exit_code",
    "spec",
    "spec_hash",
    "metadata",
]


def register(app) -> None:

    address_opt = typer.Option(
        None,
        "--address",
        envvar="RAY_API_SERVER_ADDRESS",
        help=f"The head's Jobs API (dashboard) address; default {DEFAULT_ADDRESS} (a tunnel).",
    )

    @app.command("submit")
    def submit_cmd(
        spec: str = typer.Argument(..., help="Path to a job spec YAML, inside the working dir."),
        overrides: list[str] | None = typer.Argument(
            None, help="Dotted overrides, e.g. train.lr=3e-4"
        ),
        address: str | None = address_opt,
        submission_id: str | None = typer.Option(
            None,
            "--submission-id",
            help="Names the job; resubmitting the same spec with it is a no-op.",
        ),
        name: str | None = typer.Option(
            None, "--name", help="Run name on the cluster (orch run --name)."
        ),
        working_dir: str = typer.Option(
            ".", "--working-dir", help="Uploaded as the job's working_dir."
        ),
        exclude: list[str] | None = typer.Option(
            None, "--exclude", help="More gitignore-style excludes (repeatable)."
        ),
        max_upload_mb: float = typer.Option(
            DEFAULT_MAX_UPLOAD_MB, "--max-upload-mb", help="Refuse to upload more than this."
        ),
        follow: bool = typer.Option(
            False, "--follow", "-f", help="Then stream the logs to the end."
        ),
        queue: str | None = typer.Option(
            None,
            "--queue",
            help="Through the cluster's queue (orch queue): it starts when all its workers fit, "
            "in priority order. Also the spec's queue.name; default: straight to the Jobs API.",
        ),
        priority: int | None = typer.Option(
            None, "--priority", help="Queue priority >= 0, higher first (spec: queue.priority)."
        ),
        preemptible: bool | None = typer.Option(
            None,
            "--preemptible/--no-preemptible",
            help="May a higher-priority job stop it (it resumes later)? (spec: queue.preemptible)",
        ),
        retries: int | None = typer.Option(
            None, "--retries", help="Run a failed job again up to N times (spec: queue.retries)."
        ),
        ray_address: str | None = typer.Option(
            None, "--ray-address", help="With --queue: the cluster's GCS address (see orch queue)."
        ),
        hold: bool = typer.Option(
            False, "--hold", help="With --queue: queued but held until `orch queue release ID`."
        ),
        sweep: bool = typer.Option(
            False,
            "--sweep",
            help="Run the spec's sweep (orch sweep) instead of one run. Through the queue, "
            "each trial waits there for its own workers (docs/queue.md).",
        ),
        runtime_env_json: str | None = typer.Option(
            None,
            "--runtime-env-json",
            help="JSON-serialized runtime_env dictionary (as `ray job submit`), merged with "
            "orch's: working_dir is --working-dir's (not allowed in the JSON); excludes are "
            "added to orch's and --exclude; env_vars are added to orch's PYTHONUNBUFFERED=1 "
            "(yours win); pip, conda, py_modules, ... pass through.",
        ),
        entrypoint_num_cpus: float | None = typer.Option(
            None,
            "--entrypoint-num-cpus",
            help="CPUs to reserve for the entrypoint (the `orch run` driver), separately from "
            "the training workers it starts (Ray's default: 0).",
        ),
        entrypoint_num_gpus: float | None = typer.Option(
            None,
            "--entrypoint-num-gpus",
            help="GPUs to reserve for the entrypoint, separately from its workers (default 0).",
        ),
        entrypoint_memory: int | None = typer.Option(
            None,
            "--entrypoint-memory",
            help="Memory (bytes) to reserve for the entrypoint, separately from its workers.",
        ),
        entrypoint_resources: str | None = typer.Option(
            None,
            "--entrypoint-resources",
            help="JSON object of custom resources to reserve for the entrypoint, e.g. "
            "'{\"head\": 0.01}' to pin the driver to a node that has that resource.",
        ),
    ) -> None:
        """Submit `orch run SPEC` (or with --sweep `orch sweep SPEC`) to a Ray cluster through
        the Jobs API, or into its queue.

        The spec is validated here first. Same --submission-id and same spec: the existing job
        (nothing submitted); same id, other spec: refused. With --queue (or a queue: section in
        the spec), the job waits in the cluster's queue until it fits (orch queue shows why).
        """
        import logging

        import ray.job_submission  # noqa: F401 - Ray sets up its loggers on import; then quiet them

        # Ray logs every .gitignore it honours and its default excludes while packing; orch
        # prints what was uploaded itself.
        for noisy in (
            "ray._private.runtime_env.packaging",
            "ray._private.runtime_env.working_dir",
            "ray.dashboard.modules.dashboard_sdk",
        ):
            logging.getLogger(noisy).setLevel(logging.ERROR)
        try:
            user_env = parse_json_option("--runtime-env-json", runtime_env_json)
            entry = entrypoint_options(
                entrypoint_num_cpus,
                entrypoint_num_gpus,
                entrypoint_memory,
                parse_json_option("--entrypoint-resources", entrypoint_resources),
            )
        except OrchestratorError as exc:
            fail(exc)
        queued = hold or any(x is not None for x in (queue, priority, preemptible, retries))
        if not queued:
            try:
                from orchestrator.spec import load_spec

                # The extras the spec needs are checked where it runs (the cluster's orch run).
                spec_ = load_spec(spec, overrides or [], check_extras=False)
                queued = "queue" in spec_.model_fields_set
            except OrchestratorError as exc:
                fail(exc)
        if queued and (user_env or entry):
            given = ["--runtime-env-json"] if user_env else []
            given += ["--" + k.replace("_", "-") for k in entry]
            fail(
                JobsInputError(
                    f"{', '.join(given)}: not with the queue (--queue, a queue: section): the "
                    "queue starts its jobs with its own settings; submit without the queue"
                )
            )
        if queued:
            _submit_queued(
                spec,
                overrides or [],
                working_dir,
                exclude or [],
                max_upload_mb,
                queue,
                priority,
                preemptible,
                retries,
                submission_id,
                name,
                ray_address,
                hold,
                sweep,
            )
            return
        try:
            sub = submit(
                spec,
                overrides or [],
                address,
                submission_id,
                working_dir,
                name,
                exclude or [],
                max_upload_mb,
                runtime_env=user_env,
                entrypoint=entry,
                sweep=sweep,
            )
        except OrchestratorError as exc:
            fail(exc)
        addr = normalise_address(address)
        if sub.reused:
            console.print(
                f"job [bold]{sub.submission_id}[/bold] was already submitted with this "
                f"spec ({sub.status}); not submitting again",
                highlight=False,
                soft_wrap=True,
            )
        else:
            console.print(
                f"submitted [bold]{sub.submission_id}[/bold] to {addr} "
                f"({sub.upload_mb:.2f} MiB uploaded): {sub.entrypoint}",
                highlight=False,
                soft_wrap=True,
            )
        console.print(
            f"  orch logs {sub.submission_id} --follow --address {addr}",
            highlight=False,
            soft_wrap=True,
        )
        if follow:
            _logs(sub.submission_id, address, True)

    def _submit_queued(*args) -> None:
        from orchestrator.cli.queue import submit_queued

        try:
            out = submit_queued(*args)
        except OrchestratorError as exc:
            fail(exc)
        job = out["job"]
        if out["reused"]:
            console.print(
                f"job [bold]{job['id']}[/bold] is already in the queue with this spec "
                f"({job['state']}); not submitting again",
                highlight=False,
                soft_wrap=True,
            )
        else:
            console.print(
                ("held" if job["state"] == "HELD" else "queued")
                + f" [bold]{job['id']}[/bold] in '{job['queue']}' at priority "
                f"{job['priority']}: "
                + (
                    "a sweep: each of its trials queues for its own workers"
                    if job.get("kind") == "sweep"
                    else f"{job['workers']} worker(s) x "
                    + ", ".join(f"{k} {v:g}" for k, v in job["per_worker"].items())
                ),
                highlight=False,
                soft_wrap=True,
            )
        console.print(
            f"  orch queue        (position, and why it waits)\n  orch logs {job['id']} --follow",
            highlight=False,
            soft_wrap=True,
        )

    def _logs(job: str, address: str | None, follow: bool) -> None:
        import logging

        addr = normalise_address(address)
        try:
            client = make_client(addr)
            logging.getLogger("ray.dashboard.modules.job.sdk").setLevel(logging.WARNING)
            if follow:
                status = follow_logs(
                    client, addr, job, write=lambda s: print(s, end="", flush=True)
                )
                colour = "green" if status == "SUCCEEDED" else "red"
                console.print(
                    f"job {job}: [{colour}]{status}[/{colour}]", highlight=False, soft_wrap=True
                )
                if status != "SUCCEEDED":
                    raise typer.Exit(exit_for_status(status))
                return
            sent = bool(client._headers.get("Authorization"))
            get_info(client, addr, job, sent)
            with translate_errors(addr, sent, job=job):
                print(client.get_job_logs(job), end="")
        except OrchestratorError as exc:
            fail(exc)

    @app.command("logs")
    def logs_cmd(
        job: str = typer.Argument(..., help="Submission id (see orch list)."),
        address: str | None = address_opt,
        follow: bool = typer.Option(False, "--follow", "-f", help="Stream until the job ends."),
    ) -> None:
        """Print a job's logs; with --follow, stream them to the last line (exit 1 unless
        SUCCEEDED)."""
        _logs(job, address, follow)

    @app.command("status")
    def status_cmd(
        job: str = typer.Argument(..., help="Submission id."),
        address: str | None = address_opt,
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """Show a job's status, entrypoint, spec and times."""
        addr = normalise_address(address)
        try:
            client = make_client(addr)
            d = info_dict(get_info(client, addr, job, bool(client._headers)))
        except OrchestratorError as exc:
            fail(exc)
        if as_json:
            print(json.dumps(d, indent=2, default=str))
            return
        table = Table(title=f"job {job}", show_header=False)
        table.add_column("key", style="bold")
        table.add_column("value")
        for k in (
            "status",
            "spec",
            "spec_hash",
            "entrypoint",
            "start_time",
            "end_time",
            "driver_exit_code",
            "message",
        ):
            if d.get(k) not in (None, ""):
                table.add_row(k, str(d[k]))
        console.print(table)

    @app.command("stop")
    def stop_cmd(
        job: str = typer.Argument(..., help="Submission id."),
        address: str | None = address_opt,
        wait: float = typer.Option(
            30.0, "--wait", help="Seconds to wait for it to end (0: don't)."
        ),
    ) -> None:
        """Stop a job. Stopping one that has already ended is harmless (exit 0)."""
        addr = normalise_address(address)
        try:
            requested, status = stop(make_client(addr), addr, job, wait_s=wait)
        except OrchestratorError as exc:
            fail(exc)
        if requested:
            console.print(
                f"stop requested for {job}: now {status}", highlight=False, soft_wrap=True
            )
        else:
            console.print(
                f"{job} has already ended ({status}); nothing to stop",
                highlight=False,
                soft_wrap=True,
            )

    @app.command("list")
    def list_cmd(
        address: str | None = address_opt,
        fmt: Format = format_option(),
        as_json: bool = json_alias_option(),
    ) -> None:
        """List the cluster's jobs, oldest first.

        json and csv: submission_id, status, entrypoint, message, start_time, end_time,
        driver_exit_code, spec, spec_hash, metadata (csv: metadata as JSON).
        """
        fmt = resolve(fmt, as_json)
        addr = normalise_address(address)
        try:
            client = make_client(addr)
            with translate_errors(addr, bool(client._headers)):
                jobs = [info_dict(j) for j in client.list_jobs()]
        except OrchestratorError as exc:
            fail(exc)
        jobs.sort(key=lambda d: d["start_time"] or "")

        def table() -> Table:
            t = Table(title=f"jobs on {addr}")
            # On a terminal, the entrypoint only where there is room (orch status JOB shows
            # it whole); in a pipe or a log, every column.
            cols = ["submission id", "status", "spec", "start", "end"]
            wide = not console.is_terminal or console.width >= 140
            cols += ["entrypoint"] if wide else []
            for col in cols:
                t.add_column(col, no_wrap=col in ("submission id", "status"), overflow="fold")
            for d in jobs:
                row = [
                    d["submission_id"] or "-",
                    d["status"],
                    d["spec"] or "-",
                    d["start_time"],
                    d["end_time"],
                ]
                t.add_row(*row, *([d["entrypoint"]] if wide else []))
            return t

        emit(fmt, jobs, table, keys=JOB_KEYS, empty=f"no jobs on {addr}")
