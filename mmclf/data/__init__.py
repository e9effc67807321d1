"""The data a run trains on: preparing each dataset under ``data.root`` (sources: mmcls's CIFAR-10,
the generated digits and synthetic sets, your own folders), CIFAR's on-disk format (cifar_format),
folders of images and annotation lists (image_folder), the size and view they are stored at (views),
their decoded cache (image_cache), the held-out validation split (splits), the datasets mmcls's runner
reads (datasets) and each sample's augmentation seed (sample_seeds). Imports mmclf.run and mmclf.errors
only."""
