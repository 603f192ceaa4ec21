"""Find pairs of batched LAPACK calls that XLA's CPU runtime may run at the same time.

Above ~2e5 flops per batch, jaxlib's LAPACK kernels (eigh, LU, Cholesky, …) split their batch
over XLA's intra-op thread pool (``ParallelBatchMap``) and block until the pieces finish. Two
such kernels in flight at once can each hold a pool thread while their pieces wait for the
other: with 2 threads, a deadlock (benchmarks/README.md, "A deadlock at 100 tasks"). Two calls
can be in flight at once only if neither depends on the other. This module reads compiled HLO
text (``XLA_FLAGS=--xla_dump_to=DIR --xla_dump_hlo_as_text``, the ``*after_optimizations.txt``
files) and lists, per computation, the pairs of instructions with no data path between them
where each is a batched LAPACK custom call or a loop/call/conditional whose body contains one.
``bayesmtl.inference.solvers.after`` is the fix: it adds a data path.

Batches of any size count, so a pair found on a small problem is reported although it would
only hang once the batches are large.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

_HEADER = re.compile(r"^(ENTRY )?%?([\w.\-]+) .*\{\s*$")
_INSTRUCTION = re.compile(r"^(?:ROOT )?%([\w.\-]+) = (.*)$")
_SUBCOMPUTATION = re.compile(
    r"(?:calls|to_apply|condition|body|branch_computations)=\{?%([\w.\-]+)")
_SHAPE = re.compile(r"\(?\s*\w+\[([\d,]*)\]")


def computations(text: str) -> dict[str, dict[str, str]]:
    """{computation name: {instruction name: its right-hand side}} of one HLO module."""
    comps, current = {}, None
    for line in text.splitlines():
        head = _HEADER.match(line)
        if head and not line.startswith(" "):
            current = comps.setdefault(head.group(2), {})
        elif line.startswith("}"):
            current = None
        elif current is not None:
            ins = _INSTRUCTION.match(line.strip())
            if ins:
                current[ins.group(1)] = ins.group(2)
    return comps


def batched_lapack(rhs: str) -> bool:
    """A LAPACK custom call whose first output has batch dimensions of size > 1."""
    if 'custom_call_target="lapack_' not in rhs:
        return False
    shape = _SHAPE.match(rhs)
    dims = [int(v) for v in shape.group(1).split(",") if v] if shape else []
    return len(dims) > 2 and math.prod(dims[:-2]) > 1


def hazards(comps: dict[str, dict[str, str]]) -> list[tuple[str, str, str]]:
    """(computation, instruction a, instruction b) for every independent pair (module doc) in
    one module's :func:`computations`."""
    memo: dict[str, bool] = {}

    def holds_lapack(name: str, seen: frozenset = frozenset()) -> bool:
        if name not in memo:
            memo[name] = name in comps and name not in seen and any(
                batched_lapack(rhs) or any(holds_lapack(sub, seen | {name})
                                           for sub in _SUBCOMPUTATION.findall(rhs))
                for rhs in comps[name].values())
        return memo[name]

    out = []
    for cname, instrs in comps.items():
        bearing = [n for n, rhs in instrs.items()
                   if batched_lapack(rhs) or (re.search(r"\b(while|conditional|call)\(", rhs)
                                              and any(holds_lapack(s) for s in
                                                      _SUBCOMPUTATION.findall(rhs)))]
        above = _ancestors(instrs, bearing)
        out += [(cname, a, b) for i, a in enumerate(bearing) for b in bearing[i + 1:]
                if a not in above[b] and b not in above[a]]
    return out


def _ancestors(instrs: dict[str, str], names: list[str]) -> dict[str, set]:
    """{name: every instruction it depends on, directly or not} within one computation."""
    deps = {n: {t for t in re.findall(r"%([\w.\-]+)", rhs) if t in instrs and t != n}
            for n, rhs in instrs.items()}
    out = {}
    for n in names:
        seen, stack = set(), list(deps[n])
        while stack:
            k = stack.pop()
            if k not in seen:
                seen.add(k)
                stack.extend(deps[k])
        out[n] = seen
    return out


def moved_in_loops(text: str, shapes: list[tuple[int, ...]],
                   ops: tuple[str, ...] = ("copy", "transpose")) -> list[str]:
    """Instructions ``ops`` (copies and transposes) of an array of one of ``shapes`` (any
    order of the dimensions) inside the loop bodies of one compiled module (HLO text),
    counting the fusions and branches a body calls: the whole-array moves a loop pays in
    every iteration."""
    comps = computations(text)
    inside = {b for instrs in comps.values() for rhs in instrs.values()
              for b in re.findall(r"body=%([\w.\-]+)", rhs)}
    todo = list(inside)
    while todo:
        for rhs in comps[todo.pop()].values():
            for sub in _SUBCOMPUTATION.findall(rhs):
                if sub in comps and sub not in inside:
                    inside.add(sub)
                    todo.append(sub)
    wanted = {tuple(sorted(shape)) for shape in shapes}
    out = []
    for c in sorted(inside):
        for name, rhs in comps[c].items():
            shape = _SHAPE.match(rhs)
            dims = tuple(sorted(int(v) for v in shape.group(1).split(",") if v)) if shape else ()
            if dims in wanted and re.search(rf"\b({'|'.join(ops)})\(", rhs):
                out.append(f"{c}: {describe(text, name)}")
    return out


def describe(text: str, name: str) -> str:
    """The op_name and source line XLA recorded for instruction ``name``."""
    for line in text.splitlines():
        ins = _INSTRUCTION.match(line.strip())
        if ins and ins.group(1) == name:
            op = re.search(r'op_name="([^"]+)"', line)
            src = re.search(r'source_file="([^"]+)" source_line=(\d+)', line)
            where = f"{Path(src.group(1)).name}:{src.group(2)}" if src else "?"
            return f"{name} ({op.group(1)[-80:] if op else '?'} at {where})"
    return name


def scan(folder) -> tuple[int, int, list[str]]:
    """(modules read, batched LAPACK calls seen, hazard descriptions) over a dump folder."""
    modules, calls, found = 0, 0, []
    for path in sorted(Path(folder).glob("*after_optimizations.txt")):
        text = path.read_text()
        modules += 1
        comps = computations(text)
        calls += sum(batched_lapack(rhs) for instrs in comps.values() for rhs in instrs.values())
        for cname, a, b in hazards(comps):
            found.append(f"{path.name}: {cname}: {describe(text, a)} ∥ {describe(text, b)}")
    return modules, calls, found
