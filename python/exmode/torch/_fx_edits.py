"""The FX host's import half: the edits the C++ passes made to the program JSON of an FX
graph (exmode._core.HostProgram.switch_mode, one tuple per rewrite::Listener call), made
again to the FX graph itself.

Arguments are matched to FX's positional and keyword arguments through the op's schema;
an argument a pass removed takes its schema default, and trailing defaults are left out, as
torch.export writes them. Nodes a pass inserts get the metadata it gave them and a `val`
computed by running the op on the inputs' fake tensors.
"""

import copy
import json
import math
import re
import warnings

import torch
from torch.fx import Node

from .._errors import UnsupportedError
from ._fx_program import STACK_TRACE_PREFIX, STATE_PREFIX
from ._serde_codes import DTYPES, LAYOUTS, MEMORY_FORMATS

# A stack-trace token as a JSON string inside metadata text (a drop-path record).
_TOKEN = re.compile('"' + re.escape(STACK_TRACE_PREFIX) + r'(\d+)"')
_REMOVED = object()  # an argument a pass removed, until the node's arguments are tidied


def resolve_target(text):
    """The callable a program target names ("torch.ops.aten.add_.Tensor")."""
    if not text.startswith("torch.ops."):
        raise UnsupportedError(f"cannot make a node for target '{text}' in an FX graph")
    obj = torch.ops
    for part in text[len("torch.ops."):].split("."):
        obj = getattr(obj, part)
    return obj


def _number(x):
    if isinstance(x, str):
        return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[x]
    return x


class EditReplay:
    """Replays one switch's edits on `graph`; `nodes` maps program value names to FX nodes
    (kept current: inserted nodes are added, erased ones removed)."""

    def __init__(self, graph, nodes, root, stack_traces, stacks=None):
        self.graph = graph
        self.nodes = nodes
        self.root = root
        self.stack_traces = stack_traces  # the texts of the writer's stack-trace tokens
        self.stacks = stacks or {}  # nn_module_stack texts the writer wrote -> their dicts
        self.touched = {}  # nodes whose arguments changed -> None (ordered set)
        self._fake_mode = None

    # --------------------------------------------------------------- values
    def node(self, name):
        node = self.nodes.get(name)
        if node is None and name.startswith(STATE_PREFIX):
            node = self._state_node(name[len(STATE_PREFIX):])
            self.nodes[name] = node
        if node is None:
            raise UnsupportedError(f"the switch names a value '{name}' the FX graph does not have")
        return node

    def _state_node(self, target):
        # A buffer no node read (dead-code elimination took its get_attr out): read it again,
        # where the graph reads its state, before the first node that computes.
        first = next(n for n in self.graph.nodes if n.op not in ("placeholder", "get_attr"))
        with self.graph.inserting_before(first):
            node = self.graph.get_attr(target)
        try:
            value = self.root.get_buffer(target)
        except AttributeError:
            value = self.root.get_parameter(target)
        mode = self.fake_mode()
        if mode is not None:
            node.meta["val"] = mode.from_tensor(value, static_shapes=True)
        return node

    def fake_mode(self):
        if self._fake_mode is None:
            for n in self.graph.nodes:
                val = n.meta.get("val")
                mode = getattr(val, "fake_mode", None)
                if mode is not None:
                    self._fake_mode = mode
                    break
        return self._fake_mode

    def value(self, kind, payload):
        if kind == "as_bool":
            return payload == "true"
        if kind == "as_none":
            return None
        data = json.loads(payload)
        if kind in ("as_int", "as_float"):
            return _number(data)
        if kind == "as_tensor":
            return self.node(data["name"])
        if kind == "as_tensors":
            return [self.node(t["name"]) for t in data]
        if kind == "as_optional_tensors":
            return [None if "as_none" in t else self.node(t["as_tensor"]["name"]) for t in data]
        if kind in ("as_ints", "as_bools", "as_string", "as_strings"):
            return data
        if kind == "as_floats":
            return [_number(x) for x in data]
        if kind == "as_scalar_type":
            return DTYPES[data]
        if kind == "as_layout":
            return LAYOUTS[data]
        if kind == "as_memory_format":
            return MEMORY_FORMATS[data]
        if kind == "as_device":
            return torch.device(data["type"], data.get("index"))
        if kind == "as_sym_int":
            return self.node(data["as_name"])
        if kind == "as_sym_ints":
            return [self.node(x["as_name"]) if "as_name" in x else x["as_int"] for x in data]
        raise UnsupportedError(f"cannot write a '{kind}' argument into an FX graph")

    # --------------------------------------------------------------- edits
    def run(self, edits):
        for edit in edits:
            getattr(self, "_" + edit[0])(*edit[1:])
        for node in self.touched:
            if not node._erased:
                _tidy(node)

    def _input(self, node_name, input_name, kind, payload):
        node = self.node(node_name)
        _set_argument(node, input_name, self.value(kind, payload))
        self.touched[node] = None

    def _remove_input(self, node_name, input_name):
        node = self.node(node_name)
        _set_argument(node, input_name, _REMOVED)
        self.touched[node] = None

    def _metadata(self, node_name, key, value):
        node = self.node(node_name)
        if value is None:
            node.meta.pop(key, None)
        else:
            node.meta[key] = self.metadata_value(key, value)

    def metadata_value(self, key, text):
        if key == "nn_module_stack" and text in self.stacks:
            return dict(self.stacks[text])
        if STACK_TRACE_PREFIX in text:
            traces = self.stack_traces
            if key == "stack_trace" and text.startswith(STACK_TRACE_PREFIX):
                return traces[int(text[len(STACK_TRACE_PREFIX):])]
            text = _TOKEN.sub(lambda m: json.dumps(traces[int(m.group(1))]), text)
        return _metadata_value(key, text)

    def _use(self, user_name, from_name, to_name):
        user = self.graph.output_node() if user_name is None else self.node(user_name)
        user.replace_input_with(self.node(from_name), self.node(to_name))

    def _erase(self, node_name):
        self.graph.erase_node(self.nodes.pop(node_name))

    def _insert(self, name, before, target, inputs, outputs, metadata):
        op = resolve_target(target)
        named = {n: self.value(k, p) for n, k, p in inputs}
        args, kwargs = _schema_arguments(op, named)
        with self.graph.inserting_before(self.node(before)):
            node = self.graph.create_node("call_function", op, tuple(args), kwargs, name=name)
        for key, value in metadata:
            if value is not None:
                node.meta[key] = self.metadata_value(key, value)
        val = self._fake_value(op, args, kwargs)
        if val is not None:
            node.meta["val"] = val
        self.nodes[name] = node
        for out in outputs[1:]:
            if out is not None:
                raise UnsupportedError(f"cannot insert '{target}' with several outputs into an FX graph")

    def _outputs(self):
        raise UnsupportedError("the switch changes the graph's outputs, which an FX graph "
                               "of a module does not list")

    def _fake_value(self, op, args, kwargs):
        # In-place ops return their input: the same fake tensor, as torch.export records it.
        if op._schema.name.endswith("_") and args and isinstance(args[0], Node):
            return args[0].meta.get("val")
        mode = self.fake_mode()
        if mode is None:
            return None
        missing = []

        def fake(a):
            if isinstance(a, Node):
                v = a.meta.get("val")
                if v is None:
                    missing.append(a)
                return v
            if isinstance(a, (list, tuple)):
                return type(a)(fake(x) for x in a)
            return a

        fargs, fkwargs = [fake(a) for a in args], {k: fake(v) for k, v in kwargs.items()}
        if missing:
            return None
        with mode:
            return op(*fargs, **fkwargs)


