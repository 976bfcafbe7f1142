"""Modality specs: how one kind of input is read, batched and modelled (see `base.Modality`)."""
