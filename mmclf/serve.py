"""``python -m mmclf.serve RUN``: a finished run's model over Open Inference Protocol v2 (mmclf/deploy/serve.py)."""
from mmclf.deploy.serve import main

if __name__ == "__main__":
    main()
