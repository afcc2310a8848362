"""Tasks for tests/system/test_approvals_pipeline.py: gated families with ungated dependencies.

Each task writes one file under ``out_dir`` named after itself, so a test sees from the file
system alone what ran. Which families are gated is the scheduler's configuration, not theirs.
"""

from __future__ import annotations

from pathlib import Path

import luigi


class _Writes(luigi.Task):
    out_dir = luigi.Parameter()

    def file_name(self) -> str:
        raise NotImplementedError

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(Path(self.out_dir) / self.file_name()))

    def run(self) -> None:
        with self.output().open("w") as out:
            out.write(f"{self.task_id}\n")


class Prepare(_Writes):
    """Never gated: runs while the task that needs it waits for approval."""

    name = luigi.Parameter()

    def file_name(self) -> str:
        return f"prepare-{self.name}"


class Deploy(_Writes):
    name = luigi.Parameter()

    def requires(self) -> Prepare:
        return Prepare(out_dir=self.out_dir, name=f"deploy-{self.name}")

    def file_name(self) -> str:
        return f"deploy-{self.name}"


class Release(_Writes):
    env = luigi.Parameter()
    tag = luigi.Parameter()

    def requires(self) -> Prepare:
        return Prepare(out_dir=self.out_dir, name=f"release-{self.tag}")

    def file_name(self) -> str:
        return f"release-{self.env}-{self.tag}"


class Releases(_Writes):
    """Two releases of the same family that differ only in ``tag``."""

    env = luigi.Parameter()
    first = luigi.Parameter()
    second = luigi.Parameter()

    def requires(self) -> list[Release]:
        return [Release(out_dir=self.out_dir, env=self.env, tag=tag) for tag in (self.first, self.second)]

    def file_name(self) -> str:
        return f"releases-{self.env}-{self.first}-{self.second}"


class Expiring(_Writes):
    name = luigi.Parameter()

    def requires(self) -> Prepare:
        return Prepare(out_dir=self.out_dir, name=f"expiring-{self.name}")

    def file_name(self) -> str:
        return f"expiring-{self.name}"


class Flaky(_Writes):
    """Fails until the file ``flaky-may-succeed`` exists in ``out_dir``."""

    def file_name(self) -> str:
        return "flaky"

    def run(self) -> None:
        if not (Path(self.out_dir) / "flaky-may-succeed").exists():
            raise RuntimeError("Flaky failed on purpose")
        super().run()
