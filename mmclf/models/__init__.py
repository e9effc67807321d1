"""The model a run trains: mmcls's zoo (zoo: every classifier and its pretrained weights), fetching and
checking those weights (pretrained), and the bridge from the Hydra config to the mmcv config mmcls's
runner reads (config). Imports mmclf.data, mmclf.run and mmclf.errors only."""
