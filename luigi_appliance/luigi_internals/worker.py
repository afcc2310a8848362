"""luigi's worker side from the inside: its RPC client's fetcher and retries, its entry point."""

from __future__ import annotations

from typing import Any

import luigi.interface
import luigi.rpc
import tenacity
from luigi.cmdline_parser import CmdlineParser

# What luigi's run() asks for the worker's scheduler client (luigi.interface.build() takes one).
LuigiSchedulerFactory = luigi.interface._WorkerSchedulerFactory


class ConfiguredRemoteScheduler(luigi.rpc.RemoteScheduler):
    """luigi's RemoteScheduler with the fetcher, the retries and the errors never retried given
    here, instead of read from luigi's [core] configuration."""

    def __init__(self, url: str, connect_timeout: float, fetcher: luigi.rpc.RequestsFetcher,
                 retry_attempts: int, retry_wait: float, never_retry: type[BaseException]):
        super().__init__(url=url, connect_timeout=connect_timeout)
        self._rpc_retry_attempts = retry_attempts
        self._rpc_retry_wait = retry_wait
        self._fetcher = fetcher
        self._never_retry = never_retry

    def _get_retryer(self) -> tenacity.Retrying:
        return super()._get_retryer().copy(retry=tenacity.retry_if_not_exception_type(self._never_retry))


def run_luigi(luigi_args: list[str], factory: Any) -> Any:
    """Run luigi's command line (as ``luigi`` does) with ``factory``; its LuigiRunResult."""
    return luigi.interface._run(luigi_args, worker_scheduler_factory=factory)


def root_task_class(parser: CmdlineParser) -> Any:
    """The class of the task named on ``parser``'s command line (before its parameters parse)."""
    return parser._get_task_cls()
