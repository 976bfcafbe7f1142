"""Model adapters: one per source (transformers, timm, torchvision), each with a layer map."""
