"""Graphs that luigi's worker runs and a preflight that walks every requires() refuses: complete
tasks whose inputs are gone, recursion ended by a complete task, None defaults, a dependency's
parameter given on the command line. And a pipeline that logs every complete() and requires()
call, to compare ours with stock luigi call for call."""

from __future__ import annotations

import os
from pathlib import Path

import luigi


class Raw(luigi.ExternalTask):
    root = luigi.Parameter()

    def output(self):
        return luigi.LocalTarget(f"{self.root}/raw/ready")


class Cleaned(luigi.Task):
    """Complete once its output exists; its inputs may be purged afterwards, and then its
    requires() (which lists the raw directory) raises: luigi never asks it."""

    root = luigi.Parameter()

    def requires(self):
        return [Raw(root=self.root) for _ in os.listdir(f"{self.root}/raw")]

    def output(self):
        return luigi.LocalTarget(f"{self.root}/cleaned")

    def run(self):
        Path(self.output().path).write_text("cleaned\n")


class Report(luigi.Task):
    root = luigi.Parameter()

    def requires(self):
        return Cleaned(root=self.root)

    def output(self):
        return luigi.LocalTarget(f"{self.root}/report")

    def run(self):
        Path(self.output().path).write_text("report\n")


class Day(luigi.Task):
    """Day n needs day n - 1, with no base case: the recursion ends at a day already done (luigi
    never asks a complete task for its requirements). Before day 0 there is no data."""

    root = luigi.Parameter()
    n = luigi.IntParameter()

    def requires(self):
        if self.n <= 0:
            raise ValueError(f"no data before day 0 (asked for day {self.n - 1})")
        return Day(root=self.root, n=self.n - 1)

    def output(self):
        return luigi.LocalTarget(f"{self.root}/day-{self.n}")

    def run(self):
        Path(self.output().path).write_text(f"{self.n}\n")


class Optionals(luigi.Task):
    """Parameters whose default is None, as luigi accepts them."""

    root = luigi.Parameter()
    ratio = luigi.FloatParameter(default=None)
    flag = luigi.BoolParameter(default=None)
    count = luigi.IntParameter(default=None)
    day = luigi.DateParameter(default=None)
    label = luigi.OptionalParameter(default=None)

    def output(self):
        return luigi.LocalTarget(f"{self.root}/optionals")

    def run(self):
        Path(self.output().path).write_text(repr((self.ratio, self.flag, self.count, self.day, self.label)) + "\n")


class Sized(luigi.Task):
    """No default for size: only the command line's --Sized-size gives it one."""

    root = luigi.Parameter()
    size = luigi.IntParameter()

    def output(self):
        return luigi.LocalTarget(f"{self.root}/sized-{self.size}")

    def run(self):
        Path(self.output().path).write_text(f"{self.size}\n")


class NeedsSized(luigi.Task):
    root = luigi.Parameter()

    def requires(self):
        return Sized(root=self.root)

    def output(self):
        return luigi.LocalTarget(f"{self.root}/needs-sized")

    def run(self):
        Path(self.output().path).write_text("done\n")


def _log(event: str, task: luigi.Task) -> None:
    with open(os.environ["CALL_LOG"], "a") as log:
        log.write(f"{event} {task}\n")


class Logged(luigi.Task):
    """A diamond over a shared base (Logged(part=0) is done beforehand by the test), each
    complete() and requires() call appended to $CALL_LOG."""

    root = luigi.Parameter()
    part = luigi.IntParameter(default=3)

    def requires(self):
        _log("requires", self)
        if self.part == 3:
            return [Logged(root=self.root, part=1), Logged(root=self.root, part=2)]
        return [Logged(root=self.root, part=0)] if self.part > 0 else []

    def complete(self):
        _log("complete", self)
        return super().complete()

    def output(self):
        return luigi.LocalTarget(f"{self.root}/logged-{self.part}")

    def run(self):
        Path(self.output().path).write_text(f"{self.part}\n")
