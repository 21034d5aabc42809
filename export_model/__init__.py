"""Exports all-MiniLM-L6-v2 to an int8 ONNX model folder, gated on parity with the FP32 reference."""
