"""The TensorFlow/Keras side: tf.data datasets, Keras callbacks (epochs, resumption, metrics), fit in the background."""
