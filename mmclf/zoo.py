"""``python -m mmclf.zoo``: the models of mmcls's zoo (mmclf/models/zoo.py), where users have always found them."""
from mmclf.models.zoo import main

if __name__ == "__main__":
    main()
