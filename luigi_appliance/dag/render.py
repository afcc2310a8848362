"""The dag check report as text (summary, problems, tree), JSON or Graphviz DOT."""

from __future__ import annotations

import json

from luigi_appliance.dag.check import DagReport, as_dict


def render_summary(report: DagReport) -> str:
    return (f"{len(report.nodes)} tasks, depth {report.depth}, widest level {report.widest_level} "
            f"with {report.widest} tasks; {len(report.errors)} error(s), {len(report.warnings)} warning(s)")


def render_problems(report: DagReport) -> str:
    lines = []
    for p in report.problems:
        lines.append(f"{p.severity.upper()}: {p.kind}: {p.subject}: {p.message}")
        if p.detail:
            lines.extend("    " + line for line in p.detail.rstrip().splitlines())
    return "\n".join(lines)


def render_tree(report: DagReport) -> str:
    """Each task (as luigi prints it) once in full; a task met again is printed as "(see above)",
    an edge that closes a cycle as "(CYCLE)". Iterative, so deep graphs print without recursion
    limits."""
    lines: list[str] = []
    printed: set[str] = set()
    stack: list[tuple[str, int, str | None]] = [(report.root_id, 0, None)]
    while stack:
        task_id, depth, parent = stack.pop()
        indent = "  " * depth
        name = report.name(task_id)
        if parent is not None and report.in_cycle(parent, task_id) and task_id in printed:
            lines.append(f"{indent}- {name}  (CYCLE)")
            continue
        if task_id in printed:
            lines.append(f"{indent}- {name}  (see above)")
            continue
        printed.add(task_id)
        node = report.nodes.get(task_id)
        marker = "  [external]" if node is not None and node.external else ""
        marker += "  [complete]" if node is not None and node.complete else ""
        lines.append(f"{indent}- {name}{marker}")
        if node is not None:
            stack.extend((dep, depth + 1, task_id) for dep in reversed(node.deps))
    return "\n".join(lines)


def render_text(report: DagReport) -> str:
    parts = [render_summary(report)]
    if report.problems:
        parts.append(render_problems(report))
    parts.append(render_tree(report))
    return "\n\n".join(parts) + "\n"


def _dot_id(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid DOT quoted ID


def render_dot(report: DagReport) -> str:
    bad = {p.task_id for p in report.errors}
    lines = ["digraph pipeline {", "  rankdir=LR;", "  node [shape=box, fontsize=10];"]
    for node in report.nodes.values():
        attrs = [f"label={_dot_id(report.name(node.task_id))}"]
        if node.task_id in report.component or node.task_id in bad:
            attrs.append("color=red")
        if node.external:
            attrs.append("style=dashed")
        lines.append(f"  {_dot_id(node.task_id)} [{', '.join(attrs)}];")
    for node in report.nodes.values():
        for dep in node.deps:
            style = " [color=red, penwidth=2]" if report.in_cycle(node.task_id, dep) else ""
            lines.append(f"  {_dot_id(node.task_id)} -> {_dot_id(dep)}{style};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_json(report: DagReport) -> str:
    return json.dumps(as_dict(report), indent=2) + "\n"


RENDERERS = {"text": render_text, "json": render_json, "dot": render_dot}
