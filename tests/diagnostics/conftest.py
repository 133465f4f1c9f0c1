"""The HessianOperator test modules share tiny problems and a dense reference
(``hessian_problems.py``); with ``--import-mode=importlib`` this folder goes on ``sys.path`` so
they can import it."""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
