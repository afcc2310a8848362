"""Task graphs for the dag check tests: cycles of several shapes, broken graphs, a diamond."""

from __future__ import annotations

import luigi


class Leaf(luigi.Task):
    name = luigi.Parameter(default="leaf")

    def output(self):
        return luigi.LocalTarget(f"/nonexistent/{self.name}")

    def run(self):
        pass


class SelfCycle(luigi.Task):
    def requires(self):
        return self


class PingA(luigi.Task):
    def requires(self):
        return [Leaf(), PingB()]


class PingB(luigi.Task):
    def requires(self):
        return PingA()


class Ring(luigi.Task):
    """Ring(position) -> Ring(position + 1) ... -> Ring(0): a cycle through `size` tasks."""

    position = luigi.IntParameter(default=0)
    size = luigi.IntParameter(default=50)

    def requires(self):
        return Ring(position=(self.position + 1) % self.size, size=self.size)


class Region(luigi.Task):
    """Only region "eu" has a cycle, and only three stages down: Stage 3 -> Stage 1."""

    region = luigi.Parameter()

    def requires(self):
        return Stage(region=self.region, stage=0)


class Stage(luigi.Task):
    region = luigi.Parameter()
    stage = luigi.IntParameter()

    def requires(self):
        if self.stage < 3:
            return Stage(region=self.region, stage=self.stage + 1)
        return Stage(region=self.region, stage=1) if self.region == "eu" else Leaf(name=self.region)


class Diamond(luigi.Task):
    def requires(self):
        return [DiamondLeft(), DiamondRight()]


class DiamondLeft(luigi.Task):
    def requires(self):
        return DiamondBottom()


class DiamondRight(luigi.Task):
    def requires(self):
        return DiamondBottom()


class DiamondBottom(luigi.Task):
    pass


class Broken(luigi.Task):
    def requires(self):
        return [Leaf(), Exploding(), BadParameter()]


class Exploding(luigi.Task):
    def requires(self):
        table = {"a": Leaf()}
        return table["missing-key-in-pipeline-code"]


class BadParameter(luigi.Task):
    def requires(self):
        return Counted(count="not-a-number")


class Counted(luigi.Task):
    count = luigi.IntParameter()


class Upstream(luigi.ExternalTask):
    path = luigi.Parameter()

    def output(self):
        return luigi.LocalTarget(self.path)


class NeedsUpstream(luigi.Task):
    path = luigi.Parameter()

    def requires(self):
        return Upstream(path=self.path)


class Big(luigi.Task):
    """A DAG of `n` tasks: task i requires 2i+1 and 2i+2 (a heap) and, sharing work, 2i+3."""

    i = luigi.IntParameter(default=0)
    n = luigi.IntParameter(default=100_000)

    def requires(self):
        return [Big(i=c, n=self.n) for c in (2 * self.i + 1, 2 * self.i + 2, 2 * self.i + 3) if c < self.n]
