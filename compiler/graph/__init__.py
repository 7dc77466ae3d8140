"""Canonical graph builders: checkpoint -> ONNX graph in our op set (target agnostic).

`ir` holds the tiny graph container (nodes + lazily produced initializers), `onnx_io` turns it
into an ONNX file with external data written tensor by tensor, and one module per layer kind
(`rope`, `embedding`, `norm`, `linear`, `attention`, `moe`, `lm_head`) builds its nodes;
`model.build_model(ckpt)` assembles the whole decoder.
"""
