"""The FX host's export half: an FX graph written as program JSON (schema 8, what
torch.export.save writes), for the C++ passes to read.

Only what the passes read is written with care: targets, named inputs with their literal
values, value references, tensor metadata (dtype and sizes), the graph signature (which
inputs are parameters and buffers, by state-dict name) and the metadata fields
`nn_module_stack`, `stack_trace` (as a token, see STACK_TRACE_PREFIX) and `custom`. Values the passes never look at
(call_module nodes, opaque Python objects) are written in a form that keeps every use of a
value visible and reads as no mode-sensitive op. Nested graphs (the submodules of
higher-order ops such as torch.cond) are written with their targets, so that the passes see
what they hold, as they do in an archive.
"""

import json
import math
import operator

import torch
from torch.fx import GraphModule, Node

from ._serde_codes import DTYPE_CODES, LAYOUT_CODES, MEMORY_FORMAT_CODES

# The names of state the graph does not read, written as graph inputs so that a pass can find
# a module's counter that dead-code elimination took out of the graph (the FX replay makes a
# get_attr node for it when a pass uses it). No FX node name has this form.
STATE_PREFIX = "exmode:"

_DUMMY_META = ('{"dtype": 7, "sizes": [], "requires_grad": false, "device": {"type": "cpu", '
               '"index": null}, "strides": [], "storage_offset": {"as_int": 0}, "layout": 7}')


def target_name(target):
    """The target text torch's serializer writes for an FX call_function target."""
    if isinstance(target, torch._ops.OpOverload):
        return "torch.ops." + str(target)
    if isinstance(target, torch._ops.HigherOrderOperator):
        return "torch.ops.higher_order." + target.name()
    if target is operator.getitem:
        return "_operator.getitem"
    module = getattr(target, "__module__", None) or ""
    return f"{module}.{getattr(target, '__qualname__', getattr(target, '__name__', repr(target)))}"


def _float(x):
    if math.isfinite(x):
        return repr(float(x))
    return '"NaN"' if math.isnan(x) else ('"Infinity"' if x > 0 else '"-Infinity"')


def _int_size(s):
    if isinstance(s, int):
        return '{"as_int": %d}' % s
    return '{"as_expr": {"expr_str": %s}}' % json.dumps(str(s))


def tensor_meta(val, cache):
    """TensorMeta JSON of a node's `val` (a FakeTensor), or a neutral stand-in. Values of one
    shape share one text (`cache`)."""
    if not isinstance(val, torch.Tensor):
        return _DUMMY_META
    try:
        shape = tuple(val.shape)
        strided = val.layout == torch.strided
        key = (val.dtype, shape, val.stride() if strided else None, val.requires_grad, val.device)
        text = cache.get(key)
        if text is None:
            dtype, _, strides, grad, dev = key
            text = ('{"dtype": %d, "sizes": [%s], "requires_grad": %s, "device": {"type": "%s", '
                    '"index": %s}, "strides": [%s], "storage_offset": {"as_int": 0}, "layout": %d}' % (
                        DTYPE_CODES.get(dtype, 0), ", ".join(_int_size(s) for s in shape),
                        "true" if grad else "false", dev.type,
                        "null" if dev.index is None else dev.index,
                        ", ".join(_int_size(s) for s in strides) if strided else "",
                        LAYOUT_CODES.get(val.layout, 0)))
            cache[key] = text
        return text
    except Exception:  # noqa: BLE001 - unhashable symbolic sizes and the like: the stand-in
        return _DUMMY_META


def quoted(text):
    """`text` as a JSON string."""
    if '"' in text or "\\" in text or not text.isprintable():
        return json.dumps(text)
    return '"' + text + '"'


def _stack_type(t):
    return t if isinstance(t, str) else f"{t.__module__}.{t.__qualname__}"


# A stack trace is written as a token naming it (STACK_TRACE_PREFIX + its index in
# ProgramWriter.stack_traces): passes only copy stack traces, never read them, and a
# module's traces are most of its JSON. The replay puts the text back.
STACK_TRACE_PREFIX = "exmode:stack_trace:"


