"""A slow chain for the history tests: Step(i) needs Step(i-1); each step sleeps, then writes a file."""

from __future__ import annotations

import time

import luigi


class Step(luigi.Task):
    out_dir = luigi.Parameter()
    index = luigi.IntParameter()
    delay = luigi.FloatParameter(default=0.2)

    def requires(self):
        return [Step(out_dir=self.out_dir, index=self.index - 1, delay=self.delay)] if self.index > 0 else []

    def output(self):
        return luigi.LocalTarget(f"{self.out_dir}/step-{self.index}.txt")

    def run(self):
        time.sleep(self.delay)
        with self.output().open("w") as fh:
            fh.write(f"{self.index}\n")
