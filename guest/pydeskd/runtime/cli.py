"""``pydesk-runc``: runc's command line over :mod:`pydeskd.runtime.container` and friends.

A small hand-written parser (argparse costs more start-up than a whole ``state`` call) that
accepts runc's spelling: global options before the command, ``--opt value``, ``--opt=value``,
``-o value``, single-dash long options as Go's flag package does, and options ending at the
first positional argument for ``exec``. Errors are one line on stderr (and an "error" entry in
``--log``), exit status 1; a traceback only with ``--debug``. Thin: parses, calls, prints.
"""

from __future__ import annotations

import os
import sys

# typing costs start-up time on every call; annotations only need it for mypy.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

VERSION = "0.1.0"
SPEC_VERSION = "1.0.2"
NO_USERNS = ("User namespaces (linux.uidMappings/gidMappings and a \"user\" namespace) are not "
             "supported yet: such a config is rejected.")

# option name -> (short name or "", takes a value, may repeat)
Options = dict[str, tuple[str, bool, bool]]

GLOBAL_OPTIONS: Options = {
    "root": ("", True, False), "log": ("", True, False), "log-format": ("", True, False),
    "debug": ("", False, False), "systemd-cgroup": ("", False, False),
    "criu": ("", True, False), "rootless": ("", True, False),
    "help": ("h", False, False), "version": ("v", False, False),
}
CREATE_OPTIONS: Options = {
    "bundle": ("b", True, False), "pid-file": ("", True, False),
    "console-socket": ("", True, False), "no-pivot": ("", False, False),
    "no-new-keyring": ("", False, False), "preserve-fds": ("", True, False),
    "help": ("h", False, False),
}
HELP_ONLY: Options = {"help": ("h", False, False)}

COMMANDS: dict[str, tuple[Options, str, str]] = {
    "create": (CREATE_OPTIONS, "[options] <container-id>",
               "Create a container from the bundle (default: the current directory). Its init\n"
               "waits until `start`. Options: --bundle/-b DIR, --pid-file FILE,\n"
               "--console-socket PATH (receives the pty master when process.terminal is true),\n"
               "--no-pivot (MS_MOVE + chroot instead of pivot_root), --preserve-fds N\n"
               "(pass fds 3..3+N-1 on to the container)."),
    "start": (HELP_ONLY, "<container-id>", "Start the user process of a created container."),
    "run": ({**CREATE_OPTIONS, "detach": ("d", False, False), "keep": ("", False, False)},
            "[options] <container-id>",
            "Create and start a container, wait for it, delete it, and exit with its status\n"
            "(128+n when killed by signal n). --detach/-d returns once it runs. A terminal\n"
            "container without --console-socket gets its pty relayed to our stdin/stdout.\n"
            "Options as for create, plus --detach/-d."),
    "state": (HELP_ONLY, "<container-id>", "Print the runtime-spec state of a container (JSON)."),
    "kill": ({"all": ("a", False, False), "help": ("h", False, False)},
             "[--all] <container-id> [signal]",
             "Send a signal (name or number, default SIGTERM) to the container's init;\n"
             "--all/-a signals every process in its cgroup."),
    "delete": ({"force": ("f", False, False), "help": ("h", False, False)},
               "[--force] <container-id>",
               "Delete a stopped or created container (its cgroup, state and poststop hooks).\n"
               "--force/-f kills a running one first."),
    "exec": ({"process": ("p", True, False), "detach": ("d", False, False),
              "pid-file": ("", True, False), "tty": ("t", False, False),
              "console-socket": ("", True, False), "cwd": ("", True, False),
              "env": ("e", True, True), "user": ("u", True, False),
              "additional-gids": ("g", True, True), "cap": ("c", True, True),
              "no-new-privs": ("", False, False), "preserve-fds": ("", True, False),
              "process-label": ("", True, False), "apparmor": ("", True, False),
              "ignore-paused": ("", False, False), "cgroup": ("", True, True),
              "help": ("h", False, False)},
             "[options] <container-id> [command [args...]]",
             "Run a new process in a running container: --process/-p FILE (a runtime-spec\n"
             "process JSON) or the trailing command. --detach/-d, --pid-file FILE,\n"
             "--tty/-t with --console-socket PATH, --cwd DIR, --env/-e NAME=VALUE (repeat),\n"
             "--user/-u UID[:GID], --additional-gids/-g GID (repeat), --cap/-c CAP (repeat),\n"
             "--no-new-privs."),
    "pause": (HELP_ONLY, "<container-id>", "Freeze every process of a container (its cgroup)."),
    "resume": (HELP_ONLY, "<container-id>", "Thaw a paused container."),
    "list": ({"format": ("f", True, False), "quiet": ("q", False, False),
              "help": ("h", False, False)},
             "[--format table|json] [--quiet]", "List the containers under --root."),
    "ps": ({"format": ("f", True, False), "help": ("h", False, False)},
           "[--format table|json] <container-id> [ps options]",
           "List the processes of a container (pids in json format, `ps -ef` rows in table)."),
}


