"""ONNX OpSchemas for the gptoss_edge domain, generated from compiler/opset.py.

`register()` (idempotent) makes `onnx.checker.check_model(..., full_check=True)` and
`onnx.shape_inference.infer_shapes(..., strict_mode=True)` understand our nodes: ports, type
constraints, attributes (plus TensorRT's plugin lookup attributes) and a shape inference
function derived from each port's symbolic shape — dims named by attributes ("hidden_size",
"2*intermediate_size") are computed and checked, other names ("tokens", "batch") are bound from
the inputs and carried to the outputs; "*" stands for any leading dims.
"""
from __future__ import annotations

import re

import onnx
from onnx import defs, helper

from gptoss_edge.compiler import opset

_S = defs.OpSchema
_ONNX_TYPE = {"float16": "tensor(float16)", "bfloat16": "tensor(bfloat16)", "float32": "tensor(float)",
              "uint8": "tensor(uint8)", "int8": "tensor(int8)", "int32": "tensor(int32)",
              "int64": "tensor(int64)"}
_TENSOR_TYPE = {"float16": onnx.TensorProto.FLOAT16, "bfloat16": onnx.TensorProto.BFLOAT16,
                "float32": onnx.TensorProto.FLOAT, "uint8": onnx.TensorProto.UINT8,
                "int8": onnx.TensorProto.INT8, "int32": onnx.TensorProto.INT32,
                "int64": onnx.TensorProto.INT64}
_ATTR_TYPE = {"int": _S.AttrType.INT, "float": _S.AttrType.FLOAT, "string": _S.AttrType.STRING}


class ShapeError(ValueError):
    """A node whose inputs contradict its attributes (raised inside shape inference)."""


# ---- schema construction --------------------------------------------------------------------

def _type_str(spec: opset.OpSpec, port: opset.Port) -> tuple[str, tuple[str, list[str]] | None]:
    """Formal parameter type string and, for a port of several types, its own constraint."""
    if port.dtype == "T":
        return "T", None
    names = port.dtype.split("|")
    if len(names) == 1:
        return _ONNX_TYPE[names[0]], None
    constraint = f"T_{port.name}"
    return constraint, (constraint, [_ONNX_TYPE[n] for n in names])


def build_schema(spec: opset.OpSpec) -> defs.OpSchema:
    constraints = {"T": [_ONNX_TYPE[t] for t in opset.ACTIVATION_TYPES]}
    params: dict[str, list[_S.FormalParameter]] = {"in": [], "out": []}
    for side, ports in (("in", spec.inputs), ("out", spec.outputs)):
        for port in ports:
            type_str, extra = _type_str(spec, port)
            if extra:
                constraints[extra[0]] = extra[1]
            option = _S.FormalParameterOption.Optional if port.optional else _S.FormalParameterOption.Single
            params[side].append(_S.FormalParameter(port.name, type_str, port.doc, param_option=option))
    attrs = []
    for a in spec.attrs:
        if a.default is None:
            attrs.append(_S.Attribute(a.name, _ATTR_TYPE[a.kind], a.doc, required=True))
        else:
            attrs.append(_S.Attribute(a.name, helper.make_attribute(a.name, a.default), a.doc))
    attrs += [_S.Attribute(name, _S.AttrType.STRING, "TensorRT plugin lookup", required=False)
              for name in opset.PLUGIN_ATTRS]
    schema = _S(spec.op_type, opset.DOMAIN, opset.OPSET_VERSION, spec.doc,
                inputs=params["in"], outputs=params["out"],
                type_constraints=[(k, v, "") for k, v in constraints.items()], attributes=attrs)
    schema.set_type_and_shape_inference_function(lambda ctx: _infer(spec, ctx))
    return schema


def register() -> None:
    """Register every op of the op set once per process (later calls are no-ops)."""
    for spec in opset.OPS:
        try:
            defs.get_schema(spec.op_type, opset.OPSET_VERSION, opset.DOMAIN)
            continue
        except defs.SchemaError:
            pass
        defs.register_schema(build_schema(spec))


