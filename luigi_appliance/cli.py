"""The ``luigi-appliance`` command line."""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from luigi_appliance import __version__
from luigi_appliance.audit.commands import add_parsers as add_audit_parsers
from luigi_appliance.auth.oidc.commands import add_parsers as add_oidc_parsers
from luigi_appliance.errors import ApplianceError, ConfigError, UsageError
from luigi_appliance.ha.commands import add_parsers as add_ha_parsers
from luigi_appliance.history.commands import add_parsers as add_history_parsers

EXIT_ERROR = 1
EXIT_USAGE = 2  # as argparse's own usage errors
# Commands whose options after the command word that they do not know are luigi's (the task's).
_LUIGI_COMMANDS = ("run", "dag")


def _settings(args: argparse.Namespace, *, check_files: bool = True, for_serve: bool = False):
    from luigi_appliance.config_loader import config_paths, load_settings

    return load_settings(config_paths(args.config), check_files=check_files, for_serve=for_serve)


# ---- serve -------------------------------------------------------------------------------------

def cmd_serve(args: argparse.Namespace) -> int:
    from luigi_appliance import logsetup
    from luigi_appliance.config_loader import config_paths, load_settings
    from luigi_appliance.server.serve import serve

    if args.dev:
        if args.config:
            raise ApplianceError("--dev uses embedded defaults; do not combine it with --config")
        from luigi_appliance import devmode

        state_dir = args.state_dir.resolve()
        files = devmode.bootstrap(state_dir)
        overrides = {
            ("state", "dir"): str(state_dir),
            ("server", "listen"): f"127.0.0.1:{args.port}",
            ("auth", "users_file"): str(files.users_file),
            ("secrets", "key_file"): str(state_dir / "secret.key"),
            # Task history in DIR/history.db, through the same code as PostgreSQL.
            ("history", "backend"): "sqlite",
            ("history", "sqlite_path"): str(state_dir / "history.db"),
            ("audit", "file"): str(state_dir / "audit.log"),
        }
        if args.insecure_http:
            overrides[("server", "insecure_http")] = "true"
        settings = load_settings([], overrides=overrides, for_serve=True)
        scheme = "http" if args.insecure_http else "https"
        print(f"luigi-appliance dev scheduler: {scheme}://127.0.0.1:{args.port}/\n"
              f"  user 'admin', password in {files.password_file}\n"
              f"  worker credentials file: {files.credentials_file}\n"
              f"  CA certificate for workers: {state_dir / 'tls-selfsigned.crt'}", file=sys.stderr, flush=True)
    else:
        if args.state_dir or args.port or args.insecure_http:
            raise ApplianceError("--state-dir, --port and --insecure-http only go with --dev; "
                                 "otherwise set them in scheduler.conf")
        settings = load_settings(config_paths(args.config), for_serve=True)
    logsetup.setup(settings.logging.level, settings.logging.format)
    return serve(settings)


# ---- run ---------------------------------------------------------------------------------------

def cmd_run(args: argparse.Namespace) -> int:
    import luigi.rpc

    from luigi_appliance.client.run import EXIT_NOT_COMPLETE, RunOptions, run
    from luigi_appliance.client.scheduler_errors import SchedulerError, unreachable

    luigi_args = list(args.luigi_args)
    _needs_module_and_task(luigi_args, "run")
    if "--local-scheduler" in luigi_args:
        raise UsageError("run always uses the central scheduler; drop --local-scheduler")
    _check_task_command_line(luigi_args)
    try:
        return run(RunOptions(args.scheduler_url, args.ca_file, args.credentials_file, args.client_config,
                              luigi_args, dag_check=not args.no_dag_check, wait=not args.no_wait))
    except luigi.rpc.RPCError as exc:  # luigi's, once its retries are spent
        return _report(unreachable(exc), EXIT_NOT_COMPLETE)
    except SchedulerError as exc:  # a final answer: refused, untrusted certificate, rejected request
        return _report(exc, EXIT_NOT_COMPLETE)


def _module_name(luigi_args: list[str]) -> str:
    for i, arg in enumerate(luigi_args):
        if arg.startswith("--module="):
            return arg.partition("=")[2]
        if arg == "--module" and i + 1 < len(luigi_args):
            return luigi_args[i + 1]
    return "?"


