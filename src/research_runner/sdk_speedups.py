"""Speed-ups for google-genai's own per-call work, installed by every Gateway (issue 16).

The SDK's Speakeasy-generated layer redoes, on every call, work whose result cannot change within a process:
it builds pydantic classes, reads type annotations and imports its own modules again. Each function here keeps
one such result per process and changes nothing else; `create_request` skips a walk that our requests never
need. Each checks the SDK's shape first and does nothing when a release has changed it, so a newer SDK is
slower, never wrong; `tests/test_gateway.py` fails when a speed-up no longer applies, and
`benchmarks/gateway_cost.py` measures them.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Hashable
from types import ModuleType
from typing import Any

# The SDK's generated packages; those that load names on first use have a module `__getattr__` over a
# `_dynamic_imports` map.
SDK_GENERATED_PACKAGE = "google.genai._gaos"
# The SDK modules that read a request type's annotations on every call (to build its URL and query string).
_TYPE_HINT_READERS = ("url", "queryparams")


def install_sdk_speedups() -> bool:
    """Install every speed-up (idempotent); True when all of them apply to this SDK."""
    # Each is installed whatever the others return: one that a release broke must not keep the rest out.
    applied = [reuse_sdk_model_classes(), reuse_sdk_type_hints(), keep_sdk_lazy_names() > 0]
    return all(applied)


def reuse_sdk_model_classes() -> bool:
    """Make google-genai build each of its (de)serialiser model classes once instead of on every call.

    Its Interactions serialisers call `pydantic.create_model` for every request body and every reply: ~90% of
    a create's CPU (about 15 of 17 ms here; benchmarks/gateway_cost.py measures it). The class depends only
    on the type being (de)serialised, so reusing it changes nothing else. Nothing is done if the SDK no longer
    has that shape; returns True when the serialisers reuse their classes.
    """
    try:
        from google.genai._gaos.utils import serializers
    except ImportError:
        return False
    build = getattr(serializers, "create_model", None)
    if build is None or getattr(build, "reuses_classes", False):
        return build is not None
    setattr(serializers, "create_model", _reusing(build, serializers.__name__))  # noqa: B010 (not exported)
    return True


def _reusing(build: Callable[..., type], serializers_module: str) -> Callable[..., type]:
    classes: dict[Hashable, type] = {}

    def create_model(name: str, /, **fields: Any) -> type:
        config = fields.get("__config__") or {}
        # repr too: typing treats Union[A, B] and Union[B, A] as equal, but pydantic may resolve them differently.
        key = (
            name,
            tuple(sorted((k, v, repr(v)) for k, v in fields.items() if k != "__config__")),
            tuple(sorted(config.items())),
        )
        fields.setdefault("__module__", serializers_module)  # pydantic would name this module instead
        try:
            hash(key)
        except TypeError:  # an unhashable type: build it every time, as the SDK does
            return build(name, **fields)
        if key not in classes:
            classes[key] = build(name, **fields)
        return classes[key]

    create_model.reuses_classes = True  # type: ignore[attr-defined]
    create_model.classes = classes  # type: ignore[attr-defined]
    return create_model


def reuse_sdk_type_hints() -> bool:
    """Make google-genai read each request type's annotations once instead of on every call.

    Building a request's URL and query string calls `typing.get_type_hints` on its parameter class each time,
    which evaluates every string annotation again: ~40% of a poll's CPU in the worker (issue 16; profiled
    with cProfile over poll_many). A class's annotations do not change once it is defined, so keeping them per
    class changes nothing else. Returns True when every reader uses the kept hints.
    """
    done = True
    for name in _TYPE_HINT_READERS:
        try:
            module = importlib.import_module(f"{SDK_GENERATED_PACKAGE}.utils.{name}")
        except ImportError:
            done = False
            continue
        read = getattr(module, "get_type_hints", None)
        if read is None:
            done = False
        elif not getattr(read, "keeps_hints", False):
            setattr(module, "get_type_hints", _keeping_hints(read))  # noqa: B010 (not exported)
    return done


def _keeping_hints(read: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    hints: dict[type, dict[str, Any]] = {}

    def get_type_hints(owner: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if args or kwargs or not isinstance(owner, type):
            return read(owner, *args, **kwargs)
        if owner not in hints:
            hints[owner] = read(owner)
        return dict(hints[owner])  # a copy: a caller that changes it must not change the kept one

    get_type_hints.keeps_hints = True  # type: ignore[attr-defined]
    return get_type_hints


def keep_sdk_lazy_names() -> int:
    """Make google-genai's lazily loaded names stay loaded once used, as a plain import would leave them.

    Its generated packages (`utils`, `types`, ...) resolve a name such as `utils.generate_url` through a module
    `__getattr__` that runs `importlib.import_module` on every access and never stores what it found: about 20
    lookups per API call. Keeping them took 15% off a get's CPU and 23% off a cancel's (issue 16,
    benchmarks/gateway_cost.py). Storing the value in the module on first use means later accesses find it
    without the `__getattr__`. Returns how many SDK packages keep
    their names (0 when the SDK no longer loads names this way).
    """
    kept = 0
    for name, module in list(sys.modules.items()):
        if name.startswith(SDK_GENERATED_PACKAGE) and isinstance(module, ModuleType):
            kept += _keep_names(module)
    return kept


def _keep_names(module: ModuleType) -> bool:
    load = module.__dict__.get("__getattr__")
    if load is None or not isinstance(module.__dict__.get("_dynamic_imports"), dict):
        return False
    if not getattr(load, "keeps_names", False):
        setattr(module, "__getattr__", _keeping_names(module, load))  # noqa: B010 (a module hook, not an attribute)
    return True


def _keeping_names(module: ModuleType, load: Callable[[str], Any]) -> Callable[[str], Any]:
    def __getattr__(name: str) -> Any:
        value = load(name)  # raises AttributeError for an unknown name, which is then not stored
        setattr(module, name, value)
        if isinstance(value, ModuleType) and value.__name__.startswith(SDK_GENERATED_PACKAGE):
            _keep_names(value)  # a subpackage loaded only now
        return value

    __getattr__.keeps_names = True  # type: ignore[attr-defined]
    return __getattr__


def create_request(body: dict[str, Any]) -> Any | None:
    """A create's request (the SDK's `CreateInteractionRequest`), validated by the SDK's own model in one step, to
    pass as `request=`; None if this SDK has no such model (then pass `body` as keyword arguments).

    Given keyword arguments, the SDK first walks every union of the request type to turn tuples and other
    iterables into lists, then validates: 330-430 us a create, against 18-27 us for the validation alone (a
    create costs ~2 ms of CPU). Our bodies hold lists already, and the request is equal either way
    (tests/test_gateway.py).
    """
    try:
        from google.genai._gaos import models
    except ImportError:
        return None
    model = getattr(models, "CreateInteractionRequest", None)
    return None if model is None else model.model_validate({"body": body})
