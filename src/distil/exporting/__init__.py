"""Exported models: a Hugging Face folder in its teacher's dtype (`hf_model`), and the ONNX graph of a model (its
inputs, the parity check, running it on the CPU: `onnx_model`)."""
