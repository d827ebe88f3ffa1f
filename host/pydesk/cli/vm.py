"""``pydesk vm ...``: start, stop, status, logs, ssh, rm, and ``image build|push|pull``.

Thin by rule: parse, call ``pydesk.vm.lifecycle`` (or the image module), render with rich.
Imports are inside the commands so ``pydesk --help`` stays fast.
What it must never do: hold VM logic, or print a traceback unless ``--debug`` (main.py).
"""

from __future__ import annotations

import re
import sys
from typing import Annotated, Any

import typer

vm_app = typer.Typer(help="The pydesk VM: a small Linux VM under QEMU running the engine.",
                     no_args_is_help=True)
image_app = typer.Typer(help="The guest image: build it, push it to or pull it from a registry.",
                        no_args_is_help=True)
vm_app.add_typer(image_app, name="image")

NameOption = Annotated[str, typer.Option("--name", "-n", help="The VM instance's name.")]
SIZE_RE = re.compile(r"(\d+)\s*([KMGT]i?B?|[kmgt])?\Z", re.IGNORECASE)
UNITS = {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}


def size_mib(text: str, default_unit: str) -> int:
    """'2048' (in ``default_unit``), '2G', '512MiB', '64g' -> MiB."""
    match = SIZE_RE.match(text.strip())
    if not match:
        raise typer.BadParameter(f"not a size: {text!r} (e.g. 2048M, 4G)")
    unit = (match.group(2) or default_unit)[0].lower()
    return int(int(match.group(1)) * UNITS[unit])


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


