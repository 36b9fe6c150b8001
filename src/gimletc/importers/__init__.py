"""Front ends: agents from LangGraph (`gimletc.importers.langgraph`), tiny transformers from torch
(`gimletc.importers.tiny`), and ONNX models mapped to layers, attention and FFN (their reading lives in
`gimletc.models.onnx`, since the model catalog resolves `.onnx` paths through it)."""

from gimletc.models.onnx import ImportedModel, KVBinding, ModelImportError, architecture, load_onnx

__all__ = ["ImportedModel", "KVBinding", "ModelImportError", "architecture", "load_onnx"]
