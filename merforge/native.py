"""Compiled builds of merforge's hot pure-Python modules, used only while they match the source.

The judge's claim checks and the aggregation's tabulation are Python loops over hundreds of
thousands of records. Cython compiles those same .py files, unchanged, into C extension
modules; with annotation typing off they mean exactly what they mean in Python (no C
types, Python arithmetic and formatting), only with less interpreter work per line. The
judge runs about 30% faster compiled (benchmarks/aggregate_bench.py).

A build lives beside its package, in a folder named by the source it was compiled from:

    agents/_native/judge-<digest>/judge.cpython-311-x86_64-linux-gnu.so

where digest is a hash of judge.py (and of BUILD_VERSION). `use_compiled`, called from the
package's __init__, puts every build folder whose digest matches its module's current
source first on the package's __path__, so `import merforge.agents.judge` loads the
compiled module, under its own name. A source edited since its build matches no folder and
imports as plain Python until `python -m merforge.native` builds it again (scripts/setup.sh
does, so `make test` and `make demo` always run fresh builds). MERFORGE_PURE_PYTHON=1 turns
the builds off. Without a C compiler or Cython, nothing is built and everything runs as
Python.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

# package -> its modules that are compiled
COMPILED: dict[str, tuple[str, ...]] = {"merforge.agents": ("judge", "aggregate")}
NATIVE_DIR = "_native"
BUILD_VERSION = "1"  # part of every digest: bump it when the directives below change
DIRECTIVES = {"language_level": 3, "annotation_typing": False, "binding": True}
PURE_ENV = "MERFORGE_PURE_PYTHON"


def source_digest(source: Path) -> str:
    """16 hex digits naming a build of `source`: its bytes and BUILD_VERSION."""
    digest = hashlib.sha256(BUILD_VERSION.encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()[:16]


def _suffix() -> str:
    return EXTENSION_SUFFIXES[0]  # e.g. .cpython-311-x86_64-linux-gnu.so: this interpreter's ABI


def build_folder(package_dir: Path, module: str) -> Path:
    """Where the build of `module` (package_dir/module.py as it is now) lives."""
    return package_dir / NATIVE_DIR / f"{module}-{source_digest(package_dir / f'{module}.py')}"


def pure_python() -> bool:
    return os.environ.get(PURE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def use_compiled(package: str, path: list[str], modules: tuple[str, ...] | None = None) -> list[str]:
    """Put the build folder of each of `package`'s compiled modules first on `path` (the
    package's __path__) where a build of the module's current source exists. Returns the
    modules that will load compiled."""
    if pure_python() or not path:
        return []
    modules = COMPILED.get(package, ()) if modules is None else modules
    package_dir = Path(path[-1])  # the source folder (build folders are put before it)
    used = []
    for module in modules:
        try:
            folder = build_folder(package_dir, module)
        except OSError:
            continue
        if (folder / f"{module}{_suffix()}").is_file():
            if str(folder) not in path:
                path.insert(0, str(folder))
            used.append(module)
    return used


def describe() -> str:
    """One line: which hot modules run compiled, which as Python and why."""
    import importlib

    parts = []
    for package, modules in COMPILED.items():
        for module in modules:
            loaded = importlib.import_module(f"{package}.{module}")
            if str(getattr(loaded, "__file__", "")).endswith(_suffix()):
                parts.append(f"{module} compiled")
            elif pure_python():
                parts.append(f"{module} Python ({PURE_ENV} is set)")
            else:
                parts.append(f"{module} Python (no build of this source: python -m merforge.native)")
    return ", ".join(parts)


# -- building -----------------------------------------------------------------------------


def build_module(package_dir: Path, package: str, module: str, force: bool = False) -> tuple[Path, bool]:
    """Compile package_dir/module.py into its build folder (replacing builds of earlier
    sources). Returns (folder, whether it was built now); raises RuntimeError with the
    compiler's complaint when the build fails."""
    folder = build_folder(package_dir, module)
    target = folder / f"{module}{_suffix()}"
    native = package_dir / NATIVE_DIR
    if target.is_file() and not force:
        return folder, False
    try:
        from Cython.Build import cythonize
        from setuptools import Distribution, Extension
    except ImportError as exc:
        raise RuntimeError(f"Cython and setuptools are needed to build compiled modules: {exc}") from exc
    native.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{module}-", dir=native) as tmp:
        work = Path(tmp)
        source = package_dir / f"{module}.py"  # compiled in place (tracebacks name it); the C goes to work/c
        extension = Extension(f"{package}.{module}", [str(source)], extra_compile_args=["-O2"])
        try:
            extensions = cythonize([extension], compiler_directives=DIRECTIVES, quiet=True, force=True,
                                   build_dir=str(work / "c"))
            distribution = Distribution({"ext_modules": extensions, "script_name": "merforge-native"})
            command = distribution.get_command_obj("build_ext")
            command.build_lib = str(work / "lib")
            command.build_temp = str(work / "temp")
            command.ensure_finalized()
            command.run()
        except (Exception, SystemExit) as exc:  # distutils reports compiler failures as SystemExit
            raise RuntimeError(f"building {package}.{module} failed: {exc}") from exc
        built = work / "lib" / Path(*package.split(".")) / f"{module}{_suffix()}"
        if not built.is_file():
            raise RuntimeError(f"building {package}.{module} made no {built.name}")
        staged = work / "folder"
        staged.mkdir()
        shutil.move(str(built), staged / target.name)
        (staged / "SOURCE").write_text(f"{package}.{module} from {module}.py, digest {folder.name.rsplit('-', 1)[1]}\n")
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
        try:
            staged.rename(folder)  # whole or not at all: a folder is only ever seen complete
        except OSError:
            if not target.is_file():  # not a build that finished beside this one (two setups at once)
                raise RuntimeError(f"could not put the build of {package}.{module} in {folder}") from None
    for old in native.glob(f"{module}-*"):
        if old != folder and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    return folder, True


def _package_dir(package: str) -> Path:
    import importlib

    path = list(importlib.import_module(package).__path__)
    return Path(path[-1])


def build(force: bool = False, quiet: bool = False) -> int:
    """Build every module in COMPILED whose current source has no build. Returns how many
    failed (each failure is reported; those modules run as Python)."""
    failed = 0
    for package, modules in COMPILED.items():
        package_dir = _package_dir(package)
        for module in modules:
            started = time.perf_counter()
            try:
                folder, made = build_module(package_dir, package, module, force=force)
            except RuntimeError as exc:
                failed += 1
                print(f"merforge: {exc}; {package}.{module} runs as Python", file=sys.stderr)
                continue
            if made and not quiet:
                print(f"compiled {package}.{module} in {time.perf_counter() - started:.0f} s "
                      f"({folder.relative_to(package_dir)})")
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m merforge.native",
        description="Compile merforge's hot modules (the judge, the aggregation) with Cython. Builds are "
                    "keyed by their source: an edited module runs as Python until built again. "
                    f"{PURE_ENV}=1 runs everything as Python.")
    parser.add_argument("--force", action="store_true", help="rebuild even where a build of the source exists")
    parser.add_argument("--quiet", action="store_true", help="say nothing unless a build fails")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a build fails (default: warn)")
    args = parser.parse_args(argv)
    failed = build(force=args.force, quiet=args.quiet)
    return 1 if failed and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