def _check_task_command_line(luigi_args: list[str]) -> None:
    """Import the pipeline and build the root task as luigi will, so that a module that does not
    import (exit 1), or a task name or parameter luigi cannot use (exit 2), ends in one line
    before anything is read or sent, not in a traceback from inside luigi."""
    from luigi.task_register import TaskClassException

    from luigi_appliance.dag.command import RootUnavailable, root_task

    try:
        root_task(luigi_args)
    except ImportError as exc:
        raise ApplianceError(f"cannot import the pipeline module {_module_name(luigi_args)!r} (--module): {exc}; "
                             "is its directory on PYTHONPATH, and are its dependencies installed?") from None
    except TaskClassException as exc:
        first, *candidates = str(exc).splitlines()  # luigi's lists one candidate per line
        raise UsageError(" ".join([first, ", ".join(c.strip() for c in candidates)]).strip()) from None
    except RootUnavailable as exc:
        raise UsageError(exc.problem.message) from None


# ---- worker ------------------------------------------------------------------------------------

def cmd_worker(args: argparse.Namespace) -> int:
    from luigi_appliance.client.release import ReleaseOptions, release_worker

    owner = release_worker(ReleaseOptions(args.worker_id, args.scheduler_url, args.ca_file, args.credentials_file,
                                          args.client_config))
    print(f"released worker id {args.worker_id} (it was bound to {owner})")
    return 0


# ---- dag ---------------------------------------------------------------------------------------

def _needs_module_and_task(luigi_args: list[str], command: str) -> None:
    if not any(a == "--module" or a.startswith("--module=") for a in luigi_args):
        raise UsageError(f"{command} needs --module MODULE TASK [task options]")


def cmd_dag(args: argparse.Namespace) -> int:
    from luigi.task_register import TaskClassException

    from luigi_appliance.dag.command import dag_check

    _needs_module_and_task(args.luigi_args, "dag check")
    try:
        return dag_check(args.luigi_args, fmt=args.format, strict=args.strict)
    except ImportError as exc:
        raise UsageError(f"cannot import the pipeline module: {exc} (is its directory on PYTHONPATH?)") from None
    except TaskClassException as exc:
        raise UsageError(str(exc)) from None


# ---- user --------------------------------------------------------------------------------------

def _users_file(args: argparse.Namespace):
    from luigi_appliance.auth.local import UsersFile

    path = args.users_file or _settings(args, check_files=False).auth.users_file
    return UsersFile(path)


def _read_password(args: argparse.Namespace) -> str:
    if args.password_file:
        from luigi_appliance.secret_values import read_secret_file

        password = read_secret_file(args.password_file).decode("utf-8").splitlines()[0]
    elif sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Repeat password: ") != password:
            raise ApplianceError("passwords do not match")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < 12:
        raise ApplianceError("password too short: at least 12 characters are required")
    return password


def cmd_user(args: argparse.Namespace) -> int:
    from luigi_appliance.auth import Role

    users = _users_file(args)
    role = Role.parse(args.role) if getattr(args, "role", None) else None
    if args.user_command == "add":
        users.add(args.name, Role.VIEWER if role is None else role, _read_password(args))
        print(f"added user {args.name} ({Role.VIEWER if role is None else role}) to {users.path}")
    elif args.user_command == "passwd":
        users.set_password(args.name, _read_password(args), role)
        print(f"updated user {args.name} in {users.path}")
    elif args.user_command == "del":
        users.delete(args.name)
        print(f"deleted user {args.name} from {users.path}")
    else:
        for record in users.read().values():
            print(f"{record.name}\t{record.role}")
    if args.user_command != "list":
        print("send SIGHUP to the scheduler (systemctl reload luigi-appliance) to apply", file=sys.stderr)
    return 0


# ---- ldap, token -------------------------------------------------------------------------------

def cmd_ldap(args: argparse.Namespace) -> int:
    from luigi_appliance.auth.admin import ldap_test

    ask = (lambda: getpass.getpass(f"Password for {args.user}: ")) if args.password else None
    if args.password and not args.user:
        raise UsageError("--password needs --user")
    return ldap_test(_settings(args), args.user, ask, sys.stdout)


def cmd_token(args: argparse.Namespace) -> int:
    from luigi_appliance.auth import admin

    settings = _settings(args)
    if args.token_command == "issue":  # noqa: S105 - a subcommand name
        print(admin.issue_token(settings, args.user))
    else:
        print(admin.rotate_key(settings), file=sys.stderr)
    return 0


# ---- config, secret ----------------------------------------------------------------------------

def cmd_config(args: argparse.Namespace) -> int:
    from luigi_appliance.config import render_effective

    # check runs what serve checks before it starts: "configuration OK" means serve starts with
    # it. show prints the configuration even when serve would refuse to start with it.
    settings = _settings(args, for_serve=args.config_command == "check")
    if args.config_command == "show":
        print(render_effective(settings))
    else:
        print(f"configuration OK: {', '.join(settings.files) or '(embedded defaults)'}")
    return 0