def _metadata(node, stack_traces, last, stacks):
    # `last`: [the previous node's nn_module_stack, its text]; neighbours usually share it.
    meta = node.meta
    fields = []
    trace = meta.get("stack_trace")
    if trace:
        fields.append('"stack_trace": "%s%d"' % (STACK_TRACE_PREFIX, len(stack_traces)))
        stack_traces.append(trace)
    stack = meta.get("nn_module_stack")
    if stack:
        if stack is not last[0] and stack != last[0]:
            text = ";".join(f"{k},{v[0]},{_stack_type(v[1])}" for k, v in stack.items())
            stacks[text] = stack  # the replay gives an inserted node the dict, not a parse
            last[1] = '"nn_module_stack": ' + quoted(text)
        last[0] = stack
        fields.append(last[1])
    custom = meta.get("custom")
    if custom:
        fields.append('"custom": ' + json.dumps(json.dumps(custom, default=repr)))
    return "{" + ", ".join(fields) + "}"


class ProgramWriter:
    """Writes one FX graph (and the graphs nested in it) as program JSON."""

    def __init__(self, root, specs=None, output_specs=None):
        self.root = root  # the GraphModule the graph's get_attr nodes read from
        self.specs = specs or {}  # placeholder name -> (spec kind, state-dict name), lifted graphs
        # (spec kind, state-dict name) per graph output, lifted graphs; else all user outputs
        self.output_specs = output_specs
        self.sym_nodes = set()  # nodes whose value is a SymInt (written as_sym_int)
        self.graph_nodes = {}  # get_attr nodes naming a submodule graph -> that GraphModule
        self.stack_traces = []  # the texts of the stack-trace tokens written
        self.metas = {}  # tensor_meta's cache
        self.schemas = {}  # target -> (its arguments' names, the keyword-only ones)
        self.last_stack = [None, ""]
        self.stacks = {}  # nn_module_stack text written -> the dict it was written from

    def argument(self, a):
        if isinstance(a, Node):
            sub = self.graph_nodes.get(a)
            if sub is not None:
                return self.graph_argument(a.target, sub)
            if a in self.sym_nodes:
                return '{"as_sym_int": {"as_name": "%s"}}' % a.name
            return '{"as_tensor": {"name": "%s"}}' % a.name
        if a is None:
            return '{"as_none": true}'
        if isinstance(a, bool):
            return '{"as_bool": %s}' % ("true" if a else "false")
        if isinstance(a, int):
            if -(1 << 63) <= a < (1 << 63):
                return '{"as_int": %d}' % a
            return '{"as_string": "%d"}' % a  # no pass reads it; JSON readers stop at int64
        if isinstance(a, float):
            return '{"as_float": %s}' % _float(a)
        if isinstance(a, str):
            return '{"as_string": %s}' % json.dumps(a)
        if isinstance(a, torch.dtype):
            return '{"as_scalar_type": %d}' % DTYPE_CODES.get(a, 0)
        if isinstance(a, torch.device):
            return '{"as_device": {"type": "%s", "index": %s}}' % (
                a.type, "null" if a.index is None else a.index)
        if isinstance(a, torch.memory_format):
            return '{"as_memory_format": %d}' % MEMORY_FORMAT_CODES.get(a, 0)
        if isinstance(a, torch.layout):
            return '{"as_layout": %d}' % LAYOUT_CODES.get(a, 0)
        if isinstance(a, (list, tuple)):
            return self.list_argument(a)
        return '{"as_string": %s}' % json.dumps(repr(a))

    def graph_argument(self, name, sub):
        return '{"as_graph": {"name": %s, "graph": %s}}' % (json.dumps(name),
                                                           self.nested_graph(sub.graph))

    def list_argument(self, items):
        if not items:
            return '{"as_ints": []}'
        if all(isinstance(x, bool) for x in items):
            return '{"as_bools": [%s]}' % ", ".join("true" if x else "false" for x in items)
        if all(isinstance(x, int) and not isinstance(x, bool) for x in items):
            return '{"as_ints": [%s]}' % ", ".join(str(x) for x in items)
        if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in items):
            return '{"as_floats": [%s]}' % ", ".join(_float(x) for x in items)
        nodes = [x for x in items if isinstance(x, Node)]
        if nodes and all(x in self.sym_nodes or isinstance(x, int) for x in items):
            return '{"as_sym_ints": [%s]}' % ", ".join(
                '{"as_name": "%s"}' % x.name if isinstance(x, Node) else '{"as_int": %d}' % x
                for x in items)
        if nodes and len(nodes) == len(items):
            return '{"as_tensors": [%s]}' % ", ".join('{"name": "%s"}' % x.name for x in items)
        if nodes and all(x is None or isinstance(x, Node) for x in items):
            return '{"as_optional_tensors": [%s]}' % ", ".join(
                '{"as_none": true}' if x is None else '{"as_tensor": {"name": "%s"}}' % x.name
                for x in items)
        # Anything else (nested lists, mixed literals): its values stay visible as uses.
        return '{"as_string_to_argument": {%s}}' % ", ".join(
            '"%d": %s' % (i, self.argument(x)) for i, x in enumerate(items))

    def inputs(self, node):
        target = node.target
        schema = self.schemas.get(target) if node.op == "call_function" else None
        if schema is None and node.op == "call_function":
            fn_schema = getattr(target, "_schema", None)
            if fn_schema is not None:
                params = fn_schema.arguments
                schema = ([p.name for p in params], {p.name for p in params if p.kwarg_only})
                self.schemas[target] = schema
        argument = self.argument
        out = []
        if schema is not None:
            names, kw_only = schema
            for i, a in enumerate(node.args):
                name = names[i] if i < len(names) else f"arg{i}"
                out.append('{"name": "%s", "arg": %s, "kind": 1}' % (name, argument(a)))
            for k, a in node.kwargs.items():
                out.append('{"name": "%s", "arg": %s, "kind": %d}' % (
                    k, argument(a), 2 if k in kw_only else 1))
        else:
            for i, a in enumerate(node.args):
                out.append('{"name": "arg%d", "arg": %s, "kind": 1}' % (i, argument(a)))
            for k, a in node.kwargs.items():
                out.append('{"name": %s, "arg": %s, "kind": 2}' % (json.dumps(k), argument(a)))
        return ", ".join(out)

    def node_target(self, node):
        if node.op == "call_function":
            return target_name(node.target)
        return f"{node.op}:{node.target}"  # call_module, call_method: no pass's target

    def nested_graph(self, graph):
        nodes = []
        for n in graph.nodes:
            if n.op in ("call_function", "call_module", "call_method"):
                nested = [self.argument(a) for a in n.args
                          if isinstance(a, Node) and a in self.graph_nodes]
                nodes.append('{"target": %s, "inputs": [%s]}' % (
                    json.dumps(self.node_target(n)),
                    ", ".join('{"name": "g", "arg": %s}' % a for a in nested)))
        return '{"nodes": [%s]}' % ", ".join(nodes)

    def write(self, graph):
        """The program JSON of `graph`."""
        root = self.root
        params = dict(root.named_parameters(remove_duplicate=False)) if root is not None else {}
        buffers = dict(root.named_buffers(remove_duplicate=False)) if root is not None else {}
        inputs, specs, tensor_values, nodes = [], [], [], []
        read_state = set()
        output_args = []
        called_modules = set()
        sym_nodes = self.sym_nodes
        graph_nodes = self.graph_nodes
        for n in graph.nodes:
            op = n.op
            if op == "get_attr":
                t = n.target
                if t in params:
                    kind = "parameter"
                elif t in buffers:
                    kind = "buffer"
                else:
                    attr = getattr_path(root, t)
                    if isinstance(attr, GraphModule):
                        graph_nodes[n] = attr
                        continue
                    kind = "tensor_constant"
                read_state.add(t)
                inputs.append('{"as_tensor": {"name": "%s"}}' % n.name)
                specs.append(_input_spec(kind, '"%s"' % n.name, t))
                tensor_values.append('"%s": %s' % (n.name, tensor_meta(n.meta.get("val"), self.metas)))
            elif op == "placeholder":
                kind, state = self.specs.get(n.name, ("user_input", None))
                inputs.append('{"as_tensor": {"name": "%s"}}' % n.name)
                specs.append(_input_spec(kind, '"%s"' % n.name, state))
                if state is not None:
                    read_state.add(state)
                tensor_values.append('"%s": %s' % (n.name, tensor_meta(n.meta.get("val"), self.metas)))
            elif op == "output":
                output_args = list(_leaves(n.args[0]))
            else:
                if op == "call_module":
                    if n.target == "_guards_fn":
                        # torch's unlifting adds this check of the inputs; a saved program
                        # has no such node, and the passes have nothing to do with it.
                        continue
                    called_modules.add(n.target)
                    sub = getattr_path(root, n.target)
                    if isinstance(sub, GraphModule):
                        # A graph called as a submodule (split_module): written as a nested
                        # graph, so that the passes refuse the mode-sensitive ops in it as
                        # they refuse those of torch.cond branches.
                        nodes.append('{"target": %s, "inputs": [{"name": "graph", "arg": %s}], '
                                     '"outputs": [{"as_tensor": {"name": "%s"}}], "metadata": {}, '
                                     '"name": "%s"}' % (json.dumps(self.node_target(n)),
                                                        self.graph_argument(n.target, sub),
                                                        n.name, n.name))
                        tensor_values.append('"%s": %s' % (n.name, _DUMMY_META))
                        continue
                val = n.meta.get("val")
                if isinstance(val, torch.SymInt):
                    sym_nodes.add(n)
                    output = '{"as_sym_int": {"as_name": "%s"}}' % n.name
                else:
                    output = '{"as_tensor": {"name": "%s"}}' % n.name
                    tensor_values.append('"%s": %s' % (n.name, tensor_meta(val, self.metas)))
                nodes.append('{"target": %s, "inputs": [%s], "outputs": [%s], "metadata": %s, '
                             '"name": "%s"}' % (json.dumps(self.node_target(n)), self.inputs(n),
                                               output, _metadata(n, self.stack_traces, self.last_stack, self.stacks), n.name))
        # State no node reads, as the archive lists it (every parameter and buffer is a graph
        # input there), except that of submodules the graph calls (call_module: observers and
        # fake quantizers), which their call reads.
        called = tuple(t + "." for t in called_modules)
        for kind, state in (("parameter", params), ("buffer", buffers)):
            for b, value in state.items():
                if b in read_state or b.startswith(called):
                    continue
                name = json.dumps(STATE_PREFIX + b)
                inputs.append('{"as_tensor": {"name": %s}}' % name)
                specs.append(_input_spec(kind, name, b))
                tensor_values.append('%s: %s' % (name, tensor_meta(value, self.metas)))
        outputs = [self.argument(a) for a in output_args]
        output_specs = [_output_spec(a, (self.output_specs or {}).get(i)) for i, a in enumerate(outputs)]
        return ('{"graph_module": {"graph": {"inputs": [%s], "outputs": [%s], "nodes": [%s], '
                '"tensor_values": {%s}, "sym_int_values": {}, "sym_bool_values": {}, '
                '"sym_float_values": {}, "custom_obj_values": {}, "is_single_tensor_return": false}, '
                '"signature": {"input_specs": [%s], "output_specs": [%s]}, '
                '"module_call_graph": [{"fqn": "", "signature": null}], "metadata": {}}, '
                '"opset_version": {"aten": 10}, "range_constraints": {}, '
                '"schema_version": {"major": 8, "minor": 20}, "verifiers": ["TRAINING"], '
                '"torch_version": "%s"}' % (
                    ", ".join(inputs), ", ".join(outputs), ", ".join(nodes),
                    ", ".join(tensor_values), ", ".join(specs), ", ".join(output_specs),
                    torch.__version__))


