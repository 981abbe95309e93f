"""The exception tree: every exception batchtunnel defines descends from TunnelError and is drawn in the
one docstring that shows the tree (batchtunnel.wire.exceptions)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

from batchtunnel.wire import TunnelError, exceptions

# The installed subpackages (in a checkout, batchtunnel.__path__ also holds tests/ and bench/).
PACKAGES = ("wire", "session", "broker", "agent", "client", "certs", "spawner", "cli")


def _our_exceptions() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    names = [f"batchtunnel.{package}" for package in PACKAGES]
    for package in list(names):
        path = importlib.import_module(package).__path__
        names += [info.name for info in pkgutil.walk_packages(path, package + ".")]
    for module_name in names:
        if module_name.endswith("__main__"):
            continue
        module = importlib.import_module(module_name)
        for name, value in vars(module).items():
            if (inspect.isclass(value) and issubclass(value, BaseException)
                    and value.__module__.startswith("batchtunnel.")):
                found[f"{value.__module__}.{name}"] = value
    return found


def test_every_exception_is_in_the_tree() -> None:
    ours = _our_exceptions()
    assert len(ours) >= 15, sorted(ours)  # the walk really found them
    outside = [name for name, cls in ours.items() if not issubclass(cls, TunnelError)]
    assert outside == []


def test_the_tree_is_drawn_once_with_every_class() -> None:
    drawing = exceptions.__doc__ or ""
    undrawn = [cls.__name__ for cls in set(_our_exceptions().values()) if f" {cls.__name__} " not in drawing]
    assert undrawn == []
