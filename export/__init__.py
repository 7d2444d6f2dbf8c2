"""Export a trained run to the shipped format: models/<name>.tflite + .json (+ head, card)."""
