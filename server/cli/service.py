"""``hearth service``: run hearth under systemd (Linux) or launchd (macOS).

The unit and the plist are templates in the repository (``systemd/hearth.service``,
``launchd/dev.hearth.server.plist``). Rendering them is pure; installing is a list of steps
(create a folder, write or remove a file, run a command) that ``--dry-run`` prints instead of
doing. Every command goes through :func:`run_command`, which tests replace.
"""

from __future__ import annotations

import argparse
import getpass
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from xml.sax.saxutils import escape

from server.config import DEFAULT_MODELS_FILE, load_models_file
from server.settings import Settings

_REPO = Path(__file__).resolve().parents[2]
SYSTEMD_TEMPLATE = _REPO / "systemd" / "hearth.service"
LAUNCHD_TEMPLATE = _REPO / "launchd" / "dev.hearth.server.plist"
LABEL = "dev.hearth.server"
UNIT = "hearth"

_PLACEHOLDER = re.compile(r"@([A-Z_]+)@")
_CONDITION = re.compile(r"^(\s*)@IF_([A-Z_]+)@")


class ServiceError(Exception):
    """The service cannot be set up as asked; the message is meant for the user."""


class Manager(Enum):
    SYSTEMD = "systemd"
    LAUNCHD = "launchd"


@dataclass(frozen=True, slots=True)
class Target:
    """What a rendered unit holds: the values for this machine."""

    hearth_exec: Path
    models_file: Path
    host: str
    port: int
    user: str
    log_dir: Path | None = None  # launchd only: systemd logs to the journal
    system: bool = False
    api_key_file: Path | None = None  # None: no key file at install time, no key lines


@dataclass(frozen=True, slots=True)
class Location:
    """Where the service lives: its manager, the file, and whose it is."""

    manager: Manager
    path: Path
    system: bool
    uid: int
    log_dir: Path | None  # launchd's log folder; systemd logs to the journal


@dataclass(frozen=True, slots=True)
class MakeDir:
    path: Path


@dataclass(frozen=True, slots=True)
class Write:
    path: Path
    text: str


@dataclass(frozen=True, slots=True)
class Remove:
    path: Path


@dataclass(frozen=True, slots=True)
class Run:
    argv: tuple[str, ...]
    check: bool = True  # False: a failure is expected at times (stopping what is not running)


Step = MakeDir | Write | Remove | Run


def render(template: str, values: Mapping[str, str], conditions: Mapping[str, bool]) -> str:
    """Fill ``@NAME@`` placeholders. Template notes (lines starting ``##`` or ``<!--##``) are
    dropped, and so is a line starting ``@IF_COND@`` unless ``conditions[COND]`` holds."""
    lines = []
    for line in template.splitlines(keepends=True):
        if line.lstrip().startswith(("##", "<!--##")):
            continue
        if match := _CONDITION.match(line):
            if not conditions[match[2]]:
                continue
            line = match[1] + line[match.end() :]
        lines.append(_PLACEHOLDER.sub(lambda m: values[m[1]], line))
    return "".join(lines).lstrip("\n")


def render_systemd(target: Target, template: str | None = None) -> str:
    template = template if template is not None else SYSTEMD_TEMPLATE.read_text()
    values = {
        "HEARTH_EXEC": _unit_word(str(target.hearth_exec)),
        "MODELS_FILE": _unit_word(str(target.models_file)),
        "HOST": _unit_word(target.host),
        "PORT": str(target.port),
        "USER": target.user,
        "API_KEY_FILE": str(target.api_key_file).replace("%", "%%"),
        "WANTED_BY": "multi-user.target" if target.system else "default.target",
    }
    conditions = {
        "SYSTEM": target.system,
        "USER_UNIT": not target.system,
        "KEY": target.api_key_file is not None,
    }
    return render(template, values, conditions)


def render_launchd(target: Target, template: str | None = None) -> str:
    if target.log_dir is None:
        raise ValueError("a launchd agent needs a log folder")
    template = template if template is not None else LAUNCHD_TEMPLATE.read_text()
    values = {
        "HEARTH_EXEC": str(target.hearth_exec),
        "MODELS_FILE": str(target.models_file),
        "HOST": target.host,
        "PORT": str(target.port),
        "LOG_DIR": str(target.log_dir),
        "API_KEY_FILE": str(target.api_key_file),
    }
    escaped = {name: escape(value) for name, value in values.items()}
    return render(template, escaped, {"KEY": target.api_key_file is not None})


def _unit_word(value: str) -> str:
    """One word of an ExecStart= line: specifiers and variables escaped, quoted if need be."""
    value = value.replace("%", "%%").replace("$", "$$")
    if re.search(r"[\s\"'\\;]", value):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