def cmd_secret(args: argparse.Namespace) -> int:
    from luigi_appliance.secret_values import encrypt_value

    key_file = args.key_file or _settings(args, check_files=False).secrets_key_file
    if sys.stdin.isatty():
        value = getpass.getpass("Secret to encrypt: ")
    else:
        value = sys.stdin.readline().rstrip("\r\n")
    if not value:
        raise ApplianceError("empty secret")
    print(encrypt_value(value, key_file))
    return 0


# ---- parser ------------------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """argparse without abbreviations: ``run ... --n 5`` is the task's ``n``, not ``--no-dag-check``.
    Subcommand parsers are made of the same class (argparse's default), so they all do without."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


def command_line_path(value: str) -> Path:
    """A path given on the command line, relative to the working directory (configuration
    files want absolute paths; a command line is typed where the user stands)."""
    if not value:
        raise argparse.ArgumentTypeError("expected a path, got an empty value")
    return Path(os.path.abspath(value))


def _config_after_command(argv: list[str]) -> list[str]:
    """``--config FILE`` moved before the command word when given after it (README: either
    place), except for run and dag, whose unknown options are the task's."""
    command_at = next((i for i, arg in enumerate(argv) if not arg.startswith("-")
                       and (i == 0 or argv[i - 1] != "--config")), None)
    if command_at is None or argv[command_at] in _LUIGI_COMMANDS:
        return argv
    head, tail, moved = argv[:command_at], [], []
    rest = iter(argv[command_at:])
    for arg in rest:
        if arg == "--config":
            moved += [arg, next(rest, "")]
        elif arg.startswith("--config="):
            moved.append(arg)
        else:
            tail.append(arg)
    if moved and any(arg == "--config" or arg.startswith("--config=") for arg in head):
        raise UsageError("--config given both before and after the command")
    return [*moved, *head, *tail]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="luigi-appliance", description="Hardened Luigi central scheduler.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--config", type=command_line_path,
                        help="scheduler.conf to read (default: $LUIGI_APPLIANCE_CONFIG or "
                        "/etc/luigi-appliance/scheduler.conf, plus its .d/*.conf drop-ins); "
                        "may also follow the command")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the scheduler")
    serve.add_argument("--dev", action="store_true",
                       help="embedded defaults: no config file, everything in --state-dir")
    serve.add_argument("--state-dir", type=command_line_path,
                       help="(--dev) directory for state, keys, certificate and users")
    serve.add_argument("--port", type=int, help="(--dev) port on 127.0.0.1, default 8082")
    serve.add_argument("--insecure-http", action="store_true", help="(--dev) plain HTTP on loopback")
    serve.set_defaults(func=cmd_serve)

    run = sub.add_parser("run", help="run a luigi pipeline against the scheduler",
                         usage="luigi-appliance run [options] --module MODULE TASK [task options]")
    run.add_argument("--scheduler-url", help="https://HOST:PORT/ (default from client.conf)")
    run.add_argument("--ca-file", type=command_line_path, help="CA certificate(s) to verify the scheduler with")
    run.add_argument("--credentials-file", type=command_line_path, help="file holding username:password")
    run.add_argument("--client-config", type=command_line_path,
                     help="client.conf (default /etc/luigi-appliance/client.conf)")
    run.add_argument("--no-dag-check", action="store_true",
                     help="skip the dependency preflight (cycles, broken requires()) before scheduling")
    run.add_argument("--no-wait", action="store_true",
                     help="do not wait for the decision on tasks held for approval: run what may run, "
                     "then exit 5 while tasks await approval")
    run.set_defaults(func=cmd_run)

    worker = sub.add_parser("worker", help="worker ids bound to principals, on the running scheduler")
    worker_sub = worker.add_subparsers(dest="worker_command", required=True)
    release = worker_sub.add_parser("release", help="free a worker id bound to a principal (needs an operator "
                                    "account; audited), so another principal may use it")
    release.add_argument("worker_id", help="the worker id, as worker_list shows it")
    release.add_argument("--scheduler-url", help="https://HOST:PORT/ (default from client.conf)")
    release.add_argument("--ca-file", type=command_line_path, help="CA certificate(s) to verify the scheduler with")
    release.add_argument("--credentials-file", type=command_line_path, help="file holding username:password")
    release.add_argument("--client-config", type=command_line_path,
                         help="client.conf (default /etc/luigi-appliance/client.conf)")
    worker.set_defaults(func=cmd_worker)

    dag = sub.add_parser("dag", help="check a pipeline's dependency graph without running it")
    dag_sub = dag.add_subparsers(dest="dag_command", required=True)
    check = dag_sub.add_parser("check", usage="luigi-appliance dag check [--format text|json|dot] [--strict] "
                               "--module MODULE TASK [task options]",
                               help="report cycles, failing requires(), bad parameters, missing external data; "
                               "exit 0 clean, 1 problems, 2 usage")
    check.add_argument("--format", choices=["text", "json", "dot"], default="text")
    check.add_argument("--strict", action="store_true", help="missing external data is an error, not a warning")
    dag.set_defaults(func=cmd_dag)

    user = sub.add_parser("user", help="manage local accounts")
    user.add_argument("--users-file", type=command_line_path, help="default: [auth] users_file from the configuration")
    user_sub = user.add_subparsers(dest="user_command", required=True)
    add = user_sub.add_parser("add", help="add an account (password from a tty, stdin or --password-file)")
    add.add_argument("name")
    add.add_argument("--role", default="viewer", help="metrics, viewer, worker, operator or admin")
    add.add_argument("--password-file", type=command_line_path)
    passwd = user_sub.add_parser("passwd", help="change an account's password (and role)")
    passwd.add_argument("name")
    passwd.add_argument("--role", help="metrics, viewer, worker, operator or admin (unset: keep)")
    passwd.add_argument("--password-file", type=command_line_path)
    delete = user_sub.add_parser("del", help="delete an account")
    delete.add_argument("name")
    user_sub.add_parser("list", help="list accounts and roles")
    user.set_defaults(func=cmd_user)

    ldap = sub.add_parser("ldap", help="check the LDAP settings against the directory")
    ldap_sub = ldap.add_subparsers(dest="ldap_command", required=True)
    ldap_check = ldap_sub.add_parser("test", help="bind the search account; with --user, show the user's "
                                     "groups, role and task families")
    ldap_check.add_argument("--user", help="user name to look up")
    ldap_check.add_argument("--password", action="store_true",
                            help="also prompt for the user's password (not echoed) and check it")
    ldap.set_defaults(func=cmd_ldap)

    token = sub.add_parser("token", help="bearer tokens for workers")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    issue = token_sub.add_parser("issue", help="print a token for an account (no password asked: "
                                 "needs read access to the token keys)")
    issue.add_argument("--user", required=True)
    token_sub.add_parser("rotate-key", help="add a new signing key; older keys keep verifying")
    token.set_defaults(func=cmd_token)

    config = sub.add_parser("config", help="validate or show the configuration")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    config_sub.add_parser("check", help="validate; exit 1 listing every problem")
    config_sub.add_parser("show", help="print the effective configuration, secrets redacted")
    config.set_defaults(func=cmd_config)

    secret = sub.add_parser("secret", help="encrypt secrets for the configuration")
    secret_sub = secret.add_subparsers(dest="secret_command", required=True)
    encrypt = secret_sub.add_parser("encrypt", help="read a secret on stdin, print an enc: value")
    encrypt.add_argument("--key-file", type=command_line_path, help="default: [secrets] key_file (created if missing)")
    secret.set_defaults(func=cmd_secret)

    add_history_parsers(sub)  # db upgrade|current|history, history prune
    add_audit_parsers(sub, command_line_path)  # audit verify|export|public-key
    add_oidc_parsers(sub)  # oidc test|explain
    add_ha_parsers(sub)  # ha status
    from luigi_appliance.operator.commands import add_parsers as add_operator_parsers

    add_operator_parsers(sub, worker_sub, user_sub)  # task ..., scheduler ..., worker list, user unlock
    return parser


def _report(exc: BaseException, code: int) -> int:
    """Print ``exc`` as the command's one line of error; return ``code``."""
    logging.getLogger("luigi_appliance").debug("error", exc_info=exc)
    print(f"luigi-appliance: error: {exc}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``luigi-appliance`` console script."""
    parser = build_parser()
    try:
        argv = _config_after_command(list(sys.argv[1:] if argv is None else argv))
    except UsageError as exc:
        parser.error(str(exc))
    args, extra = parser.parse_known_args(argv)
    if args.command in _LUIGI_COMMANDS:
        args.luigi_args = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "serve" and args.dev:
        if args.state_dir is None:
            parser.error("serve --dev needs --state-dir DIR")
        args.port = args.port or 8082
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except UsageError as exc:
        return _report(exc, EXIT_USAGE)
    except ConfigError as exc:
        print(f"luigi-appliance: {len(exc.issues)} configuration error(s):", file=sys.stderr)
        for issue in exc.issues:
            print(f"  {issue}", file=sys.stderr)
        return EXIT_ERROR
    except ApplianceError as exc:
        return _report(exc, EXIT_ERROR)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
