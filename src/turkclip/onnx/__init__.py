"""ONNX: a turkclip model exported for onnxruntime, and the torch-free runtime that searches with it.

- `export`: `turkclip export-onnx` (torch + onnx): the image tower and the whole text side of either road as two
  ONNX graphs, their tokenizer and a manifest; optionally int8 weights.
- `manifest`: the manifest format, read back with checks (no torch).
- `runtime`: `OnnxEncoder`, the search `Encoder` on onnxruntime + tokenizers + numpy + Pillow (no torch).

Not to be confused with the `onnx` package itself, which `export` imports (absolute imports reach it).
"""
