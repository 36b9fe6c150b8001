"""Importers: transformers from ONNX (and torch, through `gimletc.importers.tiny.export_onnx` / torch.onnx.export)
mapped to layers, attention and FFN, with their architecture as a `gimletc.models.Model`."""

from gimletc.importers.onnx_import import ImportedModel, KVBinding, ModelImportError, architecture, load_onnx

__all__ = ["ImportedModel", "KVBinding", "ModelImportError", "architecture", "load_onnx"]
