"""The Keras side for every Keras 3 backend (TensorFlow, JAX, PyTorch): no module here imports TensorFlow."""
