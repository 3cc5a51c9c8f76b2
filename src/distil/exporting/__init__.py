"""Exported models: the ONNX graph of a Hugging Face model (its inputs, the parity check, running it)."""
