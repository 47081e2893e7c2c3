"""The format of data/mode_dependent_modules.txt and the lookup of the classes it names.

A plain module shared by tests/python/test_module_types_data.py and the script
tests/real/check_module_types.py. The format is specified in include/exmode/findings.h:

    # comment
    <module type>  <when>  <library>  <reason, the rest of the line>

A module type is `type(m).__module__ + "." + type(m).__qualname__`, as torch.export's
nn_module_stack writes it; `*` matches any run of characters.
"""

import fnmatch
import importlib
import inspect
import warnings
from pathlib import Path

DEFAULT_LIST = Path(__file__).resolve().parents[2] / "data" / "mode_dependent_modules.txt"
WHENS = ("to-train", "to-eval", "both", "drop-path")


def parse_rules(text):
    """[(line number, type, when, library, reason)] for every rule line; comment lines
    (first field starting with '#') and blank lines are skipped. Fields are separated by
    runs of spaces (or tabs); the reason is the rest of the line, trimmed. Missing fields
    are empty strings: nothing is checked here."""
    rules = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split(None, 3)
        if not fields or fields[0].startswith("#"):
            continue
        fields += [""] * (4 - len(fields))
        rules.append((number, fields[0], fields[1], fields[2], fields[3].strip()))
    return rules


def read_rules(path):
    """The rules of the list at `path`, as parse_rules gives them; raises ValueError naming
    the first line with too few fields or an unknown <when>."""
    text = Path(path).read_text(encoding="utf-8")
    lines = text.splitlines()
    rules = parse_rules(text)
    for number, _type, when, _library, reason in rules:
        if not reason:  # the reason is empty only when the line has fewer than four fields
            raise ValueError(f"{path}:{number}: too few fields: {lines[number - 1]!r}")
        if when not in WHENS:
            raise ValueError(f"{path}:{number}: {when!r} is not one of {', '.join(WHENS)}")
    return rules


def import_library(library, cache={}):
    """(the library's top-level module, None), or (None, the reason it does not import)."""
    if library not in cache:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cache[library] = (importlib.import_module(library), None)
        except Exception as error:  # noqa: BLE001 - any import failure means "not installed"
            cache[library] = (None, f"{type(error).__name__}: {error}")
    return cache[library]


def resolve(type_):
    """The object a qualified class name names: the longest importable module prefix, then
    attributes (a __qualname__ may hold dots for nested classes). Raises LookupError."""
    parts = type_.split(".")
    for split in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:split])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                obj = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name is not None and module_name.startswith(error.name):
                continue  # this prefix is not a module; try a shorter one
            raise LookupError(f"importing {module_name} failed: {error}") from error
        except Exception as error:  # noqa: BLE001
            raise LookupError(f"importing {module_name} failed: {type(error).__name__}: {error}") from error
        for attribute in parts[split:]:
            if not hasattr(obj, attribute):
                raise LookupError(f"{module_name} has no {'.'.join(parts[split:])}")
            obj = getattr(obj, attribute)
        return obj
    raise LookupError(f"no module of {type_} imports")


def type_problem(type_, module_class):
    """None if `type_` names a subclass of `module_class` (torch.nn.Module) under exactly
    that name, or, for a pattern, matches one such class of its module; else what is wrong."""
    if "*" in type_:
        module_name = type_.split("*", 1)[0].rpartition(".")[0]
        try:
            module = importlib.import_module(module_name)
        except Exception as error:  # noqa: BLE001
            return f"the module {module_name} of the pattern does not import: {error}"
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, module_class) and fnmatch.fnmatchcase(f"{cls.__module__}.{cls.__qualname__}", type_):
                return None
        return f"no nn.Module class of {module_name} matches the pattern"
    try:
        cls = resolve(type_)
    except LookupError as error:
        return str(error)
    if not inspect.isclass(cls):
        return f"{type_} is not a class"
    if not issubclass(cls, module_class):
        return f"{type_} is not a torch.nn.Module"
    name = f"{cls.__module__}.{cls.__qualname__}"
    return None if name == type_ else f"nn_module_stack would name it {name}"
