"""ONNX interchange: `export_onnx` writes an inference graph as a standard ONNX
model, `import_onnx` builds a Graph from one.

The `onnx` package (the `onnx` extra) is imported only when a model is
exported or imported, so `import knetflow` does not need it.
"""

from knetflow.onnx.export import DEFAULT_OPSET, ExportError, export_onnx  # noqa: F401
from knetflow.onnx.importer import import_onnx  # noqa: F401
