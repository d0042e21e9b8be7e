"""Per-record transforms that turn decoded inputs into fixed-shape tensors."""
