"""Layer maps, freeze plans and per-group learning rates."""
