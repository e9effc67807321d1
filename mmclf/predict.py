"""``python -m mmclf.predict RUN IMAGE...``: a finished run classifies images (mmclf/deploy/predict.py)."""
from mmclf.deploy.predict import main

if __name__ == "__main__":
    main()
