"""Throwaway plugins that misbehave on purpose, registered from outside the package through the
same entry-point group as the built-ins (see the .dist-info beside this file)."""

from __future__ import annotations

import os
import time
from typing import Any

from infer_opt.core.params import Param
from infer_opt.core.plugin import Metric, Plugin
from infer_opt.core.settings import Settings


class Raises(Plugin):
    name = "test-raise"
    summary = "raises while loading"

    def apply(self, settings: Settings) -> None:
        def boom(model: Any, s: Settings) -> Any:
            raise RuntimeError("deliberate failure\nwith a second line")

        settings.model_transforms.append(boom)


class Crashes(Plugin):
    name = "test-crash"
    summary = "kills its own process"

    def apply(self, settings: Settings) -> None:
        def die(model: Any, s: Settings) -> Any:
            os._exit(3)

        settings.model_transforms.append(die)


class Hangs(Plugin):
    name = "test-hang"
    summary = "never finishes"

    def apply(self, settings: Settings) -> None:
        def hang(model: Any, s: Settings) -> Any:
            time.sleep(3600)
            return model

        settings.model_transforms.append(hang)


class NeedsMissingPackage(Plugin):
    name = "test-missing"
    summary = "needs a package nobody has"
    requires_packages = ("surely_not_installed_pkg",)

    def apply(self, settings: Settings) -> None:
        settings.notes.append("unreachable")


class WritesDtypeDirectly(Plugin):
    """Assigns a Settings field instead of claiming it with `set`: refused while it applies."""

    name = "test-direct-dtype"
    summary = "writes settings.dtype directly"

    def apply(self, settings: Settings) -> None:
        settings.dtype = "bfloat16"


class ChangesNothing(Plugin):
    """Only adds a note: a row named for it would measure nothing it did."""

    name = "test-noop"
    summary = "changes nothing the engine reads"
    engines = ("torch", "ort")

    def apply(self, settings: Settings) -> None:
        settings.notes.append("test-noop: nothing")


class Slows(Plugin):
    """Adds `pct` % to every forward step (prefill and each decode step): a known regression."""

    name = "test-slow"
    summary = "busy-waits pct % of each measured step: a deliberate regression for compare"
    engines = ("torch", "ort")  # a step wrapper: every engine with a step API applies it
    params = (Param("pct", float, 15.0, "% added to each step's own time", minimum=0.0),)

    def apply(self, settings: Settings) -> None:
        extra = self.values["pct"] / 100.0

        def wrap(step: Any, s: Settings) -> Any:
            def slowed(*args: Any, **kwargs: Any) -> Any:
                t0 = time.perf_counter()
                out = step(*args, **kwargs)  # CPU: the logits are ready when it returns
                until = time.perf_counter() + extra * (time.perf_counter() - t0)
                while time.perf_counter() < until:  # spin: sleep() is too coarse for ~0.1 ms
                    pass
                return out

            return slowed

        settings.step_wrappers.append(wrap)
        settings.notes.append(f"test-slow: +{extra:.0%} per step")


class TransformOnAnyEngine(Plugin):
    """Declares two engines but edits the torch model: the ort engine must refuse the stack."""

    name = "test-transform"
    summary = "a model transform that claims to work on ort"
    engines = ("torch", "ort")

    def apply(self, settings: Settings) -> None:
        settings.model_transforms.append(lambda model, s: model)


class BadOption(Plugin):
    """Sets an engine option the engine does not declare: refused before anything runs."""

    name = "test-bad-option"
    summary = "sets a misspelt engine option"
    engines = ("ort",)

    def apply(self, settings: Settings) -> None:
        settings.set_option("turbo", True, by=self.name)


class CountsSteps(Plugin):
    """A step wrapper with a metric column of its own: every forward step of the decode loop
    (static batches and online policies alike) must go through it."""

    name = "test-count"
    summary = "counts forward steps into its own metric column"
    engines = ("torch", "ort")
    metrics = (Metric("test_forward_steps", "lower", "forward steps, warm-up included"),)

    def apply(self, settings: Settings) -> None:
        def wrap(step: Any, s: Settings) -> Any:
            def counted(inp: Any) -> Any:
                s.metrics["test_forward_steps"] = s.metrics.get("test_forward_steps", 0) + 1
                return step(inp)

            return counted

        settings.step_wrappers.append(wrap)


class CrashesInTimedRuns(Plugin):
    """Loads and warms up fine, then kills its process in a timed run: the other variants of
    its interleaved group must go on."""

    name = "test-crash-late"
    summary = "dies on its 12th forward step"

    def apply(self, settings: Settings) -> None:
        calls = [0]

        def wrap(step: Any, s: Settings) -> Any:
            def maybe_die(inp: Any) -> Any:
                calls[0] += 1
                if calls[0] >= 12:
                    os._exit(7)
                return step(inp)

            return maybe_die

        settings.step_wrappers.append(wrap)


class EnvEngine:
    """An engine that lives in an environment of its own (here: whatever Python
    $INFER_OPT_PYTHON_TEST_ENV names); otherwise the torch engine with a KV cache."""

    from infer_opt.engines.torch.engine import TorchEngine as _Base

    class Engine(_Base):
        name = "test-env"
        summary = "the torch engine, run under another environment's Python"
        environment = ".venv-test-env"
        kv_caches = ("dynamic",)

        @classmethod
        def defaults(cls, settings: Settings) -> None:
            settings.set("kv_cache", "dynamic", by=cls.name)

        def __init__(self, ref: Any, settings: Settings) -> None:
            super().__init__(ref, settings)
            mark = os.environ.get("INFER_OPT_TEST_ENV_MARK", "no")
            settings.notes.append(f"worker started by the test environment: {mark}")
