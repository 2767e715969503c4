"""The image side: model manifest, ONNX runtime, detection, alignment and recognition."""
