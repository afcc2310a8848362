"""A wide pipeline: one ReportWide over ``size`` ReportLeaf tasks, for the batched add_task tests
and bench/add_tasks_run.py. Leaves below ``done_below`` are complete already (the worker reports
them DONE while scheduling and runs the others); ``foreign`` adds one OtherLeaf, a family outside
the test directory's etl-services allowlist (Extract, Transform, Rep*). ``--ReportLeaf-check-ms``
makes each leaf's complete() take that long, like a check against remote storage."""

from __future__ import annotations

import os
import time

import luigi


class ReportLeaf(luigi.Task):
    out_dir = luigi.Parameter()
    index = luigi.IntParameter()
    done_below = luigi.IntParameter(default=0)
    check_ms = luigi.IntParameter(default=0, significant=False)

    def complete(self):
        if self.check_ms:
            time.sleep(self.check_ms / 1000)
        return self.index < self.done_below or os.path.exists(self._path())

    def _path(self) -> str:
        return os.path.join(self.out_dir, f"leaf-{self.index}")

    def run(self):
        os.makedirs(self.out_dir, exist_ok=True)
        with open(self._path(), "w") as fh:
            fh.write("done\n")


class OtherLeaf(ReportLeaf):
    pass


class ReportGroup(luigi.Task):
    """Leaves ``start`` to ``stop``: keeps each task's list of dependencies short."""

    out_dir = luigi.Parameter()
    start = luigi.IntParameter()
    stop = luigi.IntParameter()
    done_below = luigi.IntParameter(default=0)

    def requires(self):
        return [ReportLeaf(out_dir=self.out_dir, index=i, done_below=self.done_below)
                for i in range(self.start, self.stop)]

    def output(self):
        return luigi.LocalTarget(os.path.join(self.out_dir, f"group-{self.start}"))

    def run(self):
        with self.output().open("w") as fh:
            fh.write("done\n")


class ReportWide(luigi.Task):
    """``group_size`` 0: the leaves are the root's own dependencies; else ReportGroups of that
    many (an add_task with 100k dependencies is larger than the scheduler's 2 MiB body limit)."""

    out_dir = luigi.Parameter()
    size = luigi.IntParameter()
    done_below = luigi.IntParameter(default=0)
    foreign = luigi.BoolParameter(default=False)
    group_size = luigi.IntParameter(default=0)

    def requires(self):
        if self.group_size:
            return [ReportGroup(out_dir=self.out_dir, start=start, stop=min(start + self.group_size, self.size),
                                done_below=self.done_below) for start in range(0, self.size, self.group_size)]
        leaves = [ReportLeaf(out_dir=self.out_dir, index=i, done_below=self.done_below) for i in range(self.size)]
        if self.foreign:
            leaves.append(OtherLeaf(out_dir=self.out_dir, index=self.size))
        return leaves

    def output(self):
        return luigi.LocalTarget(os.path.join(self.out_dir, "wide.txt"))

    def run(self):
        with self.output().open("w") as fh:
            fh.write(f"{len(self.requires())}\n")
