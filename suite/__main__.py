"""`python -m suite STAGE --config FILE.yaml [-m] [overrides ...]`: the suite's front door.

This is an argv shim in front of Hydra. It turns the Lightning-CLI-like form the users type

    python -m suite fit --config conf/beta15.yaml -m diversity.beta=0,5,10,15

into Hydra's own flags

    --config-path /abs/conf --config-name beta15 --config-dir /abs/conf -m stage=fit diversity.beta=...

and then calls the `@hydra.main` task in `suite.run`, so that everything Hydra offers
(multirun, launchers, `--cfg job`, `--info`, sweeper params kept in a config file) works
unchanged. `--config-dir` always adds `conf/` to the search path so that sweep files in
`sweeps/` can inherit from the experiments in `conf/`.

A command line that is already in Hydra form (it does not start with a stage) passes
through untouched: Lightning's DDP launcher re-runs this entry point with the rewritten
argv in every child process.

Bad input (unknown stage, no `--config`, a missing file, a YAML syntax error) is reported
in one line on stderr with exit status 2, before Hydra, Lightning or MLflow start, so
nothing is written anywhere for a run that never started.
"""

from __future__ import annotations

import sys
from pathlib import Path

STAGES = ("fit", "validate", "test", "predict", "prepare", "diagnose")

USAGE = (
    "usage: python -m suite {fit,validate,test,predict,prepare,diagnose} --config FILE.yaml [-m] "
    "[hydra overrides ...]  |  python -m suite report --experiment NAME [--out DIR]"
)


class UsageError(Exception):
    """A user mistake on the command line: reported in one line, exit status 2."""


def conf_dir() -> Path:
    """The `conf/` folder beside this package (the repository checkout or install root)."""
    return Path(__file__).resolve().parent.parent / "conf"


def is_hydra_form(argv: list[str]) -> bool:
    """True when argv is already Hydra's own command line (DDP children, power users)."""
    if not argv:
        return False
    first = argv[0]
    return first.startswith("-") or "=" in first


def check_yaml(path: Path) -> None:
    """Parse the config once so that a syntax error names the file and line, not a traceback."""
    import yaml

    try:
        with path.open() as handle:
            yaml.safe_load(handle)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise UsageError(f"YAML syntax error in {where}: {error.problem}") from None
    except yaml.YAMLError as error:
        raise UsageError(f"YAML error in {path}: {error}") from None
    except OSError as error:
        raise UsageError(f"cannot read config file {path}: {error.strerror}") from None


def to_hydra_argv(argv: list[str]) -> list[str]:
    """Rewrite `STAGE --config FILE [-m] [overrides]` into Hydra's flags (see module doc)."""
    if not argv or argv[0] in ("-h", "--help"):
        raise UsageError(USAGE)
    stage, rest = argv[0], argv[1:]
    if stage not in STAGES:
        raise UsageError(f"unknown stage {stage!r}: expected one of {', '.join(STAGES)}. {USAGE}")

    config: str | None = None
    passthrough: list[str] = []
    i = 0
    while i < len(rest):
        arg = rest[i]
        if arg == "--config":
            if i + 1 >= len(rest):
                raise UsageError("--config needs a file, e.g. --config conf/beta15.yaml")
            config = rest[i + 1]
            i += 2
            continue
        if arg.startswith("--config="):
            config = arg.split("=", 1)[1]
            i += 1
            continue
        passthrough.append(arg)
        i += 1

    if config is None:
        raise UsageError(f"missing --config FILE.yaml (for example conf/beta15.yaml). {USAGE}")
    path = Path(config).expanduser().resolve()
    if path.suffix not in (".yaml", ".yml"):
        raise UsageError(f"--config must be a .yaml file, got {config}")
    if not path.is_file():
        raise UsageError(f"config file not found: {config}")
    check_yaml(path)

    flags = ["--config-path", str(path.parent), "--config-name", path.stem]
    flags += ["--config-dir", str(conf_dir())]
    options, overrides = split_options(passthrough)
    return flags + options + overrides + [f"stage={stage}"]


# Hydra's flags that take a value (`--info` only optionally, from a fixed list).
_VALUE_FLAGS = {"--cfg", "-c", "--package", "-p", "--experimental-rerun"}
_INFO_CHOICES = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}


def split_options(args: list[str]) -> tuple[list[str], list[str]]:
    """Hydra's flags (with their values) apart from the overrides, each in its order.

    argparse reads the overrides as one positional list, which a flag in the middle
    would cut in two (`a=1 --cfg job b=2` is refused), so flags go first.
    """
    options: list[str] = []
    overrides: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        nxt = args[i + 1] if i + 1 < len(args) else None
        if not arg.startswith("-"):
            overrides.append(arg)
        elif nxt is not None and (
            (arg in _VALUE_FLAGS and not nxt.startswith("-"))
            or (arg in ("--info", "-i") and nxt in _INFO_CHOICES)
        ):
            options += [arg, nxt]
            i += 1
        else:
            options.append(arg)
        i += 1
    return options, overrides


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "report":
        # Not a Hydra job: the Pareto report reads finished runs from MLflow.
        from suite.report import main as report_main

        sys.exit(report_main(argv[1:]))
    if not is_hydra_form(argv):
        try:
            argv = to_hydra_argv(argv)
        except UsageError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
    sys.argv = [sys.argv[0], *argv]

    from suite.run import main as hydra_main

    hydra_main()


if __name__ == "__main__":
    main()
