"""Benchmarks beside the models: ``unet_baseline`` (MONAI U-Net, an optional extra) is imported
by its module path, so that importing the package never needs MONAI."""