def _input_spec(kind, name, state):
    """The input spec of graph input `name` (a JSON string) of `kind`, naming `state`."""
    if kind == "parameter":
        return '{"parameter": {"arg": {"name": %s}, "parameter_name": %s}}' % (name, json.dumps(state))
    if kind == "buffer":
        return ('{"buffer": {"arg": {"name": %s}, "buffer_name": %s, "persistent": true}}'
                % (name, json.dumps(state)))
    if kind == "tensor_constant":
        return ('{"tensor_constant": {"arg": {"name": %s}, "tensor_constant_name": %s}}'
                % (name, json.dumps(state)))
    return '{"user_input": {"arg": {"as_tensor": {"name": %s}}}}' % name


def _output_spec(arg, spec):
    kind, target = spec or ("user_output", None)
    if kind == "buffer_mutation":
        return '{"buffer_mutation": {"arg": %s, "buffer_name": %s}}' % (_inner(arg), json.dumps(target))
    if kind == "user_input_mutation":
        return '{"user_input_mutation": {"arg": %s, "user_input_name": %s}}' % (
            _inner(arg), json.dumps(target))
    if kind == "loss_output":
        return '{"loss_output": {"arg": %s}}' % _inner(arg)
    return '{"user_output": {"arg": %s}}' % arg


def _inner(arg):
    # The TensorArgument of an {"as_tensor": {...}} argument (mutation specs name it bare).
    prefix = '{"as_tensor": '
    return arg[len(prefix):-1] if arg.startswith(prefix) else arg


def _leaves(out):
    if isinstance(out, (list, tuple)):
        for x in out:
            yield from _leaves(x)
    elif isinstance(out, dict):
        for x in out.values():
            yield from _leaves(x)
    else:
        yield out


def getattr_path(root, target):
    obj = root
    for part in target.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj
