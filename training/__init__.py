"""Training pipeline (TensorFlow/Keras): data, augmentation, model, train, evaluate."""