class UsageError(Exception):
    """A command-line mistake: printed with a hint at --help, exit status 1."""


def parse(args: list[str], options: Options, stop_at_positional: bool
          ) -> tuple[dict[str, Any], list[str]]:
    """(option values, positionals). Repeating options collect lists."""
    shorts = {s: name for name, (s, _, _) in options.items() if s}
    values: dict[str, Any] = {}
    positionals: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            positionals.extend(args[i:])
            break
        if not arg.startswith("-") or arg == "-":
            positionals.append(arg)
            if stop_at_positional:
                positionals.extend(args[i:])
                break
            continue
        name, eq, inline = arg.lstrip("-").partition("=")
        name = shorts.get(name, name)
        if name not in options:
            raise UsageError(f"flag provided but not defined: {arg.split('=')[0]}")
        _, takes_value, repeats = options[name]
        if takes_value:
            if not eq:
                if i >= len(args):
                    raise UsageError(f"flag needs an argument: {arg}")
                inline = args[i]
                i += 1
            value: Any = inline
        else:
            value = inline.lower() not in ("false", "0") if eq else True
        if repeats:
            values.setdefault(name, []).append(value)
        else:
            values[name] = value
    return values, positionals


def usage() -> str:
    names = "\n".join(f"   {name:8} {text.splitlines()[0]}"
                      for name, (_, _, text) in COMMANDS.items())
    return (f"pydesk-runc {VERSION}: an OCI runtime with runc's command line.\n\n"
            "usage: pydesk-runc [global options] <command> [options] [arguments]\n\n"
            f"commands:\n{names}\n\nglobal options:\n"
            "   --root DIR        state directory (default /run/pydesk/runc)\n"
            "   --log FILE        log file; --log-format text|json (default text)\n"
            "   --debug           tracebacks on errors, debug entries in the log\n"
            "   --version, --help\n\n" + NO_USERNS + "\n")


def command_usage(name: str) -> str:
    _, synopsis, text = COMMANDS[name]
    return f"usage: pydesk-runc {name} {synopsis}\n\n{text}\n\n{NO_USERNS}\n"


def _count(text: str) -> int:
    if not text.isdigit():
        raise UsageError(f"--preserve-fds {text!r}: expected a number")
    return int(text)


def _one_id(name: str, positionals: list[str]) -> str:
    if len(positionals) != 1:
        raise UsageError(f"{name}: expected exactly one container id, got {len(positionals)}")
    return positionals[0]