def install_steps(location: Location, text: str) -> list[Step]:
    steps: list[Step] = [MakeDir(location.path.parent)]
    if location.manager is Manager.LAUNCHD:
        domain = f"gui/{location.uid}"
        if location.log_dir is not None:
            steps.append(MakeDir(location.log_dir))
        if location.path.exists():
            steps.append(Run(("launchctl", "bootout", f"{domain}/{LABEL}"), check=False))
        steps.append(Write(location.path, text))
        steps.append(Run(("launchctl", "enable", f"{domain}/{LABEL}")))
        steps.append(Run(("launchctl", "bootstrap", domain, str(location.path))))
        return steps
    # restart, not `enable --now`: a reinstall must replace a running server's settings.
    steps.append(Write(location.path, text))
    steps += [Run(_systemctl(location, "daemon-reload")), Run(_systemctl(location, "enable", UNIT))]
    steps.append(Run(_systemctl(location, "restart", UNIT)))
    return steps


def uninstall_steps(location: Location) -> list[Step]:
    if location.manager is Manager.LAUNCHD:
        stop = Run(("launchctl", "bootout", f"gui/{location.uid}/{LABEL}"), check=False)
        return [stop, Remove(location.path)]
    stop = Run(_systemctl(location, "disable", "--now", UNIT), check=False)
    return [stop, Remove(location.path), Run(_systemctl(location, "daemon-reload"))]


def status_command(location: Location) -> tuple[str, ...]:
    if location.manager is Manager.LAUNCHD:
        return ("launchctl", "print", f"gui/{location.uid}/{LABEL}")
    return _systemctl(location, "status", "--no-pager", UNIT)


def logs_command(location: Location, lines: int, follow: bool) -> tuple[str, ...]:
    if location.log_dir is not None:
        argv: tuple[str, ...] = ("tail", "-n", str(lines), str(location.log_dir / "hearth.log"))
    else:
        scope = () if location.system else ("--user",)
        argv = ("journalctl", *scope, "-u", UNIT, "-n", str(lines), "--no-pager")
    return (*argv, "-f") if follow else argv


def _systemctl(location: Location, *args: str) -> tuple[str, ...]:
    return ("systemctl", *(() if location.system else ("--user",)), *args)


def run_command(argv: Sequence[str]) -> int:
    """Run one command in the foreground and return its exit status; the only place this
    module starts a process."""
    try:
        return subprocess.run(list(argv), check=False).returncode
    except FileNotFoundError:
        print(f"hearth service: {argv[0]} is not installed here", file=sys.stderr)
        return 127


def execute(steps: Sequence[Step], dry_run: bool) -> int:
    """Do the steps in order, stopping at the first failed checked command; with ``dry_run``
    print what would be done and change nothing."""
    for step in steps:
        if dry_run:
            print(_describe(step), end="" if isinstance(step, Write) else "\n")
            continue
        match step:
            case MakeDir(path):
                path.mkdir(parents=True, exist_ok=True)
            case Write(path, text):
                path.write_text(text)
            case Remove(path):
                path.unlink(missing_ok=True)
            case Run(argv, check):
                status = run_command(argv)
                if status and check:
                    print(f"hearth service: `{shlex.join(argv)}` failed", file=sys.stderr)
                    return status
    return 0


def _describe(step: Step) -> str:
    match step:
        case MakeDir(path):
            return f"would create {path}"
        case Write(path, text):
            return f"would write {path}:\n{text}"
        case Remove(path):
            return f"would remove {path}"
        case Run(argv, _):
            return f"would run: {shlex.join(argv)}"
    raise AssertionError(step)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    system_help = "Linux: the system-wide unit in /etc/systemd/system, run as you (needs root)"
    install = actions.add_parser("install", help="install, enable and start the service")
    install.add_argument("--system", action="store_true", help=system_help)
    install.add_argument("--dry-run", action="store_true", help="print, change nothing")
    install.add_argument("--host", help="address to bind (default 127.0.0.1; env HEARTH_HOST)")
    install.add_argument("--port", type=int, help="port (default 8080; env HEARTH_PORT)")
    uninstall = actions.add_parser("uninstall", help="stop the service and remove it")
    uninstall.add_argument("--system", action="store_true", help=system_help)
    uninstall.add_argument("--dry-run", action="store_true", help="print, change nothing")
    status = actions.add_parser("status", help="the service manager's view of hearth")
    status.add_argument("--system", action="store_true", help=system_help)
    logs = actions.add_parser("logs", help="the server's log")
    logs.add_argument("--system", action="store_true", help=system_help)
    logs.add_argument("-n", "--lines", type=int, default=50, help="lines to show (default 50)")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")


