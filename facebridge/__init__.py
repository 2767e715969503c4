"""facebridge: embed faces with ONNX recognizers and carry templates between their embedding spaces."""

__version__ = "0.1.0"