def _print(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def dispatch(command: str, root: str, opts: dict[str, Any], positionals: list[str]) -> int:
    from pydeskd.runtime import container

    if command in ("create", "run"):
        container_id = _one_id(command, positionals)
        bundle = opts.get("bundle") or os.getcwd()
        kwargs: dict[str, Any] = {"pid_file": opts.get("pid-file"),
                                  "console_socket": opts.get("console-socket"),
                                  "no_pivot": bool(opts.get("no-pivot")),
                                  "preserve_fds": _count(opts.get("preserve-fds", "0"))}
        if command == "create":
            container.create(root, container_id, bundle, **kwargs)
            return 0
        return container.run(root, container_id, bundle, detach=bool(opts.get("detach")),
                             **kwargs)
    if command == "start":
        container.start(root, _one_id(command, positionals))
        return 0
    if command == "state":
        import json

        from pydeskd.runtime import state as st

        data = st.load(root, _one_id(command, positionals))
        _print(json.dumps(st.oci_state(data, st.status(data)), indent=2) + "\n")
        return 0
    if command == "kill":
        if not 1 <= len(positionals) <= 2:
            raise UsageError("kill: expected <container-id> [signal]")
        signal = container.parse_signal(positionals[1] if len(positionals) == 2 else "SIGTERM")
        container.kill(root, positionals[0], signal, bool(opts.get("all")))
        return 0
    if command in ("pause", "resume"):
        action = container.pause if command == "pause" else container.resume
        action(root, _one_id(command, positionals))
        return 0
    if command == "delete":
        container.delete(root, _one_id(command, positionals), bool(opts.get("force")))
        return 0
    if command == "exec":
        from pydeskd.runtime.exec import exec_command

        if not positionals:
            raise UsageError("exec: expected <container-id> [command [args...]]")
        return exec_command(root, positionals[0], positionals[1:], opts)
    if command == "list":
        from pydeskd.runtime.listing import list_command

        _print(list_command(root, opts.get("format", "table"), bool(opts.get("quiet"))))
        return 0
    if command == "ps":
        from pydeskd.runtime.listing import ps_command

        if not positionals:
            raise UsageError("ps: expected <container-id>")
        _print(ps_command(root, positionals[0], opts.get("format", "table"), positionals[1:]))
        return 0
    raise UsageError(f"unknown command {command!r}")


def main(argv: list[str] | None = None) -> int:
    """The console script's entry (argv None): exits the process without the interpreter's
    teardown, which costs milliseconds on every container start. With argv: returns."""
    if argv is not None:
        return _main(argv)
    code = _main(sys.argv[1:])
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        code = code or 1
    os._exit(code)


def _main(args: list[str]) -> int:
    debug = False
    try:
        global_opts, rest = parse(args, GLOBAL_OPTIONS, stop_at_positional=True)
        debug = bool(global_opts.get("debug"))
        from pydeskd.runtime import log

        log_format = global_opts.get("log-format", "text")
        if log_format not in ("text", "json"):
            raise UsageError(f"--log-format: {log_format!r} is not text or json")
        try:
            log.configure(global_opts.get("log"), log_format, debug)
        except OSError as exc:
            raise UsageError(f"--log {global_opts.get('log')}: {exc.strerror or exc}") from exc
        if global_opts.get("version"):
            _print(f"pydesk-runc version {VERSION}\nspec: {SPEC_VERSION}\n"
                   f"python: {sys.version.split()[0]}\n")
            return 0
        if global_opts.get("help") or not rest or rest[0] == "help":
            if len(rest) > 1 and rest[1] in COMMANDS:
                _print(command_usage(rest[1]))
            else:
                _print(usage())
            return 0
        command, *command_args = rest
        if command not in COMMANDS:
            raise UsageError(f"no such command: {command!r}")
        options = COMMANDS[command][0]
        opts, positionals = parse(command_args, options,
                                  stop_at_positional=command in ("exec", "ps"))
        if opts.get("help"):
            _print(command_usage(command))
            return 0
        if debug:
            os.environ["PYDESK_RUNC_DEBUG"] = "1"
        root = global_opts.get("root") or "/run/pydesk/runc"
        return dispatch(command, os.path.abspath(root), opts, positionals)
    except Exception as exc:
        return _report(exc, debug)
    except KeyboardInterrupt:
        return 130


def _report(exc: Exception, debug: bool) -> int:
    from pydeskd.runtime import log
    from pydeskd.runtime.errors import RuntimeFailure

    if isinstance(exc, RuntimeFailure | UsageError):
        message = str(exc)
    elif isinstance(exc, OSError):
        message = f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
    else:
        message = f"internal error: {type(exc).__name__}: {exc}"
    log.error(message)
    if debug:
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    hint = " (see pydesk-runc --help)" if isinstance(exc, UsageError) else ""
    sys.stderr.write(f"pydesk-runc: {message}{hint}\n")
    sys.stderr.flush()
    return 1


if __name__ == "__main__":
    sys.exit(main())
