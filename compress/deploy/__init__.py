"""Deployment: the MatMul inference form, ONNX export and runtimes, int8 quantization, latency and FLOPs."""