# ---- shape inference ------------------------------------------------------------------------

def _attr_values(spec: opset.OpSpec, ctx) -> dict[str, object]:
    values = {a.name: a.default for a in spec.attrs}
    for a in spec.attrs:
        proto = ctx.get_attribute(a.name)
        if proto is not None:
            values[a.name] = helper.get_attribute_value(proto)
    return values


def _eval_dim(expr: str, attrs: dict[str, object]) -> int | None:
    """'2*intermediate_size', 'hidden_size/32', '16' -> int; None if a term is not an int attr."""
    tokens = re.split(r"([*/])", expr)
    value: int | None = None
    op = "*"
    for tok in tokens:
        if tok in ("*", "/"):
            op = tok
            continue
        term = int(tok) if tok.isdigit() else attrs.get(tok)
        if not isinstance(term, int):
            return None
        value = term if value is None else (value * term if op == "*" else value // term)
    return value


def _dims(t: onnx.TypeProto) -> list[onnx.TensorShapeProto.Dimension] | None:
    return list(t.tensor_type.shape.dim) if t.tensor_type.HasField("shape") else None


def _bind_inputs(spec, ctx, attrs) -> dict[str, object]:
    """Symbol -> dimension from the inputs' shapes; checks attribute-computed dims."""
    bound: dict[str, object] = {}
    for i, port in enumerate(spec.inputs):
        if i >= ctx.get_num_inputs() or not ctx.has_input(i):
            continue
        dims = _dims(ctx.get_input_type(i))
        if dims is None:
            continue
        names = list(port.shape)
        if names and names[0] == "*":
            lead = len(dims) - (len(names) - 1)
            if lead < 0:
                raise ShapeError(f"{spec.op_type}: input {port.name!r} has rank {len(dims)}, "
                                 f"needs at least {len(names) - 1}")
            bound.setdefault("*", dims[:lead])
            names, dims = names[1:], dims[lead:]
        elif len(dims) != len(names):
            raise ShapeError(f"{spec.op_type}: input {port.name!r} has rank {len(dims)}, "
                             f"expected {len(names)} {tuple(port.shape)}")
        for name, dim in zip(names, dims):
            want = _eval_dim(name, attrs)
            if want is not None:
                if dim.HasField("dim_value") and dim.dim_value != want:
                    raise ShapeError(f"{spec.op_type}: input {port.name!r} dim {name!r} is "
                                     f"{dim.dim_value}, attributes say {want}")
            elif name not in bound or not (bound[name].HasField("dim_value")):
                bound[name] = dim
    return bound


def _infer(spec: opset.OpSpec, ctx) -> None:
    attrs = _attr_values(spec, ctx)
    act = next((ctx.get_input_type(i).tensor_type.elem_type for i, p in enumerate(spec.inputs)
                if p.dtype == "T" and ctx.has_input(i)), None)
    bound = _bind_inputs(spec, ctx, attrs)
    for o, port in enumerate(spec.outputs):
        if o >= ctx.get_num_outputs():
            break
        elem = act if port.dtype == "T" else _TENSOR_TYPE[port.dtype]
        out = onnx.TypeProto()
        out.tensor_type.elem_type = elem
        shape = out.tensor_type.shape
        known = True
        for name in port.shape:
            if name == "*":
                if "*" not in bound:
                    known = False
                    break
                for d in bound["*"]:
                    shape.dim.add().CopyFrom(d)
                continue
            value = _eval_dim(name, attrs)
            if value is not None:
                shape.dim.add().dim_value = value
            elif name in bound:
                shape.dim.add().CopyFrom(bound[name])
            else:
                shape.dim.add().dim_param = name
        if not known:
            out.tensor_type.ClearField("shape")
        ctx.set_output_type(o, out)
