"""Floors, a pytest plugin (registered in tests/conftest.py): every test is marked by what it does,
found from its code, not by a time measured once.

- `process`: starts a process: its own, or through a fixture or helper it uses (`miner` on the command
  line, a node, Bitcoin Core, a compile in a child);
- `compile`: builds a kernel in the test's own process (numba, NVRTC) or waits for the compile lane;
- `integration`: neither, but talks over sockets (an in-process server, a client on 127.0.0.1);
- `unit`: none of these: objects and files only.

`slow` is kept as the name of `process or compile`, so `-m "not slow"` (the quick subset, mutmut's
selection) means what it did, now by what a test does.

How a test is read: the code of the test function, of every fixture it uses, and of every function
and class it reaches in tests/ (test modules and `support`), name by name, following each name to
the object it is bound to. Product code is not read (it is what the tests check), but a few of its
modules are known to start processes or build kernels (`PROCESS_MODULES`, `COMPILE_MODULES`). A
marker written on a test adds to what is found; it never takes a floor away.

The finding is checked while the tests run: an audit hook sees every process a test starts and every
socket it binds or connects, and numba reports every kernel it compiles or loads; a test that does
more than its floors say fails, naming the marker it needs (write it on the test)."""

from __future__ import annotations

import dis
import inspect
import sys
import threading
import types
from pathlib import Path

import pytest

FLOORS = ("process", "compile", "integration", "unit")

# Names that, read in a test's code or in code it reaches, mean what follows.
PROCESS_NAMES = frozenset({"subprocess", "Popen", "multiprocessing", "ProcessPoolExecutor", "fork", "posix_spawn",
                           "create_subprocess_exec", "create_subprocess_shell", "spawnv", "execv", "execvp"})
COMPILE_NAMES = frozenset({"numba", "njit", "RawModule", "nvrtc", "cupy_backends"})
SOCKET_NAMES = frozenset({"socket", "create_connection", "open_connection", "start_server", "create_server",
                          "aiohttp", "urlopen", "HTTPConnection", "TCPSite", "ClientSession"})

# Where numba's kernels are defined: a dispatcher is not Python code to read, its module says it.
COMPILE_MODULES = ("numba", "miner.kernels.cpu")
# Code that is read: the tests' own, and the product's (`miner`, with its kernels and bench) even
# where it is installed.
READ_MODULES = ("miner",)

# Fixtures of pytest's own or of plugins that do none of these.
_BUILTIN_FIXTURES = frozenset({"request", "tmp_path", "tmp_path_factory", "monkeypatch", "capsys", "capfd",
                               "caplog", "recwarn", "benchmark", "pytestconfig", "tmpdir", "tmpdir_factory"})


_INSTALLED = tuple({Path(p).resolve() for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)})


def _readable(obj) -> bool:
    """Code of the tests or of the product: read, not judged by its name. Everything installed
    (the standard library, numba, pytest) is not read."""
    if _module_of(obj).startswith(READ_MODULES):
        return True
    try:
        path = inspect.getsourcefile(obj)
    except TypeError:
        return False
    return path is not None and not any(Path(path).resolve().is_relative_to(p) for p in _INSTALLED)


def _module_of(obj) -> str:
    if isinstance(obj, types.ModuleType):
        return obj.__name__
    return getattr(obj, "__module__", None) or ""


class _Reader:
    """What a piece of test code does, found by reading it and what it reaches in tests/."""

    def __init__(self):
        self._seen: dict[int, frozenset[str]] = {}

    def of_object(self, obj) -> frozenset[str]:
        if isinstance(obj, (staticmethod, classmethod)):
            obj = obj.__func__
        if isinstance(obj, property):
            return frozenset().union(*(self.of_object(f) for f in (obj.fget, obj.fset) if f))
        key = id(obj)
        if key in self._seen:
            return self._seen[key]
        self._seen[key] = frozenset()  # a cycle adds nothing
        found: set[str] = set()
        if isinstance(obj, types.FunctionType) and _readable(obj):
            found |= self._of_code(obj.__code__, obj.__globals__)
        elif isinstance(obj, type) and _readable(obj):
            for base in obj.__mro__[1:]:
                found |= self.of_object(base)
            for member in vars(obj).values():
                found |= self.of_object(member)
        elif not isinstance(obj, types.ModuleType) and _module_of(obj).startswith(COMPILE_MODULES):
            found.add("compile")  # a numba dispatcher, or numba itself
        self._seen[key] = frozenset(found)
        return self._seen[key]

    def _of_bound(self, obj, names: set[str]) -> frozenset[str]:
        """What a name bound to `obj` brings: a module of the tests or the product brings the names
        read beside it that it holds (`sass.ptxas_usage`: `ptxas_usage`)."""
        if not isinstance(obj, types.ModuleType):
            return self.of_object(obj)
        if not obj.__name__.startswith(READ_MODULES + ("support",)):
            return frozenset()
        held = vars(obj)
        return frozenset().union(*(self.of_object(held[n]) for n in names if n in held))

    def _of_code(self, code: types.CodeType, namespace: dict) -> set[str]:
        found: set[str] = set()
        names = set(code.co_names)
        if names & PROCESS_NAMES:
            found.add("process")
        if names & COMPILE_NAMES:
            found.add("compile")
        if names & SOCKET_NAMES:
            found.add("integration")
        for name in names:
            if name in namespace:
                found |= self._of_bound(namespace[name], names)
        # names imported inside the function: `from support.nodeproc import NodeProcess`
        for ins in dis.get_instructions(code):
            if ins.opname == "IMPORT_NAME" and ins.argval:
                for name in _imported_names(code, ins) or [None]:
                    full = f"{ins.argval}.{name}" if name else ins.argval
                    if full.startswith(COMPILE_MODULES):
                        found.add("compile")
                    elif (obj := _import(ins.argval, name)) is not None:
                        found |= self._of_bound(obj, names)
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                found |= self._of_code(const, namespace)
        return found


