"""Dependencies as a library declares them: ranges, not pins; the tested set in constraints.txt; the known broken
transformers/PEFT pair refused in one line; the one private Accelerate call train() makes still behaves."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import ROOT
from turkclip.errors import TurkclipError
from turkclip.roads.versions import check_pair

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
CORE = [Requirement(r) for r in PROJECT["dependencies"]]
EXTRAS = {name: [Requirement(r) for r in reqs if not r.startswith("turkclip")]
          for name, reqs in PROJECT["optional-dependencies"].items()}


def _installed(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def test_requirements_are_ranges_that_the_installed_packages_satisfy():
    """Installing turkclip beside packages inside its ranges changes none of them: the ranges hold what is here."""
    every = CORE + [r for reqs in EXTRAS.values() for r in reqs]
    pinned = [str(r) for r in every if any(s.operator in ("==", "===") for s in r.specifier)]
    assert not pinned, f"exact pins force versions onto a user's environment: {pinned}"
    for req in CORE:  # the core must be installed; an extra only where someone installed it
        assert _installed(req.name) is not None, f"{req.name} is a core dependency but not installed"
    for req in every:
        version = _installed(req.name)
        if version is not None:
            assert req.specifier.contains(version, prereleases=True), f"installed {req.name} {version} is outside {req}"


def test_every_imported_package_is_declared():
    """A package imported anywhere under src/ is the project's own, the standard library's, or declared."""
    declared = {canonicalize_name(r.name) for r in CORE + [r for reqs in EXTRAS.values() for r in reqs]}
    import_names = {"PIL": "pillow", "faiss": "faiss-cpu", "multipart": "python-multipart"}
    found = set()
    for path in (ROOT / "src").rglob("*.py"):
        for line in path.read_text(encoding="utf-8").splitlines():
            words = line.strip().split()
            if len(words) >= 2 and words[0] in ("import", "from") and not words[1].startswith("."):
                found.add(words[1].split(".")[0].rstrip(","))
    third_party = {n for n in found - set(sys.stdlib_module_names) - {"turkclip", "turkclip_train", "a"}}
    missing = {n for n in third_party if canonicalize_name(import_names.get(n, n)) not in declared}
    assert not missing, f"imported but not declared in pyproject.toml: {sorted(missing)}"


def test_the_constraints_file_is_inside_the_declared_ranges():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            req = Requirement(line)
            (spec,) = req.specifier
            pins[canonicalize_name(req.name)] = spec.version
    for req in CORE + [r for reqs in EXTRAS.values() for r in reqs]:
        assert canonicalize_name(req.name) in pins, f"{req.name} has no tested version in constraints.txt"
        pin = pins[canonicalize_name(req.name)]
        assert req.specifier.contains(pin), f"constraints.txt pins {req.name} {pin}, outside {req}"
    for where in (ROOT / ".ci" / "run", ROOT / "README.md"):
        assert "-c constraints.txt" in where.read_text(), f"{where.name} installs without the tested set"


def test_the_known_broken_pair_is_refused_in_one_line():
    check_pair("5.23.0", "0.21.2")  # the tested pair
    check_pair("5.24.0", "0.22.0")  # the fix, once released
    with pytest.raises(TurkclipError) as refused:
        check_pair("5.24.1", "0.21.2")
    message = str(refused.value)
    assert "\n" not in message and "transformers 5.24.1" in message and "PEFT 0.21.2" in message and "0.22" in message


def test_the_lora_road_refuses_a_forced_broken_pair_when_it_loads():
    """A user who forced transformers 5.24 beside PEFT 0.21 hears it when the LoRA road is imported."""
    code = ("import importlib.metadata as m; real = m.version\n"
            "m.version = lambda name: {'transformers': '5.24.0', 'peft': '0.21.2'}.get(name) or real(name)\n"
            "from turkclip.errors import TurkclipError\n"
            "try:\n    import turkclip.roads.adapters\nexcept TurkclipError as e:\n    print('refused:', e)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("refused: transformers 5.24.0 needs PEFT >= 0.22"), done.stdout


def test_accelerate_state_reset_still_lets_a_second_run_choose_its_precision():
    """train() calls `AcceleratorState._reset_state()` (Accelerate has no public way: its own tests and transformers'
    Trainer call the same) so that a second run in one process may use another precision. This fails first when
    Accelerate changes that."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    assert Accelerator(cpu=True, mixed_precision="no").mixed_precision == "no"
    with pytest.raises(ValueError):  # without the reset another precision is refused ...
        Accelerator(cpu=True, mixed_precision="bf16")
    AcceleratorState._reset_state()  # ... and with it, taken
    assert Accelerator(cpu=True, mixed_precision="bf16").mixed_precision == "bf16"
    AcceleratorState._reset_state()


def test_curves_are_skipped_with_one_line_when_matplotlib_is_absent(tmp_path, monkeypatch, capsys):
    import importlib.util

    from turkclip_train.logs import plot_curves

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    plot_curves({"train": [{"kind": "train", "step": 1, "loss": 1.0}]}, tmp_path / "curves.png")
    assert not (tmp_path / "curves.png").exists()
    assert capsys.readouterr().err.splitlines() == ["curves.png skipped: matplotlib is not installed"
                                                    " (pip install 'turkclip[plot]')"]
