"""Images: class folders or a table of paths, the backbone's own preprocessing, augmentation and mixing."""

from __future__ import annotations

from lobell.modalities.base import own_generator, target_dtype


class ImageModality:
    name = "image"
    find_unused_parameters = False

    def input_column(self, data) -> str:
        return data.image_column

    def reader(self, data):
        from lobell.data.image import ImageReader

        return ImageReader(skip_bad=data.skip_bad_images)

    def build_adapter(self, cfg, problem: str, labels, weights: bool):
        from lobell.models.vision import VisionAdapter
        from lobell.problems import make_problem

        head = cfg.head.model_dump() if cfg.head is not None else None
        return VisionAdapter.from_pretrained(cfg.model, make_problem(problem, labels).num_outputs,
                                             weights=cfg.model_weights, head=head, image_size=cfg.data.image_size,
                                             load_weights=weights)

    def load_adapter(self, model_dir):
        from lobell.models.vision import VisionAdapter

        return VisionAdapter.load(model_dir)

    def dataset(self, data, adapter, split, max_length: int | None, reporter):
        from lobell.data.image import ImageDataset

        return ImageDataset(split.inputs, split.targets, adapter.preprocessing.eval_transform())

    def loader(self, cfg, adapter, dataset, train: bool, batch_size: int):
        """Training: augmented, reshuffled each epoch, optionally mixed; evaluation: in order, as the model expects."""
        import torch
        from torch.utils.data import DataLoader

        from lobell.data.image import ImageCollator, MixBatches, ShuffledBatches

        collate = ImageCollator(target_dtype(dataset.targets))
        workers = {"num_workers": cfg.data.num_workers, "persistent_workers": cfg.data.num_workers > 0,
                   "pin_memory": torch.cuda.is_available(), "generator": own_generator()}
        if not train:
            return DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate, **workers)
        mix = cfg.mixup
        if mix.mixup_alpha > 0 or mix.cutmix_alpha > 0:
            collate = MixBatches(collate, adapter.num_outputs, mix.mixup_alpha, mix.cutmix_alpha, mix.prob,
                                 mix.switch_prob)
        augmented = dataset.with_transform(adapter.preprocessing.train_transform(cfg.augment))
        sampler = ShuffledBatches(len(dataset), batch_size, seed=cfg.seed)
        return DataLoader(augmented, batch_sampler=sampler, collate_fn=collate, **workers)
