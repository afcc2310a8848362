"""A real pipeline for the tests: 8 extracts -> 3 transforms -> 1 report (12 tasks), files as outputs."""

from __future__ import annotations

import luigi


class Extract(luigi.Task):
    out_dir = luigi.Parameter()
    part = luigi.IntParameter()

    def output(self):
        return luigi.LocalTarget(f"{self.out_dir}/extract-{self.part}.txt")

    def run(self):
        with self.output().open("w") as fh:
            fh.write(f"{self.part * self.part}\n")


class Transform(luigi.Task):
    out_dir = luigi.Parameter()
    group = luigi.IntParameter()

    def requires(self):
        # Overlapping groups: extracts 2 and 5 feed two transforms each (a shared dependency).
        return [Extract(out_dir=self.out_dir, part=p) for p in range(self.group * 3, min(self.group * 3 + 3, 8))] + \
            [Extract(out_dir=self.out_dir, part=(self.group * 3 + 5) % 8)]

    def output(self):
        return luigi.LocalTarget(f"{self.out_dir}/transform-{self.group}.txt")

    def run(self):
        total = sum(int(t.open().read()) for t in self.input())
        with self.output().open("w") as fh:
            fh.write(f"{total}\n")


class Report(luigi.Task):
    out_dir = luigi.Parameter()
    fail = luigi.BoolParameter(default=False)

    def requires(self):
        return [Transform(out_dir=self.out_dir, group=g) for g in range(3)]

    def output(self):
        return luigi.LocalTarget(f"{self.out_dir}/report.txt")

    def run(self):
        if self.fail:
            raise RuntimeError("report failed on purpose")
        total = sum(int(t.open().read()) for t in self.input())
        with self.output().open("w") as fh:
            fh.write(f"{total}\n")
