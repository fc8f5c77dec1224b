"""DataFlow: stages declare the values they read and write, and run in dependency order.

The Origin model's conditioning path (text -> vision -> router/experts -> GNN -> fusion ->
context) is a chain of such stages. Adding a stage (a new encoder, a second reference image)
means registering it with its inputs and outputs; nobody edits a hand-written call order.

    flow = DataFlow()
    flow.register("double", lambda x: {"y": 2 * x}, inputs=("x",), outputs=("y",))
    flow.register("plus_one", lambda y: {"z": y + 1}, inputs=("y",), outputs=("z",))
    flow.run({"x": 3})["z"]  # 7

The registry is guarded by a lock, so stages can be registered while other threads run the
flow (the trainer's sampler and its training step share one model). A run works on its own
dictionary of values and a snapshot of the plan, so concurrent runs never see each other's
values. Registration order breaks ties, which keeps the order deterministic.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping


class DataFlowError(ValueError):
    """A flow that cannot run: a cycle, a value nobody provides, a duplicate name."""


class CycleError(DataFlowError):
    pass


class MissingInputError(DataFlowError):
    pass


@dataclass(frozen=True)
class Stage:
    name: str
    fn: Callable[..., Mapping[str, Any]]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


class DataFlow:
    """A thread-safe registry of stages, run in topological order."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._stages: dict[str, Stage] = {}
        self._producers: dict[str, str] = {}  # value name -> stage name
        self._plans: dict[frozenset[str], tuple[Stage, ...]] = {}

    # Modules holding a DataFlow get deep-copied (EMA weights) and pickled; a lock can be
    # neither, so a copy gets a fresh one. Bound methods in ``fn`` are rebound by deepcopy.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_lock"]
        state["_plans"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    def register(self, name: str, fn: Callable[..., Mapping[str, Any]], *,
                 inputs: Iterable[str], outputs: Iterable[str]) -> None:
        """Add a stage; ``fn(**inputs)`` returns a mapping with every name in ``outputs``."""
        inputs, outputs = tuple(inputs), tuple(outputs)
        if not outputs:
            raise DataFlowError(f"Stage '{name}' must declare at least one output.")
        with self._lock:
            if name in self._stages:
                raise DataFlowError(f"A stage named '{name}' is already registered.")
            for value in outputs:
                if value in self._producers:
                    raise DataFlowError(
                        f"Stage '{name}' outputs '{value}', "
                        f"which stage '{self._producers[value]}' already outputs."
                    )
            self._stages[name] = Stage(name, fn, inputs, outputs)
            self._producers.update({value: name for value in outputs})
            self._plans.clear()

    @property
    def stages(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(self._stages)

    def order(self, given: Iterable[str] = ()) -> tuple[str, ...]:
        """Stage names in the order ``run`` would call them, given these initial value names."""
        return tuple(stage.name for stage in self._plan(frozenset(given)))

    def run(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Run every stage once; returns the initial values plus everything the stages produced."""
        plan = self._plan(frozenset(values))
        out = dict(values)
        for stage in plan:
            produced = stage.fn(**{name: out[name] for name in stage.inputs})
            missing = [name for name in stage.outputs if name not in produced]
            if missing:
                raise DataFlowError(f"Stage '{stage.name}' did not return {', '.join(missing)}.")
            out.update({name: produced[name] for name in stage.outputs})
        return out

    def _plan(self, given: frozenset[str]) -> tuple[Stage, ...]:
        with self._lock:
            plan = self._plans.get(given)
            if plan is None:
                plan = self._plans[given] = self._sort(given)
            return plan

    def _sort(self, given: frozenset[str]) -> tuple[Stage, ...]:
        """Kahn's algorithm over stages; a stage depends on the producer of each of its inputs."""
        clash = sorted(given & set(self._producers))
        if clash:
            raise DataFlowError(f"'{clash[0]}' was given to the run, "
                                f"but stage '{self._producers[clash[0]]}' outputs it.")
        for stage in self._stages.values():
            for value in stage.inputs:
                if value not in given and value not in self._producers:
                    raise MissingInputError(
                        f"Stage '{stage.name}' needs '{value}', "
                        "which no stage outputs and the run was not given."
                    )
        depends = {
            stage.name: {self._producers[v] for v in stage.inputs if v not in given and v in self._producers}
            for stage in self._stages.values()
        }
        done: list[Stage] = []
        placed: set[str] = set()
        while len(done) < len(self._stages):
            ready = [s for s in self._stages.values() if s.name not in placed and depends[s.name] <= placed]
            if not ready:
                stuck = sorted(set(self._stages) - placed)
                raise CycleError(f"Stages {', '.join(stuck)} depend on each other in a cycle.")
            for stage in ready:
                done.append(stage)
                placed.add(stage.name)
        return tuple(done)
