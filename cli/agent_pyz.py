"""Building batchtunnel-agent.pyz (``batchtunnel agent-pyz``, cli/cmd_agent_pyz.py): this
installation's agent modules and websockets' pure-Python part, as one zipapp."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import shutil
import tempfile
import zipapp
from pathlib import Path

from .. import __version__

AGENT_FLOOR = (3, 9)
"""The oldest Python the agent's own modules run on (tests/agent_pyz run them on Debian 11's 3.9)."""
PARTS = ("wire", "session", "agent", "cli")
CERT_FILES = ("__init__.py", "fingerprint.py")  # the rest of certs/ needs the cryptography package

MAIN = '''\
"""batchtunnel {version}: the agent, as one file (built by `batchtunnel agent-pyz`)."""
import sys

if sys.version_info < {floor!r}:
    sys.exit("batchtunnel-agent.pyz needs Python {floor_text} or newer; this is " + sys.version.split()[0])
if sys.argv[1:] == ["--version"]:
    sys.exit(print("batchtunnel-agent.pyz {version} (websockets {websockets})"))
from batchtunnel.cli.main import main

sys.exit(main(["agent", *sys.argv[1:]]))
'''


def build(output: Path, websockets_dir: str | None, interpreter: str) -> tuple[tuple[int, int], str]:
    """Write the zipapp; returns the oldest Python it runs on and the bundled websockets' version."""
    from ..wire import ConfigurationError

    package = Path(__file__).resolve().parent.parent  # batchtunnel's own directory
    websockets, metadata, license_text = _find_websockets(websockets_dir)
    version = _field(metadata, "Version") or "unknown"
    floor = max(AGENT_FLOOR, _requires_python(_field(metadata, "Requires-Python")))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "app"
        target = root / "batchtunnel"
        target.mkdir(parents=True)
        shutil.copy2(package / "__init__.py", target / "__init__.py")
        for part in PARTS:
            (target / part).mkdir()
            for source in (package / part).glob("*.py"):
                shutil.copy2(source, target / part / source.name)
        (target / "certs").mkdir()
        for name in CERT_FILES:
            shutil.copy2(package / "certs" / name, target / "certs" / name)
        for source in websockets.rglob("*.py"):
            destination = root / "websockets" / source.relative_to(websockets)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)
        if license_text:
            (root / "websockets" / "LICENSE").write_text(license_text, encoding="utf-8")
        (root / "__main__.py").write_text(MAIN.format(version=__version__, floor=floor, websockets=version,
                                                      floor_text=".".join(map(str, floor))), encoding="utf-8")
        try:
            zipapp.create_archive(root, output, interpreter=interpreter, compressed=True)
        except OSError as exc:
            raise ConfigurationError(f"cannot write {output}: {exc.strerror or exc}") from None
    return floor, version


def _find_websockets(directory: str | None) -> tuple[Path, str, str]:
    """The websockets package directory, its METADATA and its license text (BSD-3-Clause: it travels
    with the code); "" for what is not found."""
    from ..wire import ConfigurationError

    if directory:
        package = Path(directory) / "websockets"
        if not (package / "__init__.py").is_file():
            raise ConfigurationError(f"--websockets: {directory} holds no websockets package (pip install --target "
                                     f"{directory} websockets)")
        info = next(iter(sorted(Path(directory).glob("websockets-*.dist-info"))), None)
        metadata = info / "METADATA" if info else None
        license_file = next(iter(sorted(info.glob("**/LICENSE*"))), None) if info else None
        return (package, metadata.read_text(encoding="utf-8") if metadata and metadata.is_file() else "",
                license_file.read_text(encoding="utf-8") if license_file else "")
    spec = importlib.util.find_spec("websockets")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError("websockets is not installed here: install it, or give --websockets DIR")
    package = Path(next(iter(spec.submodule_search_locations)))
    try:
        distribution = importlib.metadata.distribution("websockets")
    except importlib.metadata.PackageNotFoundError:
        return package, "", ""
    installed = next((f for f in distribution.files or [] if Path(str(f)).name.startswith("LICENSE")), None)
    return (package, distribution.read_text("METADATA") or "",
            Path(str(installed.locate())).read_text(encoding="utf-8") if installed else "")


def _field(metadata: str, name: str) -> str:
    found = re.search(rf"^{name}: *(.+)$", metadata, re.MULTILINE)
    return found.group(1).strip() if found else ""


def _requires_python(spec: str) -> tuple[int, int]:
    """The floor of a ``>=3.x`` specifier ((3, 0) when there is none to read)."""
    found = re.search(r">=\s*3\.(\d+)", spec)
    return (3, int(found.group(1))) if found else (3, 0)
