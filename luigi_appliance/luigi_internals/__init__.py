"""The only place that reaches into luigi's private API.

Luigi offers no public interface for what the appliance needs from it: the scheduler's task
records and state tuple, the hook get_work asks before handing out a task, the status change
that also reaches the task history, the routes of its Tornado app, the RPC client's fetcher and
retries, the worker's command-line entry point. Every such name is used here and nowhere else
in the package, and each is listed in ``seams.SEAMS`` so that tests/unit/test_luigi_boundary.py
shows what a luigi upgrade moved.
"""