def _import(module_name: str, name: str | None):
    """The object `from module_name import name` (or `import module_name`) binds, imported here as
    the test would import it when it runs; None for modules outside the tests and the product."""
    import importlib
    if not module_name.startswith(READ_MODULES + ("support",)):
        return None
    try:
        module = importlib.import_module(module_name)
        return getattr(module, name) if name else module
    except (ImportError, AttributeError):
        try:
            return importlib.import_module(f"{module_name}.{name}")
        except ImportError:
            return None


def _imported_names(code: types.CodeType, at: dis.Instruction) -> list[str]:
    """The names an IMPORT_NAME's IMPORT_FROMs take (all of them, when it is a plain import)."""
    out = []
    started = False
    for ins in dis.get_instructions(code):
        if ins is at or (ins.offset == at.offset):
            started = True
            continue
        if started:
            if ins.opname == "IMPORT_FROM":
                out.append(ins.argval)
            elif ins.opname in ("STORE_FAST", "STORE_NAME", "POP_TOP", "STORE_DEREF", "STORE_GLOBAL"):
                if ins.opname == "POP_TOP" or not out:
                    break
            elif ins.opname == "IMPORT_NAME":
                break
    return out


_READER = _Reader()


def _lane_fixtures() -> dict:
    """The compile lane's fixtures, where the lane is registered (support/compile_lane.py)."""
    lane = sys.modules.get("support.compile_lane")
    return lane.LANE_FIXTURES if lane else {}


def floors_of(item) -> set[str]:
    """The floors `item` stands on: what its code and its fixtures' code do, and its own markers."""
    found: set[str] = set()
    function = getattr(item, "function", None)
    if function is not None:
        found |= _READER.of_object(function)
    cls = getattr(item, "cls", None)
    if cls is not None and not _readable(cls):
        # a test case made by a library (hypothesis' state machines): the module's classes are
        # what it runs
        module = item.module
        for obj in vars(module).values():
            if isinstance(obj, type) and obj.__module__ == module.__name__:
                found |= _READER.of_object(obj)
    info = getattr(item, "_fixtureinfo", None)
    for name, defs in (info.name2fixturedefs.items() if info else ()):
        if name in _BUILTIN_FIXTURES:
            continue
        if name in _lane_fixtures():  # waits for the compile lane's builds
            found.add("compile")
        for fixturedef in defs:
            found |= _READER.of_object(fixturedef.func)
    found |= {floor for floor in FLOORS[:3] if item.get_closest_marker(floor)}
    return found or {"unit"}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session, config, items):
    """Mark every test with its floors before `-m` selects (pytest's own selection runs after)."""
    for item in items:
        floors = floors_of(item)
        for floor in sorted(floors):
            if not item.get_closest_marker(floor):
                item.add_marker(floor)
        if floors & {"process", "compile"} and not item.get_closest_marker("slow"):
            item.add_marker("slow")


# --------------------------------------------------------------------------------- the check


class _Watch:
    """What the running test did: filled by an audit hook (processes, sockets) and numba's events."""

    def __init__(self):
        self.active = False
        self.did: dict[str, str] = {}

    def note(self, floor: str, what: str) -> None:
        if self.active and floor not in self.did:
            self.did[floor] = what


_WATCH = _Watch()
_PROCESS_EVENTS = {"subprocess.Popen", "os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "os.exec", "os.system"}
_SOCKET_EVENTS = {"socket.bind", "socket.connect"}


def _audit(event: str, args) -> None:
    if not _WATCH.active or threading.current_thread().name.startswith("compile-lane"):
        return  # the compile lane's jobs run beside every test: they are no test's doing
    if event in _PROCESS_EVENTS:
        _WATCH.note("process", f"{event} {str(args[0])[:80] if args else ''}")
    elif event in _SOCKET_EVENTS:
        _WATCH.note("integration", f"{event} {args[1] if len(args) > 1 else ''}")


sys.addaudithook(_audit)  # cannot be removed: it does nothing while no test is being watched


def pytest_sessionstart(session):
    """A library's one-time set-up is the machine's, not a test's: matplotlib lists the fonts by
    running `fc-list` the first time it is imported where its cache is empty (a fresh CI machine),
    which would be charged to whichever plotting test came first. Done here, before any test is
    watched."""
    try:
        import matplotlib.font_manager  # noqa: F401
    except ImportError:
        pass


def _numba_listener():
    try:
        from numba.core import event
    except ImportError:
        return
    class _Compiles(event.Listener):
        def on_start(self, ev):
            _WATCH.note("compile", f"numba {ev.kind}")

        def on_end(self, ev):
            pass
    listener = _Compiles()
    for kind in ("numba:compile", "numba:compiler_lock"):
        event.register(kind, listener)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    # the test body only: fixtures (set up before) are read by their code, and a fixture shared
    # by a module or session is set up in whichever test comes first
    _WATCH.did = {}
    _WATCH.active = True
    try:
        result = yield
    finally:
        _WATCH.active = False
    floors = {m.name for m in item.iter_markers() if m.name in FLOORS}
    missing = {floor: what for floor, what in _WATCH.did.items()
               if floor not in floors and not (floor == "integration" and floors & {"process", "compile"})}
    if missing:
        floor, what = next(iter(missing.items()))
        pytest.fail(f"{item.nodeid} does more than its floors {sorted(floors)} say: {what}; "
                    f"mark it @pytest.mark.{floor} (tests/support/floors.py)", pytrace=False)
    return result


_numba_listener()
