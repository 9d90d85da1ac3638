"""Relations between services: unknown dependencies, cycles, start layers, stop order.

Pure functions over names and `depends_on` pairs; no pydantic, no I/O. `config.py` calls
`problems()` while validating; the supervisor calls `start_layers()`, `stop_order()`,
`dependents()` and `dependencies()` on a validated `spec.Config`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from entrypoint.errors import Problem

MAX_CYCLES = 20           # report at most this many distinct cycles
_CYCLE_SEARCH_STEPS = 200_000   # enumerating cycles is exponential in the worst case


class _Spec(Protocol):
    name: str
    enabled: bool
    depends_on: Sequence[tuple[str, str]]


def label(index: int, name: str) -> str:
    """How a service is named in messages: `services[2] "app"` (0-based, config order)."""
    return f'services[{index}] "{name}"'


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """`did you mean "x"?` for the closest candidate, or "" when none is close."""
    import difflib      # here: only a typo needs it, and the runner imports this module

    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f'did you mean "{close[0]}"?' if close else ""


def problems(services: Sequence[tuple[int, str, Sequence[str]]]) -> list[Problem]:
    """Located problems in the dependencies of `(index, name, dependency names)` triples.

    Unknown dependencies (with a suggestion), self-dependencies, and every distinct cycle,
    printed as a path `a -> b -> c -> a` that starts at the cycle's first service in config
    order. A name used twice counts as the first service with that name.
    """
    first: dict[str, int] = {}
    for index, name, _ in sorted(services, key=lambda s: s[0]):
        first.setdefault(name, index)
    found: list[Problem] = []
    edges: dict[str, list[str]] = {}
    for index, name, deps in sorted(services, key=lambda s: s[0]):
        where = f"{label(index, name)}: depends_on"
        for dep in dict.fromkeys(deps):
            if dep == name:
                found.append(Problem(where, f'"{name}" depends on itself', "remove it from depends_on"))
            elif dep not in first:
                hint = did_you_mean(dep, first) or (
                    f"known services: {_short_list(first)}" if first else "no service has that name")
                found.append(Problem(where, f'unknown service "{dep}"', hint))
        if first[name] == index:
            edges[name] = [d for d in dict.fromkeys(deps) if d in first and d != name]
    for cycle in cycles(edges):
        head = cycle[0]
        path = " -> ".join([*cycle, head])
        found.append(Problem(f"{label(first[head], head)}: depends_on", f"dependency cycle: {path}",
                             "remove one of these dependencies"))
    return found


def cycles(edges: Mapping[str, Sequence[str]], limit: int = MAX_CYCLES) -> list[list[str]]:
    """Every elementary cycle once, as the list of its nodes from its first node in `edges` order.

    Each cycle is found from its earliest node only (a search from `start` visits only later
    nodes), so rotations of the same cycle are not reported twice. Iterative: no recursion limit.
    """
    order = {name: i for i, name in enumerate(edges)}
    found: list[list[str]] = []
    steps = 0
    for start in edges:
        path, on_path = [start], {start}
        stack = [iter(edges[start])]
        while stack:
            steps += 1
            if steps > _CYCLE_SEARCH_STEPS:
                return found
            nxt = next(stack[-1], None)
            if nxt is None:
                stack.pop()
                on_path.discard(path.pop())
            elif nxt == start:
                found.append(list(path))
                if len(found) >= limit:
                    return found
            elif nxt not in on_path and order.get(nxt, -1) > order[start]:
                path.append(nxt)
                on_path.add(nxt)
                stack.append(iter(edges.get(nxt, ())))
    return found


def start_layers(specs: Sequence[_Spec]) -> list[list[str]]:
    """Enabled services in layers: every dependency of a service is in an earlier layer.

    Services of one layer can start in parallel; within a layer, config order is kept.
    Dependencies on disabled or unknown services are ignored (validation rejects them).
    Raises ValueError on a cycle, which a validated config does not have.
    """
    enabled = [s for s in specs if s.enabled]
    names = {s.name for s in enabled}
    deps = {s.name: {d for d, _ in s.depends_on if d in names and d != s.name} for s in enabled}
    remaining = list(dict.fromkeys(s.name for s in enabled))
    placed: set[str] = set()
    layers: list[list[str]] = []
    while remaining:
        layer = [n for n in remaining if deps[n] <= placed]
        if not layer:
            raise ValueError(f"dependency cycle among: {', '.join(remaining)}")
        layers.append(layer)
        placed.update(layer)
        remaining = [n for n in remaining if n not in placed]
    return layers


def stop_order(specs: Sequence[_Spec]) -> list[list[str]]:
    """The start layers reversed: a service stops only after everything that depends on it."""
    return [list(layer) for layer in reversed(start_layers(specs))]


def dependencies(specs: Sequence[_Spec], name: str) -> set[str]:
    """Every service `name` depends on, directly or transitively (not `name` itself)."""
    forward = {s.name: [d for d, _ in s.depends_on] for s in specs}
    return _reach(forward, name)


def dependents(specs: Sequence[_Spec], name: str) -> set[str]:
    """Every service that depends on `name`, directly or transitively (not `name` itself)."""
    backward: dict[str, list[str]] = {}
    for s in specs:
        for d, _ in s.depends_on:
            backward.setdefault(d, []).append(s.name)
    return _reach(backward, name)


def _reach(edges: Mapping[str, Sequence[str]], name: str) -> set[str]:
    seen: set[str] = set()
    todo = list(edges.get(name, ()))
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo.extend(edges.get(n, ()))
    seen.discard(name)
    return seen


def _short_list(names: Iterable[str], most: int = 8) -> str:
    names = list(names)
    text = ", ".join(names[:most])
    return text + (f", ... ({len(names)} in all)" if len(names) > most else "")
