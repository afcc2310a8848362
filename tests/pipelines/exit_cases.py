"""Tasks for the exit-code tests of ``luigi-appliance run``: one per outcome luigi can report."""

from __future__ import annotations

import luigi


class Echo(luigi.Task):
    """Writes its parameter ``n``: a task parameter whose name prefixes run's --no-dag-check."""

    n = luigi.IntParameter()
    out_dir = luigi.Parameter()

    def output(self):
        return luigi.LocalTarget(f"{self.out_dir}/echo-{self.n}.txt")

    def run(self):
        with self.output().open("w") as fh:
            fh.write(f"{self.n}\n")


class Fails(luigi.Task):
    out_dir = luigi.Parameter()

    def output(self):
        return luigi.LocalTarget(f"{self.out_dir}/never.txt")

    def run(self):
        raise RuntimeError("this task always fails")


class Missing(luigi.ExternalTask):
    def output(self):
        return luigi.LocalTarget("/nonexistent/exit-cases/missing.txt")


class NeedsMissing(luigi.Task):
    """Not complete for a reason other than a failure: its external input does not exist."""

    out_dir = luigi.Parameter()

    def requires(self):
        return Missing()

    def output(self):
        return luigi.LocalTarget(f"{self.out_dir}/needs-missing.txt")

    def run(self):
        with self.output().open("w") as fh:
            fh.write("ran\n")
