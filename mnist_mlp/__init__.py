"""mnist-mlp: train, evaluate and use a multilayer perceptron on MNIST, in NumPy."""
