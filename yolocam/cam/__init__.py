"""The CAM engine: capture, replay strategies (batched, loop, windows, head crops), the methods
that weight activations by gradients, layer fusion and the projection to the original image."""