def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        manager = _manager(sys.platform)
        if args.system and manager is Manager.LAUNCHD:
            raise ServiceError("--system is for Linux; on macOS hearth is a LaunchAgent of yours")
        if args.action == "install":
            return _install(manager, args.system, args.dry_run, settings)
        if args.action == "uninstall":
            location = locate(manager, args.system)
            if not location.path.exists():
                print(f"hearth service: nothing to uninstall, no {location.path}")
                return 0
            return execute(uninstall_steps(location), args.dry_run)
        location = locate(manager, args.system or _only_system_installed(manager))
        if args.action == "status":
            return run_command(status_command(location))
        return run_command(logs_command(location, args.lines, args.follow))
    except ServiceError as exc:
        print(f"hearth service: {exc}", file=sys.stderr)
        return 1


def _install(manager: Manager, system: bool, dry_run: bool, settings: Settings) -> int:
    from server.api.security import is_loopback
    from server.cli.pull import default_cache_dir

    if system and not dry_run and os.geteuid() != 0:
        raise ServiceError(f"--system needs root: sudo {find_hearth()} service install --system")
    models_file = (settings.models_file or DEFAULT_MODELS_FILE).expanduser().resolve()
    load_models_file(models_file, default_cache_dir())  # a broken file fails here, not in a loop
    location = locate(manager, system)
    key_file = api_key_path(manager, system)
    if not key_file.exists() and not is_loopback(settings.host):
        raise ServiceError(
            f"hearth refuses to serve {settings.host} without an API key, so the service would "
            f"fail at every start: write the keys to {key_file} (chmod 600) first"
        )
    target = Target(
        hearth_exec=find_hearth(), models_file=models_file, host=settings.host,
        port=settings.port, user=_account(system), log_dir=location.log_dir, system=system,
        api_key_file=key_file if key_file.exists() else None,
    )  # fmt: skip
    render_for = render_launchd if manager is Manager.LAUNCHD else render_systemd
    status = execute(install_steps(location, render_for(target)), dry_run)
    if status == 0 and not dry_run:
        _explain(location, target, key_file)
    return status


def _explain(location: Location, target: Target, key_file: Path) -> None:
    print(f"hearth service: installed {location.path}")
    print(f"serving http://{target.host}:{target.port} once the model is loaded")
    print("see `hearth service status` and `hearth service logs -f`")
    if location.manager is Manager.SYSTEMD and not location.system:
        print(f"to keep it running while you are logged out: loginctl enable-linger {target.user}")
    if target.api_key_file is None:
        print(f"no API key file at {key_file}: to require a key, write it there and install again")


def locate(manager: Manager, system: bool) -> Location:
    home = Path.home()
    uid = os.getuid() if hasattr(os, "getuid") else 0
    if manager is Manager.LAUNCHD:
        path = home / "Library" / "LaunchAgents" / f"{LABEL}.plist"
        return Location(manager, path, False, uid, home / "Library" / "Logs" / "hearth")
    if system:
        return Location(manager, Path("/etc/systemd/system/hearth.service"), True, uid, None)
    path = _config_home() / "systemd" / "user" / "hearth.service"
    return Location(manager, path, False, uid, None)


def api_key_path(manager: Manager, system: bool) -> Path:
    """Where the service looks for its API key file."""
    if manager is Manager.LAUNCHD:
        return Path.home() / "Library" / "Application Support" / "hearth" / "api-keys"
    return Path("/etc/hearth/api-keys") if system else _config_home() / "hearth" / "api-keys"


def find_hearth() -> Path:
    """The hearth executable for the unit: the one running now, as an absolute path."""
    argv0 = Path(sys.argv[0])
    if argv0.name == "hearth" and argv0.is_file():
        return argv0.resolve()
    beside = Path(sys.executable).parent / "hearth"
    if beside.is_file():
        return beside.absolute()
    if found := shutil.which("hearth"):
        return Path(found).resolve()
    raise ServiceError("cannot find the hearth executable; run this as .venv/bin/hearth")


def _manager(platform: str) -> Manager:
    if platform == "darwin":
        return Manager.LAUNCHD
    if platform.startswith("linux"):
        return Manager.SYSTEMD
    raise ServiceError(f"hearth runs as a service on Linux and macOS, not on {platform}")


def _only_system_installed(manager: Manager) -> bool:
    """status and logs without --system: the system-wide unit when it is the only one."""
    if manager is Manager.LAUNCHD:
        return False
    return not locate(manager, False).path.exists() and locate(manager, True).path.exists()


def _account(system: bool) -> str:
    """The user the system-wide unit runs as: whoever ran install, through sudo or not."""
    sudo_user = os.environ.get("SUDO_USER")
    if system and sudo_user and os.geteuid() == 0:
        return sudo_user
    return getpass.getuser()


def _config_home() -> Path:
    xdg = os.environ.get("XDG_CONFIG_HOME")
    return Path(xdg).expanduser() if xdg else Path.home() / ".config"