def _metadata_value(key, text):
    if key == "custom":
        return json.loads(text)
    if key == "nn_module_stack":
        stack = {}
        for entry in text.split(";"):
            parts = entry.split(",", 2)
            if len(parts) == 3:  # a module name with ',' or ';' does not parse: left out
                stack[parts[0]] = (parts[1], parts[2])
        return stack
    if key == "torch_fn":
        return tuple(text.split(";", 1))
    return text


def _schema_arguments(op, named):
    args, kwargs = [], {}
    params = op._schema.arguments
    last = max((i for i, p in enumerate(params) if not p.kwarg_only and p.name in named), default=-1)
    for i, p in enumerate(params):
        if p.kwarg_only:
            if p.name in named:
                kwargs[p.name] = named[p.name]
        elif i <= last:
            args.append(named[p.name] if p.name in named else p.default_value)
    return args, kwargs


def _set_argument(node, name, value):
    params = node.target._schema.arguments
    index = next((i for i, p in enumerate(params) if p.name == name), None)
    if index is None:
        raise UnsupportedError(f"{node.target} has no argument '{name}'")
    if params[index].kwarg_only or name in node.kwargs:
        kwargs = dict(node.kwargs)
        if value is _REMOVED:
            kwargs.pop(name, None)
        else:
            kwargs[name] = value
        node.kwargs = kwargs
        return
    args = list(node.args)
    if value is _REMOVED and index >= len(args):
        return
    while len(args) <= index:
        args.append(_REMOVED)
    args[index] = value
    node.args = tuple(args)


def _tidy(node):
    """Leaves trailing removed arguments out and gives inner ones their defaults."""
    args = list(node.args)
    while args and args[-1] is _REMOVED:
        args.pop()
    if any(a is _REMOVED for a in args):
        params = node.target._schema.arguments
        args = [params[i].default_value if a is _REMOVED else a for i, a in enumerate(args)]
    if len(args) != len(node.args) or any(a is not b for a, b in zip(args, node.args)):
        node.args = tuple(args)


def copy_graph(graph):
    """A copy of `graph` as Graph.__deepcopy__ makes it (nodes, metadata dicts copied, their
    values shared), with the map from each node to its copy (the output node included)."""
    copied = torch.fx.Graph(tracer_cls=graph._tracer_cls)
    val_map = {}
    out = copied.graph_copy(graph, val_map, return_output_node=True)
    with warnings.catch_warnings():
        # torch's pytree specs warn of a deprecated isinstance check when copied.
        warnings.simplefilter("ignore", FutureWarning)
        copied._codegen = copy.deepcopy(graph._codegen)
    if out is not None:
        value, old_output = out
        new_output = copied.output(value, type_expr=getattr(old_output, "type", None))
        new_output.meta = copy.copy(old_output.meta)
        val_map[old_output] = new_output
    # The copy's namespace renames nodes named like builtins ("input" -> "input_1"), which
    # torch.export does not; the signature of an ExportedProgram names them as they were.
    taken = {n.name for n in copied.nodes}
    for old, new in val_map.items():
        if isinstance(old, Node) and new.name != old.name and old.name not in taken:
            taken.discard(new.name)
            new.name = old.name
            taken.add(old.name)
            used = getattr(copied._graph_namespace, "_used_names", None)
            if isinstance(used, set):
                used.add(old.name)  # so that no node made later takes the name
    return copied, val_map