@vm_app.command()
def start(  # noqa: PLR0917 (typer: one parameter per option)
    name: NameOption = "default",
    cpus: Annotated[int | None, typer.Option(help="Virtual CPUs (default 2).")] = None,
    memory: Annotated[str | None, typer.Option(help="Memory, e.g. 2G or 2048 (MiB).")] = None,
    disk_size: Annotated[str | None, typer.Option(
        help="Data disk size, e.g. 64G (grown if larger; never shrunk).")] = None,
    accel: Annotated[str | None, typer.Option(
        help="auto|kvm|hvf|whpx|tcg (default: auto, probed with a timeout).")] = None,
    daemon_json: Annotated[str | None, typer.Option(
        help="The guest daemon's daemon.json, as JSON text.")] = None,
) -> None:
    """Start the VM (idempotent): build or find the image, probe the accelerator, boot."""
    import json

    from pydesk.vm.lifecycle import StartOptions
    from pydesk.vm.lifecycle import start as start_vm

    if daemon_json is not None:
        try:
            json.loads(daemon_json)
        except ValueError as e:
            raise typer.BadParameter(f"--daemon-json is not JSON: {e}") from e
    options = StartOptions(
        name=name, cpus=cpus, memory_mib=size_mib(memory, "m") if memory else None,
        disk_gib=max(1, size_mib(disk_size, "g") // 1024) if disk_size else None,
        accel=accel, daemon_json=daemon_json)
    console = _console()
    with console.status(f"starting VM {name}...") as spinner:
        def progress(message: str) -> None:
            console.print(f"  {message}")
            spinner.update(message)

        def on_event(event: Any) -> None:
            line = f"  [{event.state}] {event.message}"
            shown = event.error not in ("", event.message)
            console.print(line + (f" ({event.error})" if shown else ""))

        event = start_vm(options, progress, on_event)
    console.print(f"[green]VM {name} is running[/green]: {event.message}")


@vm_app.command()
def stop(
    name: NameOption = "default",
    timeout: Annotated[float | None, typer.Option(
        help="Seconds the guest gets to power off before QEMU quits (default 30).")] = None,
) -> None:
    """Power the VM off (ACPI; QEMU quits after the timeout; the data disk is flushed)."""
    from pydesk.vm.lifecycle import stop as stop_vm

    console = _console()
    with console.status(f"stopping VM {name}..."):
        result = stop_vm(name, timeout=timeout,
                         on_event=lambda e: console.print(f"  [{e.state}] {e.message}"))
    console.print(f"VM {name}: {result}")


@vm_app.command()
def status(
    name: NameOption = "default",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """Show the VM's state (running, stopped...), accelerator and last message."""
    from pydesk.vm.lifecycle import status as vm_status

    current = vm_status(name)
    if as_json:
        import json

        typer.echo(json.dumps(current.to_json()))
        return
    typer.echo(f"{current.name}: {current.state}  {current.message}")
    if current.error:
        typer.echo(f"  error: {current.error}")
    if current.accel:
        typer.echo(f"  accelerator: {current.accel} ({current.accel_reason})")
    if current.ssh_port:
        typer.echo(f"  ssh: 127.0.0.1:{current.ssh_port} (pydesk vm ssh)")
    if current.since:
        typer.echo(f"  since: {current.since}")


@vm_app.command()
def logs(
    name: NameOption = "default",
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines.")]
    = False,
    agent: Annotated[bool, typer.Option("--agent", help="The host agent's log and QEMU's "
                                                       "messages instead of the console.")]
    = False,
) -> None:
    """Print the guest's serial console (or, with --agent, the agent's log)."""
    import time

    from pydesk.vm.instance import instance_files

    files = instance_files(name)
    paths = [files.agent_log, files.qemu_log] if agent else [files.console_log]
    out = sys.stdout.buffer
    offsets = {}
    for path in paths:
        data = path.read_bytes() if path.exists() else b""
        if len(paths) > 1:
            out.write(f"==> {path.name} <==\n".encode())
        out.write(data)
        offsets[path] = len(data)
    out.flush()
    while follow:
        time.sleep(0.3)
        for path in paths:
            try:
                with path.open("rb") as f:
                    if path.stat().st_size < offsets[path]:
                        offsets[path] = 0  # a new boot truncated the console
                    f.seek(offsets[path])
                    data = f.read()
            except FileNotFoundError:
                continue
            offsets[path] += len(data)
            out.write(data)
        out.flush()


@vm_app.command(context_settings={"allow_interspersed_args": False})
def ssh(
    command: Annotated[list[str] | None, typer.Argument(help="Command to run (after --).")]
    = None,
    name: NameOption = "default",
    tty: Annotated[bool | None, typer.Option("--tty/--no-tty", "-t",
                                             help="Allocate a pty (default: for a shell).")]
    = None,
) -> None:
    """Open a shell in the VM, or run a command there (`pydesk vm ssh -- uname -a`)."""
    import shlex

    from pydesk.vm.lifecycle import connect
    from pydesk.vm.terminal import interactive, run_command

    with connect(name) as channel:
        line = shlex.join(command) if command else None
        use_pty = tty if tty is not None else line is None
        if use_pty:
            code = interactive(channel, line)
        else:
            assert line is not None
            code = run_command(channel, line, sys.stdout.buffer, sys.stderr.buffer)
    raise typer.Exit(code)


@vm_app.command()
def rm(
    name: NameOption = "default",
    force: Annotated[bool, typer.Option("--force", "-f", help="Kill it if it runs.")] = False,
) -> None:
    """Delete the VM instance and its data disk."""
    from pydesk.vm.lifecycle import remove

    remove(name, force=force)
    typer.echo(f"VM {name} removed")


ARCH_HELP = ("Guest architecture, Debian's name: amd64 or arm64 (Apple Silicon). Default: "
             "this machine's. A foreign one is built through qemu-user-static.")


@image_app.command("build")
def image_build(
    arch: Annotated[str | None, typer.Option("--arch", help=ARCH_HELP)] = None,
) -> None:
    """Build the guest image from Debian packages (cached by the recipe's hash; needs root)."""
    from pydesk.vm.image import ensure_image

    console = _console()
    directory = ensure_image(lambda m: console.print(f"  {m}"), arch=arch)
    typer.echo(str(directory))


@image_app.command("push")
def image_push(
    ref: Annotated[str, typer.Argument(help="Registry reference, e.g. reg:5000/pydesk/vm:1.")],
    insecure: Annotated[bool, typer.Option(help="Plain HTTP (a local registry).")] = False,
    arch: Annotated[str | None, typer.Option("--arch", help=ARCH_HELP)] = None,
) -> None:
    """Push the guest image (built if needed) as an OCI artifact."""
    from pydesk.vm.image import ensure_image
    from pydesk.vm.imageregistry import push_image

    console = _console()
    directory = ensure_image(lambda m: console.print(f"  {m}"), arch=arch)
    digest = push_image(directory, ref, insecure=insecure,
                        progress=lambda m: console.print(f"  {m}"))
    typer.echo(f"{ref}@{digest}")


@image_app.command("pull")
def image_pull(
    ref: Annotated[str, typer.Argument(help="Registry reference of a pushed guest image.")],
    insecure: Annotated[bool, typer.Option(help="Plain HTTP (a local registry).")] = False,
) -> None:
    """Pull a guest image into the cache (verified by digest)."""
    from pydesk.vm.imageregistry import pull_image

    console = _console()
    directory = pull_image(ref, insecure=insecure, progress=lambda m: console.print(f"  {m}"))
    typer.echo(str(directory))
